"""Download speed and sshd's CPU time against the channel receive window.

    python benchmarks/window.py                    # 2, 4, 8, 16, 64 MiB windows, 128 MiB each
    python benchmarks/window.py --mib 64 --rtt 50  # through a relay adding 50 ms per round trip

Why a channel's receive window starts at
``fleche_ssh.wire.paramiko_process.WINDOW_SIZE`` and grows only where the
window bounds the transfer: each fixed window size downloads ``head -c N
/dev/zero`` over a fresh connection to a loopback sshd (raw channel I/O, no
fleche server, so only the transport is timed) and reports MB/s and the
CPU seconds sshd's session processes used.  A
download cannot run faster than window / round-trip time, which argues for
a large window; sshd, given a large window, queues the remote output and
spends more CPU per byte, which argues against.  Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import time

from harness import HOST, bench_world, relay_host
from measure import MIB, median_of, sshd_cpu

from fleche_ssh import ParamikoCache
from fleche_ssh.ssh.pool import POOL
from fleche_ssh.wire.paramiko_process import ParamikoProcess


def download(cache: ParamikoCache, size: int, window: int,
             listener: int) -> tuple[float, float]:
    """(MB/s, sshd CPU seconds) for one download of *size* bytes on a new connection."""
    POOL.close_all()
    target = cache.target()
    process = ParamikoProcess.open(POOL.session(target, cache.login(target)),
                                   f"sleep 0.2; head -c {size} /dev/zero",
                                   window_size=window, window_cap=window)
    try:
        rest = size - len(process.recv(1))  # timing starts once data flows
        cpu, started = sshd_cpu(listener), time.perf_counter()
        got = process.recv_exactly(memoryview(bytearray(rest)))
        elapsed = time.perf_counter() - started
        assert got == rest, f"the download ended after {got} of {rest} bytes"
        return rest / elapsed / 1e6, sshd_cpu(listener) - cpu
    finally:
        process.close(2.0)
        POOL.close_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=128, help="bytes per download (MiB)")
    parser.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8, 16, 64],
                        help="window sizes to try (MiB)")
    parser.add_argument("--rtt", type=int, default=0, help="added round-trip time (ms)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rtts = [args.rtt] if args.rtt else []
    with bench_world(rtts) as bench:
        cache = ParamikoCache(**bench.cache_kwargs(relay_host(args.rtt) if args.rtt else HOST))
        results: dict[int, list[tuple[float, float]]] = {w: [] for w in args.windows}
        for rep in range(args.reps):
            order = args.windows if rep % 2 == 0 else args.windows[::-1]
            for window in order:
                results[window].append(download(cache, args.mib * MIB, window * MIB,
                                                bench.sshd.process.pid))
    print(f"download of {args.mib} MiB, RTT +{args.rtt} ms, medians of {args.reps}")
    print("window MiB | MB/s | sshd CPU s")
    for window, samples in results.items():
        speed = median_of([s for s, _ in samples])
        cpu = median_of([c for _, c in samples])
        print(f"{window:10d} | {speed:4.0f} | {cpu:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
