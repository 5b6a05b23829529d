"""Turn medians into the verdict table, the JSON record and the plot.

Every target is a row of :data:`TARGETS`-style data built by :func:`rows`;
a row without a target is context (for instance the calls per second of
one channel per thread, next to those of one pipelined channel).  Verdicts are reported, never
enforced: the benchmark exits 0 whatever they say.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MB = 1e6
MIB = 1 << 20


@dataclass(frozen=True)
class Target:
    """``value <op> threshold``, shown as ``text``; ``on`` says which value is compared."""

    text: str
    compare: Callable[[float, float], bool]
    threshold: float
    on: str = "ratio"  # or "ours": an absolute bound on our own figure

    def check(self, row: Row) -> bool | None:
        value = row.ratio if self.on == "ratio" else row.ours
        return None if value is None else self.compare(value, self.threshold)


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str
    stock: float | None
    ours: float | None
    ratio: float | None
    target: str = ""
    passed: bool | None = None


#: Client CPU a small call may cost fleche-ssh, in µs: Python's share of the work
#: that stock's ``ssh`` child does in C.
CPU_PER_CALL_US = 60


def at_most(x: float) -> Target:
    return Target(f"<= {x:g}x", operator.le, x)


def at_least(x: float) -> Target:
    return Target(f">= {x:g}x", operator.ge, x)


def _row(metric: str, unit: str, stock: float | None, ours: float | None,
         target: Target | None = None, ratio: float | None = None) -> Row:
    if ratio is None and stock and ours is not None:
        ratio = ours / stock
    row = Row(metric, unit, stock, ours, ratio)
    if target is None:
        return row
    return Row(metric, unit, stock, ours, ratio, target.text, target.check(row))


def spread(per_mib: dict[int, float]) -> float:
    """Slowest over fastest time per MiB across sizes: 1.0 means perfectly linear."""
    return max(per_mib.values()) / min(per_mib.values())


def rows(med: dict[str, Any], plan: Any) -> list[Row]:
    """The table, from the medians ``run.py`` collected (see its ``medians`` layout)."""
    out = [
        _row("client import (fresh interpreter)", "s", *med["import"]),
        _row("first answer (construct + info)", "s", *med["first_answer"], at_most(0.9)),
        _row(f"small round trip ({plan.round_trip_calls} x contains)", "us/call",
             *(s * 1e6 for s in med["round_trip"]), at_most(1.0)),
        _row("client CPU per small call (the client process, not its ssh child)", "us/call",
             *(s * 1e6 for s in med["round_trip_cpu"]),
             Target(f"<= {CPU_PER_CALL_US} us (ours)", operator.le, CPU_PER_CALL_US, "ours")),
    ]
    for op in ("save", "load"):
        for mib in plan.bulk_mib:
            stock, ours = (med["bulk"][impl][op][mib] for impl in ("stock", "fleche-ssh"))
            out.append(_row(f"bulk {op}_value {mib} MiB", "MB/s",
                            mib * MIB / MB / stock, mib * MIB / MB / ours, at_least(1.3)))
    out.append(_row(f"peak memory loading {plan.memory_mib} MiB (peak RSS growth)",
                    "x value", *med["memory"], Target("<= 2.1x value", operator.le, 2.1, "ours")))
    sizes = ", ".join(str(m) for m in plan.scaling_mib)
    for op in ("save", "load"):
        stock, ours = (spread({m: med["bulk"][impl][op][m] / m for m in plan.scaling_mib})
                       for impl in ("stock", "fleche-ssh"))
        out.append(_row(f"time/MiB spread, {op} {sizes} MiB (max/min)", "x", stock, ours,
                        Target("<= 1.5 (ours)", operator.le, 1.5, "ours")))
    for rtt in plan.rtts_ms:
        out += concurrency_rows(med["concurrency"][rtt], rtt, plan.threads)
        most = max(plan.threads)
        # The stock cache runs one remote server; so must the pipelined channel.
        out.append(_row(f"remote servers for {most} threads on 1 channel, RTT +{rtt} ms",
                        "processes", 1, med["servers"][f"{rtt}/{most}/1"],
                        Target("<= 1 (ours)", operator.le, 1, "ours")))
    out += wide_area_rows(med, plan)
    master = med["master"]
    mib = plan.bulk_mib[0]
    out += [
        _row("through an OpenSSH master: first answer", "s", *master["first_answer"],
             at_most(1.0)),
        _row(f"through an OpenSSH master: small round trip ({plan.round_trip_calls} x contains)",
             "us/call", *(s * 1e6 for s in master["round_trip"]), at_most(1.05)),
        *(_row(f"through an OpenSSH master: {op}_value {mib} MiB", "MB/s",
               *(mib * MIB / MB / s for s in master[op]), at_least(0.95))
          for op in ("save", "load")),
    ]
    return out + shared_rows(med, plan)


#: Our second process's channel is open within this many milliseconds of its call.
CHANNEL_OPEN_MS = 50


def shared_rows(med: dict[str, Any], plan: Any) -> list[Row]:
    """A login shared between processes: the rows of ``run.py --only shared``.

    In the first three rows "stock" is this process's own login and
    "fleche-ssh" a second process riding it; in the workers' row, workers
    with their own logins and workers through one.  The second-process rows
    put a new process's first call next to stock's, without a master (ours
    riding a ``control_persist`` login) and through a live OpenSSH master.
    """
    shared, mib = med["shared"], plan.bulk_mib[0]
    workers = plan.at_once_workers
    out = [
        _row(f"shared login vs own: small round trip ({plan.round_trip_calls} x contains)",
             "us/call", *(s * 1e6 for s in shared["round_trip"]), at_most(1.15)),
        *(_row(f"shared login vs own: {op}_value {mib} MiB", "MB/s",
               *(mib * MIB / MB / s for s in shared[op]), at_least(0.9))
          for op in ("save", "load")),
        _row(f"{workers} workers loading {plan.at_once_mib} MiB each at once, total: "
             f"one shared login vs own logins", "MB/s", *med["at_once"], at_least(0.8)),
    ]
    second = med["second"]
    opened = Target(f"<= {CHANNEL_OPEN_MS} ms (ours)", operator.le, CHANNEL_OPEN_MS, "ours")
    for ours, stock, how in (("kept", "stock", "login kept (control_persist)"),
                             ("master", "stock-master", "through an OpenSSH master")):
        out += [
            _row(f"second process, {how}: call to channel open", "ms",
                 second["channel_open"][stock] * 1e3, second["channel_open"][ours] * 1e3,
                 opened),
            _row(f"second process, {how}: first answer (construct + info)", "s",
                 second["first_answer"][stock], second["first_answer"][ours]),
            _row(f"second process, {how}: first answer after channel open", "s",
                 second["after_open"][stock], second["after_open"][ours], at_most(1.1)),
        ]
    return out


#: Calls per second of 8 threads on one channel (pipelined), as a multiple of stock's, at +50 ms.
PIPELINED = {(8, 50): at_least(6)}


def concurrency_rows(per: dict[str, float], rtt: int, threads: tuple[int, ...]) -> list[Row]:
    """Per thread count: ours on 1 channel (pipelined) and on one per thread, each next to stock.

    The stock cache serialises its threads' calls on its one ``ssh``; the
    ratio says how many times its calls per second the same threads get.
    """
    out = []
    for n in threads:
        stock = per[f"stock/{n}"]
        out.append(_row(f"{n} thread(s) contains, RTT +{rtt} ms, 1 channel (pipelined)",
                        "ops/s", stock, per[f"fleche-ssh/{n}/1"], PIPELINED.get((n, rtt))))
        if n > 1:
            out.append(_row(f"{n} thread(s) contains, RTT +{rtt} ms, {n} channels", "ops/s",
                            stock, per[f"fleche-ssh/{n}/{n}"]))
    return out


#: Load targets at distance: ratio to stock by added round trip (ms).
WAN_LOAD_TARGETS = {50: 2.5, 100: 3.0}


def _rate(mib: int, seconds: float) -> float:
    return mib * MIB / MB / seconds


def _cpu_per_mb(mib: int, cpu: float) -> float:
    """sshd CPU milliseconds per MB moved."""
    return cpu * 1000 / (mib * MIB / MB)


def wide_area_rows(med: dict[str, Any], plan: Any) -> list[Row]:
    """Save and load through each relay, the capped link, and sshd's CPU per byte."""
    out = []
    impls = ("stock", "fleche-ssh")
    for rtt in plan.wan_rtts_ms:
        per = med["wan"][f"+{rtt} ms"]
        for op in ("save", "load"):
            for mib in plan.wan_mib:
                target = WAN_LOAD_TARGETS.get(rtt) if op == "load" else None
                out.append(_row(f"{op}_value {mib} MiB, RTT +{rtt} ms", "MB/s",
                                *(_rate(mib, per[impl][op][mib]) for impl in impls),
                                None if target is None else at_least(target)))
    rtt, mbit = plan.capped
    per, mib, link = med["wan"][f"{mbit} Mbit/s + {rtt} ms"], plan.capped_mib, mbit / 8
    for op in ("save", "load"):
        target = (Target(f">= {0.9 * link:.3g} MB/s (0.9x link)", operator.ge, 0.9 * link,
                         "ours") if op == "load" else None)
        out.append(_row(f"{op}_value {mib} MiB, {mbit} Mbit/s + {rtt} ms", "MB/s",
                        *(_rate(mib, per[impl][op][mib]) for impl in impls), target))
    mib = max(plan.scaling_mib)
    out.append(_row(f"sshd CPU per MB, load_value {mib} MiB, loopback", "ms/MB",
                    *(_cpu_per_mb(mib, med["bulk"][impl]["sshd_cpu"][mib]) for impl in impls)))
    mib = max(plan.wan_mib)
    for rtt in plan.wan_rtts_ms:
        per = med["wan"][f"+{rtt} ms"]
        out.append(_row(f"sshd CPU per MB, load_value {mib} MiB, RTT +{rtt} ms", "ms/MB",
                        *(_cpu_per_mb(mib, per[impl]["sshd_cpu"][mib]) for impl in impls)))
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


HEADER = ("metric", "unit", "stock", "fleche-ssh", "ratio", "target", "pass/fail")


def table(all_rows: list[Row]) -> str:
    """A plain-text table, one row per metric."""
    cells = [HEADER] + [
        (r.metric, r.unit, _fmt(r.stock), _fmt(r.ours),
         "-" if r.ratio is None else f"{r.ratio:.2f}x", r.target or "-",
         {True: "pass", False: "FAIL", None: "-"}[r.passed])
        for r in all_rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, record: dict[str, Any], all_rows: list[Row]) -> None:
    path.write_text(json.dumps({**record, "table": [asdict(r) for r in all_rows]},
                               indent=2, default=str) + "\n")


def write_plot(path: Path, med: dict[str, Any], plan: Any) -> bool:
    """Throughput vs value size and ops/s vs threads; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for impl, style in (("stock", "--"), ("fleche-ssh", "-")):
        for op, marker in (("save", "o"), ("load", "s")):
            sizes = plan.scaling_mib
            mbs = [m * MIB / MB / med["bulk"][impl][op][m] for m in sizes]
            left.plot(sizes, mbs, style, marker=marker, label=f"{impl} {op}_value")
    left.set(xscale="log", xlabel="value size (MiB)", ylabel="MB/s",
             title="Bulk throughput vs value size")
    left.set_xticks(plan.scaling_mib, [str(m) for m in plan.scaling_mib])
    left.legend()
    for rtt in plan.rtts_ms:
        per = med["concurrency"][rtt]
        line = right.plot(plan.threads, [per[f"fleche-ssh/{n}/1"] for n in plan.threads], "-o",
                          label=f"fleche-ssh, 1 channel, RTT +{rtt} ms")[0]
        many = [n for n in plan.threads if n > 1]
        right.plot(many, [per[f"fleche-ssh/{n}/{n}"] for n in many], ":s",
                   color=line.get_color(), label=f"fleche-ssh, 1 channel per thread, +{rtt} ms")
        right.plot(plan.threads, [per[f"stock/{n}"] for n in plan.threads], "--",
                   color=line.get_color(), label=f"stock, RTT +{rtt} ms")
    right.set(xlabel="threads", ylabel="contains ops/s", title="Threads through one cache")
    right.set_xticks(plan.threads)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_wan_plot(path: Path, med: dict[str, Any], plan: Any) -> bool:
    """Throughput against added round-trip time, both clients; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    mib = max(plan.wan_mib)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for impl, style in (("stock", "--"), ("fleche-ssh", "-")):
        for op, marker in (("save", "o"), ("load", "s")):
            rtts, rates = [], []
            if mib in med["bulk"][impl][op]:
                rtts.append(0)
                rates.append(_rate(mib, med["bulk"][impl][op][mib]))
            for rtt in plan.wan_rtts_ms:
                rtts.append(rtt)
                rates.append(_rate(mib, med["wan"][f"+{rtt} ms"][impl][op][mib]))
            ax.plot(rtts, rates, style, marker=marker, label=f"{impl} {op}_value")
    ax.set(xlabel="added round-trip time (ms; 0 = loopback)", ylabel="MB/s",
           title=f"{mib} MiB values against round-trip time")
    ax.set_xticks([0, *plan.wan_rtts_ms])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
