"""The local endpoint of a shared login, between real processes: who may connect, and what is sent.

Listeners and clients run in separate Python processes started from this
venv with the worktree on ``PYTHONPATH``; processes of another user
(``nobody``) run the system interpreter with plain sockets, since they
cannot enter root's venv.  Each test gets its own runtime directory
through ``FLECHE_SSH_RUNTIME_DIR``, short enough for ``sun_path``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import _require
from fleche.remote import RemoteConnectionError
from support.processes import stop_process

from fleche_ssh.errors import AddressInUse, RuntimeDirError, UntrustedPeer
from fleche_ssh.share import local, place
from fleche_ssh.wire.unix import UntrustedSocket

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["unix"]
SYSTEM_PYTHON = "/usr/bin/python3"  # nobody cannot enter /root's venv

#: A listener process: prints its address, then echoes one message per authenticated client.
LISTENER = """
import sys
from fleche_ssh.share import local
listener = local.listen(sys.argv[1])
print("ready", listener.address, flush=True)
while True:
    conn = listener.accept()
    try:
        listener.authenticate(conn, 5)
    except local.UntrustedPeer as e:
        print("refused", e, flush=True)
        continue
    conn.sendall(b"echo:" + conn.recv(100))
    conn.close()
"""

#: Waits for "go" on stdin, tries to listen, says how it went, holds the name until stdin ends.
RACER = """
import sys
from fleche_ssh.share import local
print("waiting", flush=True)
sys.stdin.readline()
try:
    listener = local.listen(sys.argv[1])
except local.AddressInUse as e:
    print("lost", e, flush=True)
else:
    print("won", flush=True)
sys.stdin.read()
"""


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> str:
    monkeypatch.setenv(local.BACKEND, request.param)
    return request.param


@pytest.fixture
def base():
    """A short private directory of the test's own (tmp_path is too long for ``sun_path``)."""
    path = Path(tempfile.mkdtemp(prefix="fsl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def where(base, monkeypatch) -> Path:
    """The runtime directory the code under test uses (not created yet: it creates it)."""
    path = base / "rt"
    monkeypatch.setenv(place.OVERRIDE, str(path))
    return path


@pytest.fixture
def spawn():
    """Start a Python process of this venv with the worktree first; stopped at the end."""
    started: list[subprocess.Popen] = []

    def start(code: str, *args: str, python: str = sys.executable, **kw) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([python, "-c", code, *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc)


def ready(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line.startswith("ready "), line + proc.stderr.read()
    return line.split(" ", 1)[1].strip()


def nobody() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        _require(["root (to run a process as nobody)"], "the other-user tests")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        _require([SYSTEM_PYTHON], "the other-user tests")
    return pwd.getpwnam("nobody")


def echo(name: str) -> bytes:
    sock = local.connect(name, 10)
    assert sock is not None
    with sock:
        sock.settimeout(10)
        sock.sendall(b"ping")
        return sock.recv(100)


# -- both backends ----------------------------------------------------------------------------


def test_a_client_reaches_a_listener_in_another_process(backend, where, spawn):
    listener = spawn(LISTENER, "roundtrip")
    address = ready(listener)
    assert echo("roundtrip") == b"echo:ping"
    assert echo("roundtrip") == b"echo:ping"  # one connection per client, the listener goes on
    if backend == "unix":
        assert address == str(where / "roundtrip.sock")
        assert stat.S_IMODE(os.lstat(address).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(where).st_mode) == 0o700


def test_nothing_listening_gives_none(backend, where):
    assert local.connect("absent", 10) is None


def test_close_removes_the_socket_and_lets_the_name_go(backend, where):
    listener = local.listen("closing")
    files = set(os.listdir(where))
    listener.close()
    assert local.connect("closing", 10) is None
    assert set(os.listdir(where)) < files  # the socket or port file is gone (the lock stays)
    with local.listen("closing") as again:  # and the name can be held again
        assert isinstance(again, local.Listener)


def test_a_stale_socket_of_a_killed_listener_is_replaced_at_once(backend, where, spawn):
    listener = spawn(LISTENER, "stale")
    ready(listener)
    listener.send_signal(signal.SIGKILL)
    listener.wait(timeout=10)
    assert len(os.listdir(where)) >= 2  # its socket (or port file) and lock are left behind
    # A generous timeout: only returning at once, not waiting it out, passes the test's own.
    assert local.connect("stale", 600) is None
    with local.listen("stale") as replacement:
        spawn_client = _accept_one_in_thread(replacement)
        assert echo("stale") == b"echo:ping"
        spawn_client.join(10)


def test_two_processes_listening_at_once_one_wins(backend, where, spawn):
    for round_ in range(3):
        name = f"race{round_}"
        racers = [spawn(RACER, name, stdin=subprocess.PIPE) for _ in range(2)]
        for racer in racers:
            assert racer.stdout.readline().strip() == "waiting"
        for racer in racers:
            racer.stdin.write("go\n")
            racer.stdin.flush()
        outcomes = sorted(racer.stdout.readline().strip() for racer in racers)
        assert outcomes[0].startswith("lost a live fleche-ssh listener already holds "
                                      f"'{name}'"), outcomes
        assert outcomes[1] == "won", outcomes
        with pytest.raises(AddressInUse, match=f"'{name}'.*connect to it instead"):
            local.listen(name)  # and so does anyone else while the winner lives


def test_address_in_use_is_a_remote_connection_error(backend, where):
    with local.listen("held"), pytest.raises(RemoteConnectionError):
        local.listen("held")


@pytest.mark.parametrize("hostile", ["mode 0777", "owner nobody", "symlink", "file"])
def test_a_hostile_runtime_directory_is_refused(backend, where, base, hostile):
    if hostile == "mode 0777":
        where.mkdir()
        where.chmod(0o777)
        expected = "its mode is 0777, not 0700"
    elif hostile == "owner nobody":
        where.mkdir(mode=0o700)
        os.chown(where, nobody().pw_uid, -1)
        expected = f"it belongs to uid {nobody().pw_uid}, not to you"
    elif hostile == "symlink":
        (base / "elsewhere").mkdir(mode=0o700)
        where.symlink_to(base / "elsewhere")
        expected = "it is a symbolic link"
    else:
        where.write_text("")
        expected = "it is not a directory"
    for attempt in (lambda: local.listen("x"), lambda: local.connect("x", 10)):
        with pytest.raises(RuntimeDirError, match=f"{where} is refused .*: {expected}"):
            attempt()
    assert not (base / "elsewhere" / "x.lock").exists()  # nothing was put through the link


def _accept_one_in_thread(listener: local.Listener):
    import threading

    def serve() -> None:
        conn = listener.accept(10)
        listener.authenticate(conn, 10)
        conn.sendall(b"echo:" + conn.recv(100))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


# -- where ------------------------------------------------------------------------------------


def test_the_directory_is_created_0700_whatever_the_umask(where):
    old = os.umask(0)
    try:
        place.directory()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(where).st_mode) == 0o700


def test_the_directory_follows_xdg_runtime_dir_when_it_is_usable(base):
    xdg = base / "run-user"
    xdg.mkdir(mode=0o700)
    assert place.directory_path({"XDG_RUNTIME_DIR": str(xdg)}) == xdg / "fleche-ssh"
    own = Path(f"/tmp/fleche-ssh-{os.getuid()}")
    xdg.chmod(0o755)  # not private: not a runtime directory to trust
    assert place.directory_path({"XDG_RUNTIME_DIR": str(xdg)}) == own
    assert place.directory_path({"XDG_RUNTIME_DIR": "relative"}) == own
    assert place.directory_path({}) == own
    assert place.directory_path({place.OVERRIDE: "/x/y", "XDG_RUNTIME_DIR": str(xdg)}) == \
        Path("/x/y")


def test_a_socket_path_too_long_for_macos_is_refused_by_name(base, monkeypatch):
    deep = base / ("d" * (place.SUN_PATH_MAX - len(str(base)) - 8))
    monkeypatch.setenv(place.OVERRIDE, str(deep))
    monkeypatch.setenv(local.BACKEND, "unix")
    with pytest.raises(RuntimeDirError, match=rf"{deep}/name.sock is \d+ bytes; .* at most 103"):
        local.listen("name")
    with pytest.raises(RuntimeDirError, match="at most 103"):
        local.connect("name", 10)


def test_a_name_cannot_leave_the_directory(where):
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="not a name"):
            local.listen(bad)


def test_a_detached_process_has_a_session_of_its_own(spawn):
    proc = spawn("import os; print(os.getsid(0), flush=True)", **place.detached())
    assert int(proc.stdout.readline()) == proc.pid
    assert os.getsid(0) != proc.pid


# -- unix: the uid check itself -----------------------------------------------------------------


def _open_to_others(base: Path, where: Path) -> None:
    base.chmod(0o711)  # nobody may pass through, not list


def test_a_client_of_another_user_is_refused_before_a_byte(where, base, spawn, monkeypatch):
    """A test-only directory and socket that nobody may reach: only the uid check stands."""
    monkeypatch.setenv(local.BACKEND, "unix")
    user = nobody()
    listener = local.listen("guarded")
    try:
        _open_to_others(base, where)
        where.chmod(0o711)
        os.chmod(listener.address, 0o666)
        client = spawn(
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "s.sendall(b'question?'); print('sent', flush=True); s.settimeout(10)\n"
            "try: print('got', repr(s.recv(100)), flush=True)\n"
            "except ConnectionResetError: print('reset', flush=True)",
            listener.address, python=SYSTEM_PYTHON, user=user.pw_uid, group=user.pw_gid,
        )
        assert client.stdout.readline().strip() == "sent"
        conn = listener.accept(10)
        with pytest.raises(UntrustedPeer, match=f"runs as uid {user.pw_uid}, not as you"):
            listener.authenticate(conn, 5)
        out, err = client.communicate(timeout=10)
        # Closed on it, its question unread (hence a reset, not an orderly end): it learnt nothing.
        assert out.strip() == "reset", err
        where.chmod(0o700)
        conn = local.connect("guarded", 10)  # while this user is admitted on the same listener
        assert conn is not None
        listener.authenticate(listener.accept(10), 5)
        conn.close()
    finally:
        listener.close()


def test_a_listener_of_another_user_is_refused_and_gets_nothing(where, base, spawn,
                                                               monkeypatch):
    """A squatter binds our name while the directory is open, then the file is made ours."""
    monkeypatch.setenv(local.BACKEND, "unix")
    user = nobody()
    place.directory()
    _open_to_others(base, where)
    where.chmod(0o777)
    path = str(where / "squatted.sock")
    squatter = spawn(
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); "
        "print('ready', flush=True); c,_=s.accept(); c.settimeout(10); "
        "print('got', repr(c.recv(100)), flush=True)",
        path, python=SYSTEM_PYTHON, user=user.pw_uid, group=user.pw_gid,
    )
    assert squatter.stdout.readline().strip() == "ready"
    os.chown(path, os.getuid(), os.getgid())  # looks like ours now
    where.chmod(0o700)  # and the directory passes its check again
    with pytest.raises(UntrustedSocket, match=f"{path} runs as uid {user.pw_uid}"):
        local.connect("squatted", 10)
    out, err = squatter.communicate(timeout=10)
    assert out.strip() == "got b''", err  # not a byte was sent to it


def test_a_socket_file_of_another_user_is_refused_before_connecting(where, monkeypatch):
    monkeypatch.setenv(local.BACKEND, "unix")
    user = nobody()
    with local.listen("chowned") as listener:
        os.chown(listener.address, user.pw_uid, -1)
        with pytest.raises(UntrustedSocket, match=f"belongs to uid {user.pw_uid}"):
            local.connect("chowned", 10)
        with pytest.raises(TimeoutError):
            listener.accept(0.5)  # it never connected
