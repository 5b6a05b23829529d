"""When the far side fails mid-use: what the user sees, and that nothing hangs or half-saves.

Against the real sshd fixtures: the remote server process killed between
calls and in the middle of a large upload or download, sshd itself killed,
the TCP connection reset, the transport closed under a call in flight,
``close()`` racing with calls, garbage and truncated frames on stdout, a
value too large for the wire, a remote disk that fills up, and objects one
side cannot unpickle.

Every failure is a ``fleche.remote.RemoteConnectionError`` (a
``RemoteCommandError`` when the remote command ended, with its exit status
or signal and its last stderr lines) or the remote's own exception; every
wait is bounded; and nothing partial is left stored.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle
import fleche
import numpy as np
import pytest
from fleche.caches import Rejected
from fleche.call import Call
from fleche.config import storage_from_config
from fleche.digest import digest
from fleche.remote import RemoteConnectionError
from support import procfs
from support import sshd as sshd_helpers
from support.caches import wait_for

from fleche_ssh.errors import ConnectionRefused, ProtocolError, RemoteCommandError, ValueTooLarge
from fleche_ssh.wire import frames

pytestmark = pytest.mark.timeout(120)

#: A value large enough that killing its transfer lands in the middle of it.
BIG = 128 << 20
#: Bytes that must have moved before the kill: the transfer is well under way.
UNDER_WAY = 16 << 20
#: A setup command whose stderr line the error messages must quote.
ANNOUNCE = 'echo "fleche server starting in $PWD" >&2'
ANNOUNCED = "fleche server starting in "
#: Bound on any single failing operation.
PROMPT = 10.0


def logins(server) -> int:
    return server.log_text().count("Accepted publickey")


def failure(error_type: type[BaseException], operation) -> BaseException:
    """The error *operation* raises, checked to be *error_type* and to come within PROMPT."""
    started = time.monotonic()
    with pytest.raises(error_type) as caught:
        operation()
    assert time.monotonic() - started < PROMPT
    return caught.value


def check_lost(error: BaseException, during: str) -> None:
    assert f"connection was lost during {during!r}" in str(error)
    assert "The next call connects again" in str(error)


def running(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    return procfs.state(pid) not in (None, "Z")


def parent(pid: int) -> int:
    ppid = procfs.parent(pid)
    assert ppid is not None, f"process {pid} ended before its parent was read"
    return ppid


@dataclass
class KillMidTransfer:
    """Kills *pid* once *watched* has read *threshold* more bytes: the transfer is under way.

    An upload is watched on the remote server itself (it reads its stdin in
    chunks).  A download is watched on the sshd process reading the
    server's stdout (the server writes a frame in one call, counted only
    when the call returns).
    """

    pid: int
    watched: int
    threshold: int = UNDER_WAY
    moved: int | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        baseline = procfs.io_counter(self.watched, "rchar")
        assert baseline is not None, f"no /proc/{self.watched}/io"
        self.thread = threading.Thread(target=self._run, args=(baseline,), daemon=True)
        self.thread.start()

    def _run(self, baseline: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = procfs.io_counter(self.watched, "rchar")
            if now is None:
                return
            if now - baseline >= self.threshold:
                os.kill(self.pid, signal.SIGKILL)
                self.moved = now - baseline
                return
            time.sleep(0.005)

    def killed_mid_transfer(self) -> bool:
        self.thread.join(10)
        return self.moved is not None and self.moved < BIG


def check_killed_message(error: BaseException, name: str = "SIGKILL") -> None:
    message = str(error)
    assert f"killed by signal {name}" in message
    assert "out-of-memory killer" in message
    assert ANNOUNCED in message  # the remote's last stderr lines
    assert "remote command: cd " in message


def remote_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# -- the remote server process dies ------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_server_killed_between_calls(make, sshd, sig, pool):
    cache = make(setup_commands=[ANNOUNCE])
    pid = cache.info()["pid"]
    pooled = pool.get(cache.target())
    assert wait_for(lambda: logins(sshd) > 0)
    logged_in = logins(sshd)

    os.kill(pid, sig)
    assert wait_for(lambda: not running(pid))
    check_killed_message(failure(RemoteCommandError, lambda: cache.contains("0" * 64)),
                         sig.name)

    cache.reconnect()
    assert cache.info()["pid"] != pid
    assert pool.get(cache.target()) is pooled
    assert logins(sshd) == logged_in


def test_server_killed_while_receiving_a_large_save(make, sshd, remote_dir):
    cache = make(setup_commands=[ANNOUNCE])
    value = os.urandom(BIG)
    call = Call(name="faults.upload", arguments={"n": 1}, result=value)
    pid = cache.info()["pid"]
    logged_in = logins(sshd)
    before = remote_files(remote_dir)

    killer = KillMidTransfer(pid, watched=pid)
    with pytest.raises(RemoteCommandError) as killed:
        cache.save(call)
    assert killer.killed_mid_transfer()
    check_killed_message(killed.value)
    assert remote_files(remote_dir) == before  # nothing partial stored

    cache.reconnect()
    key = cache.save(call)
    assert cache.load_value(digest(value)) == value
    assert cache.load(key).name == "faults.upload"
    assert logins(sshd) == logged_in


def test_server_killed_while_receiving_a_fleche_result(make, sshd, remote_dir):
    runs = []

    @fleche.fleche
    def simulate(seed):
        runs.append(seed)
        return np.random.default_rng(seed).bytes(BIG)

    cache = make(setup_commands=[ANNOUNCE])
    pid = cache.info()["pid"]
    with fleche.cache(cache):
        key = simulate.fleche.digest(7)
        killer = KillMidTransfer(pid, watched=pid)
        # The commit's save_value carries the result; its failure is the call's.
        with pytest.raises(RemoteCommandError) as killed:
            simulate(7)
        assert killer.killed_mid_transfer()
        check_killed_message(killed.value)
        value = np.random.default_rng(7).bytes(BIG)
        assert cache.contains(key) is False
        with pytest.raises(KeyError):
            cache.load_value(digest(value))
        assert not [name for name in remote_files(remote_dir) if name.endswith(".tmp")]

        assert simulate(7) == value  # runs again, and this time is stored
        assert runs == [7, 7]
        assert cache.contains(key) is True


def test_server_killed_while_sending_a_large_load_value(make, sshd, pool):
    cache = make(setup_commands=[ANNOUNCE])
    value = os.urandom(BIG)
    cache.save(Call(name="faults.download", arguments={}, result=value))
    cache.reconnect()
    pid = cache.info()["pid"]
    pooled = pool.get(cache.target())
    logged_in = logins(sshd)

    killer = KillMidTransfer(pid, watched=parent(pid))
    with pytest.raises(RemoteCommandError) as killed:
        cache.load_value(digest(value))
    assert killer.killed_mid_transfer()
    check_killed_message(killed.value)

    cache.reconnect()
    assert cache.load_value(digest(value)) == value
    assert pool.get(cache.target()) is pooled
    assert logins(sshd) == logged_in


# -- the connection dies -----------------------------------------------------------------


@pytest.fixture
def own_sshd(tmp_path, client_key):
    """An sshd of this test's own, free to be killed."""
    server = sshd_helpers.start_sshd(tmp_path / "own-sshd",
                                     authorized_keys=[client_key.public_line])
    yield server
    server.stop()


def process_tree(pid: int) -> list[int]:
    """*pid* and its descendants, parents first."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                           timeout=10, check=False)
    return [pid, *(p for child in found.stdout.split() for p in process_tree(int(child)))]


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_sshd_killed(make, own_sshd, client_home):
    known_hosts = client_home.ssh_dir / "own_known_hosts"
    known_hosts.write_text("".join(line + "\n" for line in own_sshd.known_hosts_lines()))
    cache = make(port=own_sshd.port, known_hosts_file=str(known_hosts))
    pid = cache.info()["pid"]

    sshd_pids = [p for p in process_tree(own_sshd.process.pid) if command_name(p) == "sshd"]
    assert len(sshd_pids) >= 2  # the listener and the connection's own processes
    for p in sshd_pids:
        os.kill(p, signal.SIGKILL)
    # A killed process closes its sockets on the way out, before it is a zombie:
    # until then a connect may still land in the dying listener's backlog.
    assert wait_for(lambda: not any(running(p) for p in sshd_pids))

    # The next call connects again, and says both what was lost and what failed.
    refused = failure(ConnectionRefused, lambda: cache.contains("0" * 64))
    assert f"127.0.0.1 port {own_sshd.port} refused the connection" in str(refused)
    assert refused.__notes__[-1].startswith("The connection to testhost was lost (")
    assert refused.__notes__[-1].endswith("); connecting again failed.")
    assert wait_for(lambda: not running(pid))  # the remote server did not outlive sshd

    cache.reconnect()
    refused = failure(ConnectionRefused, lambda: cache.contains("0" * 64))
    assert f"127.0.0.1 port {own_sshd.port} refused the connection" in str(refused)


def test_connection_reset(make, sshd, pool):
    cache = make()
    pid = cache.info()["pid"]
    target = cache.target()
    pooled = pool.get(target)
    assert wait_for(lambda: logins(sshd) > 0)
    logged_in = logins(sshd)

    pooled.transport.sock.shutdown(socket.SHUT_RDWR)
    # The next call connects again by itself: no reconnect() needed.
    assert cache.contains("0" * 64) is False
    assert cache.info()["pid"] != pid
    # A dead transport is replaced, which means logging in again.
    assert pool.get(target) is not pooled
    assert wait_for(lambda: logins(sshd) == logged_in + 1)


def test_transport_closed_under_a_call_in_flight(make, pool, caplog):
    cache = make()
    value = os.urandom(BIG)
    cache.save(Call(name="faults.in-flight", arguments={}, result=value))
    pid = cache.info()["pid"]
    transport = pool.get(cache.target()).transport
    outcome: dict[str, object] = {}

    def load() -> None:
        try:
            outcome["value"] = cache.load_value(digest(value))
        except RemoteConnectionError as e:
            outcome["error"] = e

    sshd_side = parent(pid)  # reads the server's stdout as the download goes out
    baseline = procfs.io_counter(sshd_side, "rchar")
    worker = threading.Thread(target=load, daemon=True)
    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        worker.start()
        assert wait_for(lambda: procfs.io_counter(sshd_side, "rchar") - baseline >= UNDER_WAY)
        transport.close()
        worker.join(2 * PROMPT)
    assert not worker.is_alive(), "the call hung after its transport was closed"
    # A read lost in flight is sent once more, on a new connection.
    assert outcome == {"value": value}
    assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == [
        "connection to testhost lost during 'load_value'; retrying it once on a new connection"]
    assert pool.get(cache.target()).transport is not transport


def test_close_races_with_calls_from_other_threads(make, pool):
    cache = make(channels=2)
    saved = {x: cache.save(Call(name="faults.race", arguments={"x": x}, result=x * x))
             for x in range(4)}
    target = cache.target()
    outcomes: list[object] = []
    lock = threading.Lock()

    closed = threading.Event()

    def work(x: int) -> None:
        while True:  # calls until the closing is over, and one more
            last = closed.is_set()
            try:
                got: object = cache.load(saved[x]).result == x * x
            except RemoteConnectionError as e:
                got = e
            with lock:
                outcomes.append(got)
            if last:
                return

    def close_three_times() -> None:
        for _ in range(3):
            time.sleep(0.3)
            cache.close()
        closed.set()

    closer = threading.Thread(target=close_three_times, daemon=True)
    workers = [threading.Thread(target=work, args=(x,), daemon=True) for x in saved]
    for thread in [*workers, closer]:
        thread.start()
    for thread in [closer, *workers]:
        thread.join(30)
    assert not any(t.is_alive() for t in [closer, *workers]), "a thread hung or deadlocked"
    assert len(outcomes) > 2 * len(workers)
    assert all(o is True or isinstance(o, RemoteConnectionError) for o in outcomes)
    assert outcomes[-len(workers):] == [True] * len(workers)  # after the closing: all well

    # Every channel the race opened is closed again: none leaked.
    cache.close()
    transport = pool.get(target).transport
    assert wait_for(lambda: not transport._channels)
    assert cache.contains(saved[0]) is True


# -- what comes back is not a frame ----------------------------------------------------------

LOGIN_BANNER = 'echo "Welcome to $(hostname)!"\necho\necho "Your quota: 9.5 of 10 GB used"\n'


@pytest.mark.parametrize(
    ("setup", "shown"),
    [
        # A start-up file that greets every shell, as on many clusters.
        (". ./login-banner.sh", b"Welcome to "),
        # Stray bytes that look like a frame header and a pickle's first byte.
        ("printf '\\000\\000\\001\\000\\200'", b"\x00\x00\x01\x00\x80\x00"),
        # ... and like a whole pickle start: the frame then ends inside the real one.
        ("printf '\\000\\000\\000\\010\\200\\005'", b"\x00\x00\x00\x08\x80\x05"),
    ],
    ids=["login-banner", "truncated-frame", "shifted-frame"],
)
def test_stdout_that_is_not_a_frame(make, remote_dir, setup, shown):
    (remote_dir / "login-banner.sh").write_text(LOGIN_BANNER)
    cache = make(setup_commands=[setup])
    for _ in range(2):  # and again: the next call is not thrown off by the first
        message = str(failure(ProtocolError, cache.info))
        assert "not a fleche frame to stdout" in message
        assert repr(shown)[:-1] in message  # the first bytes, as seen
        assert ".bashrc" in message


# -- a value the wire cannot carry --------------------------------------------------------

#: Stands in for a value whose pickle is over 4 GiB; see ``oversized``.
HUGE = b"fleche-ssh test: stands in for a value over 4 GiB"


class _FourGiBAndOne:
    """A pickle body's length without its bytes."""

    def __len__(self) -> int:
        return frames.MAX_FRAME + 1


@pytest.fixture
def oversized(monkeypatch):
    """Requests carrying ``HUGE`` pickle to 4 GiB + 1 byte, without allocating any of it."""
    def oversizing(real):
        def dumps(obj, *args, **kwargs):
            body = real(obj, *args, **kwargs)
            return _FourGiBAndOne() if HUGE in body else body
        return dumps

    monkeypatch.setattr(frames, "cloudpickle",
                        types.SimpleNamespace(dumps=oversizing(cloudpickle.dumps),
                                              loads=cloudpickle.loads))
    # A request of plain values (HUGE itself, in save_value) takes the C pickler.
    monkeypatch.setattr(frames, "pickle", types.SimpleNamespace(dumps=oversizing(pickle.dumps)))


def test_a_value_over_4_gib_is_refused_before_anything_is_sent(make, oversized):
    cache = make()
    pid = cache.info()["pid"]
    with pytest.raises(ValueTooLarge) as refused:
        cache.save(Call(name="faults.huge", arguments={}, result=HUGE))
    message = str(refused.value)
    assert f"{frames.MAX_FRAME + 1:,} bytes" in message
    assert "at most 4,294,967,295 bytes (4 GiB)" in message
    assert "nothing was sent" in message
    assert isinstance(refused.value, Rejected) and isinstance(refused.value, ValueError)

    # The same server answers next: not one byte of the refused request reached it.
    assert cache.contains("0" * 64) is False
    assert cache.info()["pid"] == pid


def test_a_fleche_result_over_4_gib_is_returned_uncached(make, oversized, caplog):
    @fleche.fleche
    def produce(n):
        return HUGE

    cache = make()
    with fleche.cache(cache), caplog.at_level(logging.WARNING):
        assert produce(1) == HUGE
        assert cache.contains(produce.fleche.digest(1)) is False
    assert any("rejected save" in r.getMessage() and "4 GiB" in r.getMessage()
               for r in caplog.records)


# -- the remote cache's storage fails --------------------------------------------------------


def add_remote_cache(remote_dir: Path, name: str, values_root: Path, calls_root: Path) -> None:
    with (remote_dir / "fleche.toml").open("a") as config:
        config.write(f'\n[{name}]\nvalues.type = "cloudpickle"\nvalues.root = "{values_root}"\n'
                     f'calls.type = "cloudpickle"\ncalls.root = "{calls_root}"\n')


@pytest.fixture
def tiny_disk(remote_dir):
    """A 1 MiB tmpfs inside the remote workdir (needs root: without, skipped, or failed in CI)."""
    mount_point = remote_dir / "tiny-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set, so not skipping: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], timeout=30, check=False)


def test_remote_disk_full(make, remote_dir, tiny_disk):
    add_remote_cache(remote_dir, "tiny", tiny_disk / "values", tiny_disk / "calls")
    cache = make(cache_name="tiny")
    pid = cache.info()["pid"]
    with pytest.raises(OSError, match="No space left on device") as full:
        cache.save(Call(name="faults.full", arguments={}, result=os.urandom(2 << 20)))
    assert "raised by the remote cache on testhost in 'save'" in full.value.__notes__[-1]
    assert remote_files(tiny_disk) == set()  # no partial or temporary file left behind

    key = cache.save(Call(name="faults.fits", arguments={}, result=b"small"))
    assert cache.load(key).result == b"small"
    assert cache.info()["pid"] == pid


def test_remote_values_root_is_a_file(make, remote_dir):
    not_a_dir = remote_dir / "not-a-directory"
    not_a_dir.write_text("a file where the values directory should be\n")
    add_remote_cache(remote_dir, "misplaced", not_a_dir, remote_dir / "calls")
    cache = make(cache_name="misplaced")
    with pytest.raises(FileExistsError) as refused:
        cache.save(Call(name="faults.misplaced", arguments={}, result=b"value"))
    assert str(not_a_dir) in str(refused.value)
    assert cache.contains("0" * 64) is False  # the server is still there


# -- objects one side cannot unpickle ---------------------------------------------------------

REMOTE_ONLY = '''\
import dataclasses
import threading


@dataclasses.dataclass
class Result:
    n: int


class StaleHandle(Exception):
    """An error holding the lock it failed on, as some I/O libraries' errors do."""

    def __init__(self, message, lock):
        super().__init__(message)
        self.lock = lock


@dataclasses.dataclass
class Handle:
    name: str

    def __setstate__(self, state):
        raise StaleHandle(f"handle {state['name']!r} went stale", threading.Lock())
'''


@pytest.fixture
def stored_remotely(remote_dir):
    """Store values of classes from ``remote_only``, a module of the remote workdir only.

    The remote server runs in that directory, so it imports ``remote_only``;
    this interpreter is given it only while the values are written.
    """
    (remote_dir / "remote_only.py").write_text(REMOTE_ONLY)
    values = storage_from_config({"type": "cloudpickle", "root": str(remote_dir / "values")},
                                 "value")
    sys.path.insert(0, str(remote_dir))
    try:
        import remote_only

        keys = {"result": values.save(remote_only.Result(3)),
                "handle": values.save(remote_only.Handle("scratch"))}
    finally:
        sys.path.remove(str(remote_dir))
        sys.modules.pop("remote_only", None)
    return keys


def test_a_value_of_a_class_only_the_remote_has(make, stored_remotely):
    cache = make()
    pid = cache.info()["pid"]
    with pytest.raises(ModuleNotFoundError, match="remote_only") as missing:
        cache.load_value(stored_remotely["result"])
    (note,) = missing.value.__notes__
    assert "the remote cache on testhost answered 'load_value'" in note
    assert "Install the same packages here" in note
    assert cache.info()["pid"] == pid  # the answer was read whole: same server, in step


def test_a_remote_error_that_cannot_be_pickled(make, stored_remotely):
    cache = make()
    pid = cache.info()["pid"]
    # The server replaces it by a RuntimeError carrying its type, message and traceback.
    with pytest.raises(RuntimeError) as stale:
        cache.load_value(stored_remotely["handle"])
    message = str(stale.value)
    assert message.startswith("StaleHandle: handle 'scratch' went stale\n")
    assert "remote_only.py" in message  # where it was raised, on the remote
    assert "cannot pickle '_thread.lock' object" in message
    assert "raised by the remote cache on testhost in 'load_value'" in stale.value.__notes__[-1]
    assert cache.info()["pid"] == pid


def test_a_value_of_a_class_only_this_side_has(make, tmp_path, monkeypatch):
    local = tmp_path / "local-only"
    local.mkdir()
    (local / "local_only.py").write_text(
        "import dataclasses\n\n\n@dataclasses.dataclass\nclass Sample:\n    n: int\n")
    monkeypatch.syspath_prepend(str(local))
    import local_only

    cache = make()
    pid = cache.info()["pid"]
    try:
        with pytest.raises(RemoteCommandError) as crashed:
            cache.save(Call(name="faults.local", arguments={}, result=local_only.Sample(1)))
    finally:
        sys.modules.pop("local_only", None)
    message = str(crashed.value)
    assert "exited with status 1" in message
    assert "No module named 'local_only'" in message.split("remote stderr", 1)[1]
    assert cache.info()["pid"] != pid  # the next operation starts a new server
