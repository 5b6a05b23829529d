"""The benchmark runs end to end (``benchmarks/run.py --smoke``); no timing is asserted.

Timings on a shared CI machine say nothing; what is checked is what a user
running the benchmark relies on: it finishes, exits 0, prints the table
with every metric and a verdict column, and writes the JSON it announces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import support as sshd_helpers

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
HEADER = ["metric", "unit", "stock", "fleche-ssh", "ratio", "target", "pass/fail"]
#: One table row per metric the benchmark promises (smoke sizes: 2 MiB bulk, RTT +50 ms for
#: 1 and 8 threads, RTT +10 ms and the capped link at 100 Mbit/s + 10 ms for transfers),
#: and whether it has a target; the others are context for the targeted ones.
#: The rows of a login shared between processes that ``--only shared`` prints too (the three
#: above are the other ones).
SHARED = {
    "2 workers loading 1 MiB each at once, total: one shared login vs own logins": True,
    **{f"second process, {how}: {metric}": targeted
       for how in ("login kept (control_persist)", "through an OpenSSH master")
       for metric, targeted in (("call to channel open", True),
                                ("first answer (construct + info)", False),
                                ("first answer after channel open", True))},
}
METRICS = {
    "client import (fresh interpreter)": False,
    "first answer (construct + info)": True,
    "small round trip (50 x contains)": True,
    "client CPU per small call (the client process, not its ssh child)": True,
    "bulk save_value 2 MiB": True,
    "bulk load_value 2 MiB": True,
    "peak memory loading 2 MiB": True,
    "time/MiB spread, save 1, 2 MiB": True,
    "time/MiB spread, load 1, 2 MiB": True,
    "1 thread(s) contains, RTT +50 ms, 1 channel (pipelined)": False,
    "8 thread(s) contains, RTT +50 ms, 1 channel (pipelined)": True,
    "8 thread(s) contains, RTT +50 ms, 8 channels": False,
    "remote servers for 8 threads on 1 channel, RTT +50 ms": True,
    "save_value 2 MiB, RTT +10 ms": False,
    "load_value 2 MiB, RTT +10 ms": False,
    "save_value 2 MiB, 100 Mbit/s + 10 ms": False,
    "load_value 2 MiB, 100 Mbit/s + 10 ms": True,
    "sshd CPU per MB, load_value 2 MiB, loopback": False,
    "sshd CPU per MB, load_value 2 MiB, RTT +10 ms": False,
    "through an OpenSSH master: first answer": True,
    "through an OpenSSH master: small round trip (50 x contains)": True,
    "through an OpenSSH master: save_value 2 MiB": True,
    "through an OpenSSH master: load_value 2 MiB": True,
    "shared login vs own: small round trip (50 x contains)": True,
    "shared login vs own: save_value 2 MiB": True,
    "shared login vs own: load_value 2 MiB": True,
    **SHARED,
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench-results")
    return _smoke_run(out), out


def _table(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if len(cells) == len(HEADER):
            rows[cells[0]] = cells
    return rows


def _smoke_run(out: Path, *options: str) -> subprocess.CompletedProcess:
    missing = sshd_helpers.missing_sshd_tools()
    if missing:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set, so not skipping: the benchmark needs {missing}")
        pytest.skip(f"the benchmark needs Debian package(s) {', '.join(missing)}")
    return subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(out), *options],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )


def _assert_rows(proc: subprocess.CompletedProcess, metrics: dict[str, bool]) -> None:
    """*proc* exited 0 and printed exactly one row per metric, a verdict where it has a target."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _table(proc.stdout)
    assert rows.pop("metric") == HEADER
    assert len(rows) == len(metrics)
    for metric, targeted in metrics.items():
        matching = [cells for name, cells in rows.items() if name.startswith(metric)]
        assert len(matching) == 1, f"no table row for {metric!r} in:\n{proc.stdout}"
        cells = matching[0]
        assert cells[2] != "-" and cells[3] != "-", f"{metric}: a figure is missing"
        if targeted:
            assert cells[5] != "-" and cells[6] in ("pass", "FAIL"), cells
        else:
            assert cells[5] == "-" and cells[6] == "-", cells


def test_smoke_run_completes_and_prints_every_metric(smoke):
    proc, _ = smoke
    _assert_rows(proc, METRICS)


def test_smoke_run_writes_json_with_the_same_table(smoke):
    proc, out = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "smoke.json").read_text())
    assert [row["metric"] for row in record["table"]] == list(_table(proc.stdout))[1:]
    transport = record["environment"]["fleche_ssh_transport"]
    assert transport["cipher_in"] == transport["cipher_out"] == "aes128-gcm@openssh.com"
    assert record["samples"]["first_answer"]["fleche-ssh"]


def test_only_shared_runs_the_shared_login_rows_alone(tmp_path):
    proc = _smoke_run(tmp_path, "--only", "shared")
    shared = {metric: targeted for metric, targeted in METRICS.items()
              if metric.startswith("shared login vs own") or metric in SHARED}
    _assert_rows(proc, shared)
    record = json.loads((tmp_path / "smoke-shared.json").read_text())
    assert [row["metric"] for row in record["table"]] == list(_table(proc.stdout))[1:]
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "smoke.json").exists()
