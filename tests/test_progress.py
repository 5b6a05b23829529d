"""Progress of large transfers where people watch (a terminal, a notebook, a callable) only.

The bar and the silences are checked in separate processes (a pty, a pipe,
a process pool inside a pty, a real Jupyter kernel) that load a 256 MiB
value through a relay adding 25 ms each way, so that the transfer outlasts
the bar's delay without any setting made for the test.  Each one prints how
long the load took, which shows the bar had time to appear.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import textwrap
import time

import pytest
from fleche.call import Call
from fleche.digest import digest
from support.kernel import kernel, printed, run_cell
from support.slow import slow_host, store
from support.terminal import python_in_pty

from fleche_ssh.errors import ConfigError
from fleche_ssh.progress import DELAY, INTERVAL, LARGE, resolve_progress

pytestmark = pytest.mark.timeout(240)

SIZE = 256 << 20


@pytest.fixture
def stored(make) -> str:
    """The key of a 256 MiB value in the remote cache, saved over the direct link."""
    return store(make, b"\x01" * SIZE)


@pytest.fixture
def slow(client_home):
    with slow_host(client_home) as alias:
        yield alias


def load_script(host: str, remote_dir, python: str, key: str, *, in_pool: bool = False) -> str:
    """A child Python that loads *key* through *host*, in this process or a pool worker."""
    return textwrap.dedent(
        f"""
        import time
        from concurrent.futures import ProcessPoolExecutor
        from fleche_ssh import ParamikoCache

        def load(cache):
            cache.contains("0" * 64)
            started = time.monotonic()
            value = cache.load_value({key!r})
            return time.monotonic() - started, len(value)

        cache = ParamikoCache(host={host!r}, python={python!r}, workdir={str(remote_dir)!r},
                              prompt="none")
        if {in_pool!r}:
            with ProcessPoolExecutor(1) as pool:
                took, size = pool.submit(load, cache).result()
        else:
            took, size = load(cache)
        print(f"TOOK={{took:.2f}} SIZE={{size}} END", flush=True)
        """
    )


def in_pty(script: str, timeout: float = 120) -> str:
    """Run *script* with a pty as its stdin, stdout and stderr; everything it wrote."""
    out = b""
    deadline = time.monotonic() + timeout
    with python_in_pty(script) as child:
        while b" END" not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the child did not finish within {timeout} s: {out!r}")
            ready, _, _ = select.select([child.fd], [], [], left)
            try:
                chunk = os.read(child.fd, 65536) if ready else b""
            except OSError:
                break
            if ready and not chunk:
                break
            out += chunk
    assert child.exit_code == 0, out
    return out.decode("utf-8", "replace")


def took(output: str) -> float:
    """The load's duration the child printed, after checking it loaded the whole value."""
    assert f"SIZE={SIZE}" in output, output
    return float(output.split("TOOK=")[1].split()[0])


# -- a callable ---------------------------------------------------------------------


def test_a_callable_sees_each_large_transfer_grow_to_its_total(make, caplog):
    caplog.set_level(logging.INFO, logger="fleche_ssh")
    reports: list[tuple[str, int, int]] = []
    cache = make(progress=lambda *report: reports.append(report))
    value = b"\x03" * (64 << 20)
    started = time.monotonic()
    cache.save(Call(name="big", arguments={}, result=value))
    loaded = cache.load_value(digest(value))
    elapsed = time.monotonic() - started
    assert loaded == value
    for direction in ("sent", "received"):
        mine = [r for r in reports if r[0] == direction]
        assert mine, reports
        totals = {total for _, _, total in mine}
        assert len(totals) == 1 and totals.pop() > len(value)  # the frame: header, pickle
        done = [d for _, d, _ in mine]
        assert done == sorted(done) and done[-1] == mine[-1][2]
        assert all(type(d) is int for d in done)
    # Ten a second at most, and the last of each transfer.
    assert len(reports) <= 2 * (elapsed / INTERVAL + 1)
    ends = [r.getMessage() for r in caplog.records if " MiB in " in r.getMessage()]
    assert len(ends) == 2 and ends[0].startswith("testhost sent 64.0 MiB in "), ends
    assert ends[1].startswith("testhost received 64.0 MiB in ") and "MiB/s" in ends[1]


def test_small_calls_report_nothing(make):
    reports: list[tuple[str, int, int]] = []
    cache = make(progress=lambda *report: reports.append(report))
    value = b"\x04" * (LARGE // 2)
    cache.save(Call(name="small", arguments={}, result=value))
    assert cache.load_value(digest(value)) == value
    assert reports == []


def report(direction: str, done: int, total: int) -> None:
    """A progress callable with a name."""


def test_a_callable_shows_as_its_name_in_the_config(make):
    assert make(progress=report).config()["progress"] == f"{__name__}:report"
    assert "progress" not in make().config()


def test_progress_names_a_function_or_a_builtin():
    assert resolve_progress("os.path:join") is os.path.join
    assert callable(resolve_progress("auto")) and callable(resolve_progress("none"))
    with pytest.raises(ConfigError, match="progress = 'bar': expected 'auto', 'none' or"):
        resolve_progress("bar")


# -- auto: where someone watches, and nowhere else -----------------------------------------


def test_a_terminal_shows_the_bar_up_to_100_percent(stored, slow, remote_dir, remote_python):
    output = in_pty(load_script(slow, remote_dir, remote_python, stored))
    assert took(output) > DELAY
    bar = output[: output.index("TOOK=")]
    assert f"{slow} received" in bar and "100%" in bar, bar
    assert "B/s" in bar, bar
    assert bar.count("\r") <= 1 + 10 * (took(output) + 1), bar  # redrawn at most 10/s


def test_no_bar_when_stderr_is_not_a_terminal(stored, slow, remote_dir, remote_python):
    done = subprocess.run([sys.executable, "-c", load_script(slow, remote_dir, remote_python,
                                                              stored)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert took(done.stdout) > DELAY
    assert done.stderr == ""


def test_no_bar_from_a_pool_worker_on_the_terminal(stored, slow, remote_dir, remote_python):
    output = in_pty(load_script(slow, remote_dir, remote_python, stored, in_pool=True))
    assert took(output) > DELAY
    assert output.startswith("TOOK="), output


# -- a notebook ---------------------------------------------------------------------------


def test_a_notebook_shows_the_bar_in_the_cell(stored, slow, remote_dir, remote_python):
    with kernel() as (_, client):
        cell = load_script(slow, remote_dir, remote_python, stored)
        messages, reply = run_cell(client, cell)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert took(printed(messages)) > DELAY
        text = printed(messages, "stderr")
        # Without ipywidgets: one text line redrawn in place, and no warning about widgets.
        assert "Warning" not in text and "ipywidgets" not in text, text
        # With ipywidgets: a widget displayed, its labels updated through comm messages.
        for m in messages:
            if m["header"]["msg_type"] == "display_data":
                text += m["content"]["data"].get("text/plain", "")
            elif m["header"]["msg_type"] == "comm_msg":
                value = m["content"]["data"].get("state", {}).get("value")
                text += value.replace("\u2007", " ") if isinstance(value, str) else ""
        assert f"{slow} received" in text and "100%" in text, text
