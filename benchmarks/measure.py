"""One measurement each: the functions time exactly one thing and return seconds or a count.

Repetition, alternation and medians are the caller's business (``run.py``);
everything here is a single sample, so that what is inside the timed
region is visible in one place.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from impls import Impl

#: A call digest no cache holds: ``contains`` answers False after a real lookup.
MISSING_KEY = "f" * 64
MIB = 1 << 20
PROBE = Path(__file__).resolve().parent / "memprobe.py"
SHARE_PROBE = PROBE.with_name("shareprobe.py")
SECOND_PROBE = PROBE.with_name("secondprobe.py")
#: Bound on one memory-probe subprocess (it connects, loads one value, exits).
PROBE_TIMEOUT = 300.0
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def make_value(size: int, tag: int) -> Any:
    """A *size*-byte value (a numpy array if numpy is there), unique per *tag*.

    Unique values make every ``save_value`` really store something, instead
    of finding the digest already on the remote disk.
    """
    try:
        import numpy as np
    except ImportError:
        return tag.to_bytes(8, "big") + bytes(size - 8)
    value = np.zeros(size, dtype=np.uint8)
    value[:8] = np.frombuffer(tag.to_bytes(8, "big"), dtype=np.uint8)
    value[8::4096] = 7  # not all zeros, so no layer can cheat on an empty page
    return value


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bytes):
        return a == b
    import numpy as np

    return isinstance(b, np.ndarray) and a.shape == b.shape and bool(np.array_equal(a, b))


def import_seconds(impl: Impl) -> float:
    """Seconds a fresh interpreter takes to import what building the cache needs."""
    code = (f"import time; t = time.perf_counter(); import {impl.module}; "
            f"print(time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL, check=True)
    return float(proc.stdout.strip())


def first_answer(impl: Impl, kwargs: dict[str, Any]) -> float:
    """Construct a cache and get its ``info()``: connect, authenticate, start the server."""
    started = time.perf_counter()
    cache = impl.make(kwargs)
    cache.info()
    elapsed = time.perf_counter() - started
    cache.close()
    impl.reset()
    return elapsed


#: Batches a run of round trips is timed in; its figure is the median batch's.
BATCHES = 10


def round_trips(cache: Any, calls: int) -> float:
    """Seconds per ``contains`` over *calls* calls in a row on this thread."""
    return round_trips_and_cpu(cache, calls)[0]


def round_trips_and_cpu(cache: Any, calls: int) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds per ``contains``, over *calls* in a row.

    The wall figure is the median of :data:`BATCHES` equal batches' times
    per call.  A burst of work elsewhere on the machine while the calls run
    (the remote server of a process that just exited shutting down, the
    page cache writing back a value just saved) then lands in the batches
    it overlaps, not in the figure; both clients are timed the same way.
    The CPU is ``time.process_time`` over all the calls: every thread of the
    client process (Paramiko's reader included), and not the stock client's
    ``ssh`` child, which does its crypto in C outside it.
    """
    contains = cache.contains
    batch = max(1, calls // BATCHES)
    per_call = []
    cpu = time.process_time()
    for _ in range(BATCHES):
        started = time.perf_counter()
        for _ in range(batch):
            contains(MISSING_KEY)
        per_call.append((time.perf_counter() - started) / batch)
    return median_of(per_call), (time.process_time() - cpu) / (batch * BATCHES)


@dataclass(frozen=True)
class Bulk:
    save: float
    load: float
    digest: str
    #: CPU seconds sshd's session processes spent during the load (when asked for).
    load_sshd_cpu: float | None = None


def bulk(cache: Any, value: Any, sshd_pid: int | None = None) -> Bulk:
    """Seconds to ``save_value`` then ``load_value`` *value*; the loaded copy is checked.

    With *sshd_pid* (the listening sshd), also the CPU its session
    processes spent during the load.
    """
    started = time.perf_counter()
    digest = cache._rpc("save_value", value)
    cpu = None if sshd_pid is None else sshd_cpu(sshd_pid)
    saved = time.perf_counter()
    loaded = cache.load_value(digest)
    done = time.perf_counter()
    if cpu is not None and sshd_pid is not None:
        cpu = sshd_cpu(sshd_pid) - cpu
    if not same_value(value, loaded):
        raise RuntimeError(f"load_value({digest}) returned a different value than was saved")
    return Bulk(save=saved - started, load=done - saved, digest=str(digest), load_sshd_cpu=cpu)


def warm(cache: Any, size: int, tag: int) -> None:
    """Save and load one *size*-byte value on *cache*'s remote server: nothing timed.

    A remote server's first large transfer costs more than its next ones:
    its first ``save_value`` of a numpy array imports numpy there (50-90 ms
    on the 2-core machine), and its first buffers of that size are fresh
    memory to fault in.  A comparison of two clients on servers of unequal
    age then measures the servers: a second process's new channel (a new
    server) against a cache whose server already moved values ran at 0.8x
    on saves, and at 1.04x once both had moved one value of the timed size
    first.  Both sides of such a comparison warm their server this way.
    """
    value = make_value(size, tag)
    if not same_value(value, cache.load_value(cache._rpc("save_value", value))):
        raise RuntimeError("the warm-up value came back different")


def _stat(pid: int) -> tuple[str, int, float]:
    """(command name, parent pid, CPU seconds) of a process, from /proc."""
    name, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
    fields = rest.split()
    return name.split("(", 1)[1], int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def sshd_cpu(listener: int) -> float:
    """CPU seconds used so far by the sshd processes forked for sessions (Linux: /proc).

    Only sshd's own: the remote servers they start are the same Python
    for both clients, and would hide what the SSH side costs.
    """
    stats: dict[int, tuple[str, int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = _stat(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {listener}, True
    while grew:
        kids = {pid for pid, (_, ppid, _) in stats.items() if ppid in tree} - tree
        tree |= kids
        grew = bool(kids)
    return sum(cpu for pid, (name, _, cpu) in stats.items()
               if pid in tree and pid != listener and name.startswith("sshd"))


def ops_per_second(cache: Any, threads: int, seconds: float) -> float:
    """``contains`` calls per second completed by *threads* threads sharing *cache*.

    Every thread first makes one call while all the others do too, which
    opens as many channels as the cache allows; then they all start the
    timed phase together and stop after *seconds*.
    """
    counts = [0] * threads
    errors: list[BaseException] = []
    warm = threading.Barrier(threads + 1)
    go = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work(i: int) -> None:
        try:
            cache.contains(MISSING_KEY)
            warm.wait(60)
            go.wait(60)
            while time.perf_counter() < deadline[0]:
                cache.contains(MISSING_KEY)
                counts[i] += 1
        except BaseException as e:
            errors.append(e)
            warm.abort()
            go.abort()

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    warm.wait(120)
    started = time.perf_counter()
    deadline[0] = started + seconds
    go.wait(60)
    for w in workers:
        w.join(seconds + 60)
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"a worker thread failed: {errors[0]!r}") from errors[0]
    return sum(counts) / elapsed


def peak_memory(impl: Impl, kwargs: dict[str, Any], digest: str, size: int) -> dict[str, float]:
    """Run ``memprobe.py`` in a fresh interpreter: load one value, report its memory growth."""
    argv = [sys.executable, str(PROBE), impl.name, json.dumps(_jsonable(kwargs)), digest,
            str(size)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                          env=os.environ.copy(), stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {impl.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def through_holder(cache: Any, calls: int, size: int, tag: int) -> dict[str, float]:
    """Run ``shareprobe.py`` on a pickled *cache*: its calls go through this process's login."""
    import base64
    import pickle

    proc = subprocess.run([sys.executable, str(SHARE_PROBE), str(calls), str(size), str(tag)],
                          input=base64.b64encode(pickle.dumps(cache)).decode(),
                          capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                          env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"shared-login probe failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load_at_once(cache: Any, digest: str, ready: Any, done: Any) -> None:
    """A worker of :func:`loads_at_once`: open its channel, wait for the others, load once."""
    cache.info()
    ready.wait(PROBE_TIMEOUT)
    started = time.perf_counter()
    got = cache.load_value(digest)
    finished = time.perf_counter()
    cache.close()
    done.put((started, finished, len(memoryview(got).cast("B"))))


def loads_at_once(cache: Any, digests: list[str], size: int) -> float:
    """Total MB/s of one worker process per digest, each loading its *size*-byte value at once.

    The workers are spawned (a fresh interpreter, as on macOS and Windows,
    and no ``fork()`` of this threaded process) and get *cache* pickled:
    with this process's offer of its login when it makes one, else each
    logs in itself.  Each opens its channel first; the loads start together
    behind a barrier, and the time is from the first start to the last end.
    """
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    ready, done = spawn.Barrier(len(digests)), spawn.Queue()
    workers = [spawn.Process(target=_load_at_once, args=(cache, digest, ready, done))
               for digest in digests]
    for worker in workers:
        worker.start()
    try:
        spans = [done.get(timeout=PROBE_TIMEOUT) for _ in workers]
    finally:
        for worker in workers:
            worker.join(PROBE_TIMEOUT)
            if worker.exitcode is None:
                worker.kill()
    if any(moved != size for _, _, moved in spans) or any(w.exitcode for w in workers):
        raise RuntimeError(f"a loading worker failed or loaded the wrong size: {spans}")
    took = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    return len(digests) * size / 1e6 / took


def second_process(impl: Impl, kwargs: dict[str, Any]) -> dict[str, float]:
    """Run ``secondprobe.py``: a fresh process's call, timed to its channel and to its answer."""
    proc = subprocess.run([sys.executable, str(SECOND_PROBE), impl.name,
                           json.dumps(_jsonable(kwargs))], capture_output=True, text=True,
                          timeout=PROBE_TIMEOUT, env=os.environ.copy(),
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"second-process probe for {impl.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def median_of(samples: list[float]) -> float:
    ordered = sorted(samples)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

