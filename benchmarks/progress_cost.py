"""What the progress bar costs the client: CPU per MiB of a large load, with and without it.

    python benchmarks/progress_cost.py                       # stderr as it is
    script -qc "python benchmarks/progress_cost.py" /dev/null  # stderr a terminal: bars drawn

Loads one value (256 MiB by default) over loopback from the benchmark's own
sshd, alternating ``progress = "none"``, ``"auto"`` and a callable, several
rounds, and prints the client's CPU time (``time.process_time``: every
thread of this process, the transport's included) per MiB, the median of
the rounds, and each setting's overhead against ``"none"``.  CPU is
steadier than wall time on a shared machine.  Under ``script`` stderr is a
terminal, so ``"auto"`` draws its bar there (the worst case); the figures
are printed on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from fleche.call import Call
from fleche.digest import digest
from harness import bench_world

from fleche_ssh import ParamikoCache


def _count(direction: str, done: int, total: int) -> None:
    """The cheapest callable: what the seam costs, without drawing."""


SETTINGS = {"none": "none", "auto": "auto", "callable": _count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    value = b"\x05" * (args.mib << 20)
    with bench_world([]) as bench:
        caches = {name: ParamikoCache(**bench.cache_kwargs(), progress=setting)
                  for name, setting in SETTINGS.items()}
        caches["none"].save(Call(name="cost", arguments={}, result=value))
        key = digest(value)
        cpu: dict[str, list[float]] = {name: [] for name in caches}
        for cache in caches.values():  # warm: log in, start the server, import tqdm
            cache.load_value(key)
        for _ in range(args.rounds):
            for name, cache in caches.items():
                started = time.process_time()
                assert len(cache.load_value(key)) == len(value)
                cpu[name].append((time.process_time() - started) / args.mib)
        for cache in caches.values():
            cache.close()
    base = statistics.median(cpu["none"])
    print(f"load {args.mib} MiB x {args.rounds} rounds, stderr a terminal: "
          f"{sys.stderr.isatty()}")
    for name, runs in cpu.items():
        median = statistics.median(runs)
        print(f"{name:>9}: {median * 1e3:6.2f} ms CPU/MiB  ({median / base - 1:+.1%} vs none)"
              f"  rounds: {' '.join(f'{r * 1e3:.2f}' for r in runs)}")


if __name__ == "__main__":
    main()
