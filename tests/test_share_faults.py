"""Faults under a background holder (``control_persist``), with real processes and real sshd.

The holder is the real ``python -m fleche_ssh.share.holder`` process that
``control_persist`` starts; this test process is its client.  The holder
reaches sshd through a :class:`~support.relay.DelayRelay`, whose rate cap
keeps a large transfer under way long enough to break it in the middle,
and whose drop and restore stand for a laptop's lost network.

What must hold, whichever end fails: the client's call ends with a typed
:class:`~fleche_ssh.errors.RemoteConnectionError` within a bound (a hang
bound, not a speed target), a write is never sent twice and leaves
nothing stored, a read lost with its connection is answered once more on
a new login, a holder whose login died exits, and the next call logs in
again through a new holder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fleche.digest import digest
from support import procfs
from support.caches import wait_for
from support.sshd import Sshd, _wait_for_banner, start_sshd
from support.tools import SSHD

from fleche_ssh.errors import ConnectionLost, LoginLost, RemoteConnectionError
from fleche_ssh.share import local, persist
from fleche_ssh.share.client import SharedProcess
from fleche_ssh.share.place import OVERRIDE

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("fresh_pool")]

#: Bound on a call that fails, or that logs in again through a new holder: a hang
#: bound (a holder starts, logs in and opens a channel well within it).
HANG = 30.0
#: A link of this many bytes per second between the holder and sshd, and a value
#: that takes seconds to cross it: the fault lands in the middle of the transfer.
RATE = 8e6
LARGE = 32 << 20
#: Keepalives far apart: a drop goes unnoticed until the next call, as after a sleep.
QUIET = 300
RETRY = "retrying it once on a new connection"


def never(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
    raise AssertionError(f"asked {prompts!r}, on a host that needs no answer")


@pytest.fixture
def runtime(monkeypatch) -> Iterator[Path]:
    """A private runtime directory for the holders of one test; every holder ended after."""
    where = Path(tempfile.mkdtemp(prefix="fsf-", dir="/tmp"))
    where.chmod(0o700)
    monkeypatch.setenv(OVERRIDE, str(where))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    yield where
    for name in persist.names():
        persist.request(name, "logout", local.connect)
    wait_for(lambda: not list(where.glob("*.sock")), 10)
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def own_sshd(tmp_path, client_key) -> Iterator[list[Sshd]]:
    """A publickey sshd of this test alone (it gets killed); the list holds its restarts."""
    servers = [start_sshd(tmp_path / "own-sshd", authorized_keys=[client_key.public_line])]
    yield servers
    for server in servers:
        server.stop()
        _kill_tree(server.process.pid)


def holder_pid(cache) -> int:
    """The pid of the background holder serving *cache*'s destination, as it says itself."""
    answer = persist.request(persist.name_for(cache.target()), "logins", local.connect)
    assert answer is not None, "no background holder answers for this destination"
    return int(answer["pid"])


def exited(pid: int) -> bool:
    """Whether *pid* has ended (a zombie waiting for its parent counts as ended)."""
    return procfs.state(pid) in (None, "Z", "X")


def io_counter(pid: int, key: str) -> int:
    count = procfs.io_counter(pid, key)
    assert count is not None, f"process {pid} ended while its I/O was watched"
    return count


def _kill_tree(pid: int) -> None:
    """SIGKILL *pid* and every process under it (sshd's sessions leave its process group)."""
    for victim in [pid, *procfs.descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def kill_sshd(server: Sshd) -> None:
    """sshd dies with all its sessions, as when the server goes down."""
    _kill_tree(server.process.pid)
    server.process.wait(10)


def restart_sshd(server: Sshd) -> Sshd:
    """The same sshd (config, port, host keys, log) started again."""
    with open(server.log_path, "ab") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(server.config_path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=server.workdir)
    restarted = dataclasses.replace(server, process=proc)
    _wait_for_banner(server.port, proc, time.monotonic() + HANG)
    return restarted


def logins(server: Sshd) -> int:
    return server.log_text().count("Accepted publickey")


def remote_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def in_background(operation: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    """*operation* on a thread of its own; what it returned or raised lands in the dict."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = operation()
        except BaseException as e:  # handed to the test to assert on
            outcome["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, outcome


def joined(worker: threading.Thread, outcome: dict[str, object]) -> dict[str, object]:
    worker.join(HANG)
    assert not worker.is_alive(), f"the call was still running {HANG:g} s after the fault"
    return outcome


# -- 1. the holder process killed in the middle of a transfer ------------------------------


def test_a_holder_killed_mid_save_gives_a_typed_error_and_stores_nothing(
        make, sshd, relayed, runtime, remote_dir, caplog):
    relay = relayed(sshd, rate=RATE)
    cache = make(port=relay.port, prompt=never, control_persist="1m")
    server = cache.info()["pid"]
    holder = holder_pid(cache)
    value = os.urandom(LARGE)
    before = remote_files(remote_dir)
    baseline = io_counter(server, "rchar")

    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        worker, outcome = in_background(lambda: cache._rpc("save_value", value))
        assert wait_for(lambda: io_counter(server, "rchar") - baseline >= 1 << 20, HANG)
        assert worker.is_alive()  # killed in the middle, not after
        os.kill(holder, signal.SIGKILL)
        started = time.monotonic()
        outcome = joined(worker, outcome)
    assert time.monotonic() - started < HANG
    assert "value" not in outcome
    error = outcome["error"]
    assert isinstance(error, ConnectionLost), repr(error)
    assert "went away" in str(error) and "'save_value'" in str(error)
    assert not [r for r in caplog.records if RETRY in r.getMessage()]  # never sent twice

    # Nothing partial stored; the next call starts a new holder by itself.
    with pytest.raises(KeyError):
        cache.load_value(digest(value))
    assert not [n for n in remote_files(remote_dir) - before if n.endswith(".tmp")]
    assert holder_pid(cache) != holder and exited(holder)


def test_a_holder_killed_mid_load_is_retried_once_through_a_new_holder(
        make, sshd, relayed, runtime, caplog):
    relay = relayed(sshd, rate=RATE)
    cache = make(port=relay.port, prompt=never, control_persist="1m")
    value = os.urandom(LARGE)
    key = cache._rpc("save_value", value)
    server = cache.info()["pid"]
    holder = holder_pid(cache)
    baseline = io_counter(server, "wchar")

    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        worker, outcome = in_background(lambda: cache.load_value(key))
        assert wait_for(lambda: io_counter(server, "wchar") - baseline >= 1 << 20, HANG)
        assert worker.is_alive()
        os.kill(holder, signal.SIGKILL)
        outcome = joined(worker, outcome)
    assert outcome.get("value") == value, outcome.get("error")
    assert [r.getMessage() for r in caplog.records if RETRY in r.getMessage()] == [
        f"connection to testhost lost during 'load_value'; {RETRY}"]
    assert holder_pid(cache) != holder and exited(holder)


# -- 2. sshd killed under the holder -----------------------------------------------------


def test_sshd_killed_under_the_holder_ends_the_call_and_the_holder_then_logs_in_again(
        make, own_sshd, relayed, runtime, caplog):
    relay = relayed(own_sshd[0], rate=RATE)
    cache = make(port=relay.port, prompt=never, control_persist="1m")
    server = cache.info()["pid"]
    holder = holder_pid(cache)
    before = logins(own_sshd[0])
    value = os.urandom(LARGE)
    baseline = io_counter(server, "rchar")

    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        worker, outcome = in_background(lambda: cache._rpc("save_value", value))
        assert wait_for(lambda: io_counter(server, "rchar") - baseline >= 1 << 20, HANG)
        assert worker.is_alive()
        kill_sshd(own_sshd[0])
        outcome = joined(worker, outcome)
    error = outcome.get("error")
    assert isinstance(error, ConnectionLost), repr(outcome)
    assert "'save_value'" in str(error)
    assert not [r for r in caplog.records if RETRY in r.getMessage()]
    assert wait_for(lambda: exited(holder), HANG)  # its login died: it exits

    # While sshd is down, a call is told so, typed, naming where, within the bound.
    started = time.monotonic()
    with pytest.raises(RemoteConnectionError, match=f"127.0.0.1:{relay.port}"):
        cache.contains("0" * 64)
    assert time.monotonic() - started < HANG

    own_sshd.append(restart_sshd(own_sshd[0]))
    with pytest.raises(KeyError):  # the save cut short stored nothing
        cache.load_value(digest(value))
    assert holder_pid(cache) != holder
    assert logins(own_sshd[-1]) == before + 1  # one new login, by the new holder


def test_a_holder_whose_login_died_tells_its_idle_channels(make, client_home, own_sshd,
                                                          runtime):
    with client_home.known_hosts.open("a") as f:
        f.writelines(line + "\n" for line in own_sshd[0].known_hosts_lines())
    cache = make(port=own_sshd[0].port, prompt=never, control_persist="1m")
    assert cache.contains("0" * 64) is False
    holder = holder_pid(cache)
    (process,) = cache._conn.idle_processes()
    assert isinstance(process, SharedProcess)
    assert process.connection_alive() and not process.known_lost()

    kill_sshd(own_sshd[0])
    assert wait_for(process.known_lost, HANG)
    assert not process.connection_alive()
    assert wait_for(lambda: exited(holder), HANG)

    # A save after the loss is not lost with it: the dead channel is dropped before the
    # call, which goes to a new holder on the restarted server.
    own_sshd.append(restart_sshd(own_sshd[0]))
    key = cache._rpc("save_value", b"after the restart")
    assert cache.load_value(key) == b"after the restart"
    assert holder_pid(cache) != holder


# -- 3. the network dropped and restored between the holder and sshd ---------------------


def test_a_read_through_the_holder_after_the_network_comes_back_is_retried_once(
        make, sshd, relayed, runtime, caplog):
    relay = relayed(sshd)
    cache = make(port=relay.port, prompt=never, control_persist="1m",
                 server_alive_interval=QUIET)
    value = os.urandom(1 << 20)
    key = cache._rpc("save_value", value)
    assert wait_for(lambda: logins(sshd) > 0)
    logged_in = logins(sshd)

    relay.drop()
    relay.restore()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        assert cache.load_value(key) == value
    assert time.monotonic() - started < HANG
    assert [r.getMessage() for r in caplog.records if RETRY in r.getMessage()] == [
        f"connection to testhost lost during 'load_value'; {RETRY}"]
    assert wait_for(lambda: logins(sshd) == logged_in + 1)  # one new login, asking nothing


def test_a_save_through_the_holder_across_a_drop_is_never_retried(
        make, sshd, relayed, runtime, remote_dir, caplog):
    relay = relayed(sshd)
    cache = make(port=relay.port, prompt=never, control_persist="1m",
                 server_alive_interval=QUIET)
    assert cache.contains("0" * 64) is False
    before = remote_files(remote_dir)
    value = os.urandom(1 << 20)

    relay.drop()
    relay.restore()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="fleche_ssh"), \
            pytest.raises(ConnectionLost, match="'save_value'"):
        cache._rpc("save_value", value)
    assert time.monotonic() - started < HANG
    assert not [r for r in caplog.records if RETRY in r.getMessage()]
    with pytest.raises(KeyError):
        cache.load_value(digest(value))
    assert not [n for n in remote_files(remote_dir) - before if n.endswith(".tmp")]


def test_a_cache_that_cannot_ask_is_told_the_holders_login_was_lost(make, sshd_totp, relayed,
                                                                     runtime):
    relay = relayed(sshd_totp.server)
    asked: list[str] = []

    def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        asked.extend(text for text, _ in prompts)
        return [sshd_totp.code() for _ in prompts]

    keys = {"host": "totphost", "port": relay.port, "control_persist": "1m",
            "server_alive_interval": QUIET}
    notebook = make(prompt=answer, **keys)
    batch = make(prompt="none", **keys)
    notebook.info()
    assert batch.contains("0" * 64) is False  # on the holder's login: nothing asked
    assert len(asked) == 1

    relay.drop()
    relay.restore()
    started = time.monotonic()
    with pytest.raises(LoginLost) as lost:
        batch.load_value("0" * 64)
    assert time.monotonic() - started < HANG
    message = str(lost.value)
    assert message.startswith("The login to totphost was lost (")
    assert "One-time password" in message  # the question nobody could answer here
    assert len(asked) == 1  # nobody was asked on the batch cache's behalf


# -- which source a channel came through: check and the log -------------------------------


def test_check_and_the_log_name_the_background_holder(client_home, remote_dir, remote_python,
                                                      runtime, capsys, caplog):
    from fleche_ssh.cli import main as cli

    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        assert cli(["check", "testhost", "-o", "ControlPersist=30s", "--prompt", "none",
                    "--python", remote_python, "--workdir", str(remote_dir)]) == 0
    out = capsys.readouterr().out
    (name,) = persist.names()
    socket_path = runtime / f"{name}.sock"
    source = f"the background holder at {socket_path} (control_persist)"
    assert re.search(rf"^ +channel through +{re.escape(source)}$", out, re.M), out
    skipped = re.findall(r"^ +skipped +control_persist: the background fleche-ssh process "
                         r"logs in$", out, re.M)
    assert len(skipped) == 2, out  # neither TCP nor a login of check's own
    opened = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("starting remote cache on")]
    assert opened and all(m.startswith(f"starting remote cache on root@127.0.0.1:"
                                       f"{client_home.sshd.port} through {source}: ")
                          for m in opened), opened
