"""The first load of a new channel at distance: at 4 MiB, or at the window its login grew to.

    python benchmarks/window_start.py                   # +50 ms, 64 MiB, 5 rounds
    python benchmarks/window_start.py --rtt 100 --reps 3

A channel opens at the largest window a channel of its login grew to
(``Session.grown_window``).  Each round logs in afresh and measures, in
turns, one ``load_value`` each of: stock ``ssh``; fleche-ssh's first cache
on the new login (its channel starts at 4 MiB); then, on that login, whose
window the first cache grew, a second cache whose channel starts at 4 MiB
regardless (the grown window forgotten), and one that starts where the
first cache's grew to.  Prints every round with the load average, since on
a shared machine single samples vary by 2x, then the medians.  The wide-area
rows of ``run.py`` keep one cache per link instead: after its first load,
they measure a channel already grown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import measure
from harness import bench_world, relay_host
from impls import OURS, STOCK
from measure import MIB, median_of

from fleche_ssh.ssh.pool import POOL

WAYS = ("stock", "new login", "second cache at 4 MiB", "second cache inherited")


def one_round(kwargs: dict, size: int, tag: int) -> dict[str, float]:
    """Seconds of each way's load, stock first and then fleche-ssh's on one fresh login."""
    got = {}
    stock = STOCK.make(kwargs)
    got["stock"] = measure.bulk(stock, measure.make_value(size, tag)).load
    stock.close()
    first = OURS.make(kwargs)
    got["new login"] = measure.bulk(first, measure.make_value(size, tag + 1)).load
    session = POOL.get(first.target())
    assert session is not None
    grown = session.grown_window
    for offset, way in enumerate(WAYS[2:], start=2):
        session.grown_window = 0 if way == "second cache at 4 MiB" else grown
        second = OURS.make(kwargs)
        got[way] = measure.bulk(second, measure.make_value(size, tag + offset)).load
        second.close()
    first.close()
    OURS.reset()
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="bytes per load (MiB)")
    parser.add_argument("--rtt", type=int, default=50, help="added round-trip time (ms)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    size, samples = args.mib * MIB, {way: [] for way in WAYS}
    with bench_world([args.rtt]) as bench:
        kwargs = bench.cache_kwargs(relay_host(args.rtt))
        for rep in range(args.reps):
            got = one_round(kwargs, size, int(time.time()) * 10)
            for way, seconds in got.items():
                samples[way].append(seconds)
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"round {rep + 1}: " + ", ".join(
                f"{way} {size / 1e6 / s:.0f} MB/s ({got['stock'] / s:.2f}x)"
                for way, s in got.items()) + f"; load average {load}", flush=True)
    print(f"load_value of {args.mib} MiB, RTT +{args.rtt} ms, medians of {args.reps}")
    stock = median_of(samples["stock"])
    for way, seconds in samples.items():
        print(f"{way:24s} {size / 1e6 / median_of(seconds):5.0f} MB/s "
              f"{stock / median_of(seconds):5.2f}x stock")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
