"""Client memory while loading one large value, measured in a fresh interpreter.

Usage: ``memprobe.py IMPL KWARGS_JSON DIGEST SIZE`` (run by ``measure.peak_memory``).

The figure is the growth of the process's peak resident set across one
``load_value``: everything the client touched, Python objects, C buffers
and the value itself.  Linux keeps the peak per address space as
``VmHWM`` in ``/proc/self/status`` and resets it on request
(``/proc/self/clear_refs``), so the peak is reset right before the load
and read right after.  (``ru_maxrss`` would not do: Linux carries it over
from the parent across fork and exec, so a child of a big benchmark
process starts at the parent's size.)  Elsewhere the probe falls back to
``tracemalloc``, which sees Python allocations only.

Connecting, the ``info`` handshake and one small warm-up load (which also
imports numpy) happen
before the baseline is taken, so imports and connection buffers are not
counted.  Prints one JSON line.
"""

from __future__ import annotations

import json
import re
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from impls import IMPLS
from measure import MISSING_KEY, make_value

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    if found is None:
        raise OSError(f"no {field} in {STATUS}")
    return int(found.group(1)) * 1024


def start_peak() -> tuple[str, int, Callable[[], int]]:
    """Reset the peak; return (method, baseline bytes, read the peak in bytes)."""
    try:
        CLEAR_REFS.write_text("5")
        return "VmHWM", _status_kib("VmRSS"), lambda: _status_kib("VmHWM")
    except OSError:
        tracemalloc.start()
        return "tracemalloc", 0, lambda: tracemalloc.get_traced_memory()[1]


def main(argv: list[str]) -> int:
    name, kwargs_json, digest, size = argv
    impl = IMPLS[name]
    cache = impl.make(json.loads(kwargs_json))
    try:
        cache.info()
        cache.contains(MISSING_KEY)
        cache.load_value(cache._rpc("save_value", make_value(1 << 16, 0)))
        method, baseline, read_peak = start_peak()
        started = time.perf_counter()
        value = cache.load_value(digest)
        elapsed = time.perf_counter() - started
        peak = read_peak()
        got = getattr(value, "nbytes", None) or len(value)
        if got != int(size):
            raise SystemExit(f"loaded {got} bytes, expected {size}")
    finally:
        cache.close()
        impl.reset()
    print(json.dumps({"method": method, "baseline": baseline, "peak": peak,
                      "growth": peak - baseline,
                      "multiple": (peak - baseline) / int(size), "seconds": elapsed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
