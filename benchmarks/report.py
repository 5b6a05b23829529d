"""Turn medians into the verdict table, the JSON record and the plot.

Every target is a row of :data:`TARGETS`-style data built by :func:`rows`;
a row without a target is context (for instance the 1- and 8-channel
throughput next to the 4-channel one).  Verdicts are reported, never
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
        stock = med["concurrency"][rtt]["stock"]
        per_channel = med["concurrency"][rtt]["fleche-ssh"]
        single = per_channel[1]
        for channels, ops in per_channel.items():
            target = (Target(f">= {0.8 * channels:g}x 1 channel", operator.ge, 0.8 * channels)
                      if channels == 4 else None)
            out.append(_row(
                f"{plan.threads} threads contains, RTT +{rtt} ms, {channels} channel(s)",
                "ops/s", stock, ops, target, ratio=ops / single,
            ))
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
    shared = med["shared"]
    out += [
        _row(f"shared login vs own: small round trip ({plan.round_trip_calls} x contains)",
             "us/call", *(s * 1e6 for s in shared["round_trip"]), at_most(1.15)),
        *(_row(f"shared login vs own: {op}_value {mib} MiB", "MB/s",
               *(mib * MIB / MB / s for s in shared[op]), at_least(0.9))
          for op in ("save", "load")),
    ]
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
    """Throughput vs value size and ops/s vs channels; False when matplotlib is missing."""
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
        per_channel = med["concurrency"][rtt]["fleche-ssh"]
        line = right.plot(list(per_channel), list(per_channel.values()), "-o",
                          label=f"fleche-ssh, RTT +{rtt} ms")[0]
        right.axhline(med["concurrency"][rtt]["stock"], linestyle="--", color=line.get_color(),
                      label=f"stock, RTT +{rtt} ms")
    right.set(xlabel="channels", ylabel="contains ops/s",
              title=f"{plan.threads} threads through one cache")
    right.set_xticks(plan.channels)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
