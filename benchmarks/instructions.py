"""Instructions per small call, counted by callgrind: a figure the machine's load does not move.

    python benchmarks/instructions.py               # 1,000 contains per client
    python benchmarks/instructions.py --calls 3000

``time.process_time`` per call (``run.py``'s "client CPU per small call")
swings by a factor of two on a shared machine, since a stolen core or a
busy neighbour lands in every sample.  Valgrind's callgrind counts the
instructions the client process executes instead: the same code, inputs
and environment give the same count whatever else the machine does.  What
it leaves out is the kernel's share of each call (the system calls and
the wake-up), which ``process_time`` includes, and stock's ``ssh`` child,
which is a process of its own: the count is of each client's own process.

Each client runs in a child under ``valgrind --tool=callgrind`` with
instrumentation off until the measured loop (the imports, the login and
300 warm-up calls run at full speed), then switched on with
``callgrind_control`` for ``--calls`` calls and dumped.  Needs valgrind
(Debian's ``valgrind`` package) besides what ``run.py`` needs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Calls before the count starts: caches warm, the window's first samples taken.
WARM_UP = 300
#: Bound on one client's run under valgrind (its start-up is not instrumented).
CHILD_TIMEOUT = 600


def count_child(impl_name: str, kwargs: dict[str, Any], calls: int) -> None:
    """In the child under valgrind: warm up, then count *calls* ``contains`` and dump."""
    import measure
    from impls import OURS, STOCK

    impl = {STOCK.name: STOCK, OURS.name: OURS}[impl_name]
    cache = impl.make(kwargs)
    cache.info()
    for _ in range(WARM_UP):
        cache.contains(measure.MISSING_KEY)
    me = str(os.getpid())
    subprocess.run(["callgrind_control", "--instr=on", me], check=True, capture_output=True)
    for _ in range(calls):
        cache.contains(measure.MISSING_KEY)
    subprocess.run(["callgrind_control", "--dump", me], check=True, capture_output=True)
    cache.close()


def count(impl_name: str, kwargs: dict[str, Any], calls: int, out: Path) -> float:
    """Instructions per ``contains`` of *impl_name*'s client process."""
    prefix = out / impl_name
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={prefix}.out", sys.executable, __file__, "--child", impl_name,
         json.dumps(kwargs), str(calls)],
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, env=os.environ.copy(),
        stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl_name} under callgrind failed:\n{proc.stderr[-3000:]}")
    dumps = sorted(out.glob(f"{impl_name}.out.*"))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {impl_name}:\n{proc.stderr[-3000:]}")
    match = re.search(r"^summary: (\d+)", dumps[0].read_text(errors="replace"), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {dumps[0]}")
    return int(match.group(1)) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "KWARGS", "CALLS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl_name, kwargs, calls = args.child
        count_child(impl_name, json.loads(kwargs), int(calls))
        return
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"needs {' and '.join(missing)}: apt-get install valgrind")
    from harness import bench_world
    from impls import OURS, STOCK
    from measure import _jsonable

    with bench_world([]) as bench, tempfile.TemporaryDirectory() as tmp:
        kwargs = _jsonable(bench.cache_kwargs())
        per_call = {impl.name: count(impl.name, kwargs, args.calls, Path(tmp))
                    for impl in (STOCK, OURS)}
    stock, ours = per_call[STOCK.name], per_call[OURS.name]
    print(f"instructions per contains ({args.calls:,} calls, the client process only)")
    print(f"  {STOCK.name:12s} {stock:10,.0f}")
    print(f"  {OURS.name:12s} {ours:10,.0f}   {ours / stock:.2f}x stock")


if __name__ == "__main__":
    main()
