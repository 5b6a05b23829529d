"""The local endpoint of a shared login, between real processes: who may connect, and what is sent.

Listeners and clients run in separate Python processes started from this
venv with the worktree on ``PYTHONPATH``; processes of another user
(``nobody``) run the system interpreter with plain sockets, since they
cannot enter root's venv.  Each test gets its own runtime directory
through ``FLECHE_SSH_RUNTIME_DIR``, short enough for ``sun_path``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import _require
from fleche.remote import RemoteConnectionError
from support.caches import wait_for
from support.processes import stop_process

from fleche_ssh.errors import AddressInUse, ConfigError, RuntimeDirError, UntrustedPeer
from fleche_ssh.share import local, place
from fleche_ssh.wire.unix import UntrustedSocket

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["unix", "loopback"]
SYSTEM_PYTHON = "/usr/bin/python3"  # nobody cannot enter /root's venv

#: A listener process: prints its address, then greets each authenticated client and echoes
#: one message.
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
    conn.sendall(b"hi:")
    conn.sendall(b"echo:" + conn.recv(100))
    conn.close()
"""

#: For each name read on stdin, tries to listen and says how it went; holds what it won.
RACER = """
import sys
from fleche_ssh.share import local
held = []
print("waiting", flush=True)
for name in sys.stdin:
    try:
        held.append(local.listen(name.strip()))
    except local.AddressInUse as e:
        print("lost", e, flush=True)
    else:
        print("won", flush=True)
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
        return _until_closed(sock)


def _until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(100):
        data += chunk
    return data


# -- both backends ----------------------------------------------------------------------------


def test_a_client_reaches_a_listener_in_another_process(backend, where, spawn):
    listener = spawn(LISTENER, "roundtrip")
    address = ready(listener)
    assert echo("roundtrip") == b"hi:echo:ping"
    assert echo("roundtrip") == b"hi:echo:ping"  # one connection per client, the listener goes on
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
        assert echo("stale") == b"hi:echo:ping"
        spawn_client.join(10)


def test_two_processes_listening_at_once_one_wins(backend, where, spawn):
    racers = [spawn(RACER, stdin=subprocess.PIPE) for _ in range(2)]
    for racer in racers:
        assert racer.stdout.readline().strip() == "waiting"
    for round_ in range(10):
        name = f"race{round_}"
        for racer in racers:
            racer.stdin.write(name + "\n")
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
        conn.sendall(b"hi:")
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


def test_a_client_of_another_user_is_refused_before_a_byte(where, base, spawn, monkeypatch):
    """A test-only directory and socket that nobody may reach: only the uid check stands."""
    monkeypatch.setenv(local.BACKEND, "unix")
    user = nobody()
    listener = local.listen("guarded")
    try:
        base.chmod(0o711)  # nobody may pass through the test's base, not list it
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
    base.chmod(0o711)
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


# -- loopback: the secret and the proofs ------------------------------------------------------


@pytest.fixture
def loopback(monkeypatch, where) -> Path:
    monkeypatch.setenv(local.BACKEND, "loopback")
    return where


def _secret_file(where: Path) -> Path:
    return where / "loopback.secret"


def _port(where: Path, name: str) -> int:
    return int((where / f"{name}.port").read_text())


def test_the_secret_file_is_private_and_shared_by_both_ends(loopback, spawn):
    old = os.umask(0)
    try:
        listener = local.listen("mine")
    finally:
        os.umask(old)
    with listener:
        info = os.lstat(_secret_file(loopback))
        assert stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_size == 32
        assert stat.S_IMODE(os.lstat(loopback / "mine.port").st_mode) == 0o600
        before = _secret_file(loopback).read_bytes()
        thread = _accept_one_in_thread(listener)
        assert echo("mine") == b"hi:echo:ping"
        thread.join(10)
        assert _secret_file(loopback).read_bytes() == before  # made once, used by both


@pytest.mark.parametrize("unfit", ["mode 0644", "short", "symlink"])
def test_an_unfit_secret_file_is_refused_by_name(loopback, base, unfit):
    place.directory()
    secret = _secret_file(loopback)
    if unfit == "symlink":
        (base / "other").write_bytes(os.urandom(32))
        secret.symlink_to(base / "other")
        expected = "it is a symbolic link"
    else:
        secret.write_bytes(os.urandom(32 if unfit == "mode 0644" else 8))
        secret.chmod(0o644 if unfit == "mode 0644" else 0o600)
        expected = "its mode is 0644, not 0600" if unfit == "mode 0644" else "holds 8 bytes"
    with pytest.raises(RuntimeDirError, match=f"{secret}.*{expected}.*Remove it"):
        local.listen("x")
    assert not (loopback / "x.port").exists()


def test_a_client_with_the_wrong_secret_is_refused_both_ways(loopback, spawn):
    """The listener proves itself first: a client with another secret stops and sends no proof."""
    listener = spawn(LISTENER, "guarded")
    ready(listener)
    _secret_file(loopback).write_bytes(os.urandom(32))  # this client now holds another secret
    with pytest.raises(UntrustedPeer, match=r"127\.0\.0\.1:\d+ .*did not prove it holds your "
                                            "secret .*nothing was sent to it"):
        local.connect("guarded", 10)
    line = listener.stdout.readline()
    assert line.startswith("refused a client of 127.0.0.1:"), line
    assert "did not prove it holds your secret" in line


def _raw_client(port: int, secret: bytes, name: str, hello: bytes = local.HELLO) -> bytes:
    """A client written here, proving with *secret*: what the listener sends after its proof."""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        nonce = os.urandom(32)
        sock.sendall(hello + nonce)
        reply = b""
        while len(reply) < 64:
            chunk = sock.recv(64 - len(reply))
            if not chunk:
                return b"closed before its proof"
            reply += chunk
        sock.sendall(local.proof(secret, b"client", name, port, reply[:32], nonce))
        sock.settimeout(10)
        return sock.recv(3)


@pytest.mark.parametrize("wrong", ["secret", "name", "hello"])
def test_the_listener_refuses_a_proof_made_without_the_secret(loopback, spawn, wrong):
    listener = spawn(LISTENER, "guarded")
    ready(listener)
    port, secret = _port(loopback, "guarded"), _secret_file(loopback).read_bytes()
    assert _raw_client(port, secret, "guarded") == b"hi:"  # the client written here is right
    key = os.urandom(32) if wrong == "secret" else secret
    name = "other" if wrong == "name" else "guarded"
    hello = b"fleche-ssh local 0\n" if wrong == "hello" else local.HELLO
    # A wrong start is refused before the listener's proof, a wrong proof after it.
    assert _raw_client(port, key, name, hello) == (
        b"closed before its proof" if wrong == "hello" else b"")
    line = listener.stdout.readline()
    reason = ("it did not start as a fleche-ssh client does" if wrong == "hello"
              else "it did not prove it holds your secret")
    assert line.startswith("refused a client of 127.0.0.1:") and reason in line, line


def _squatter(reply: bytes):
    """A TCP listener not of fleche-ssh: answers *reply*, keeps all it receives until EOF."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(reply)
            received.append(_until_closed(conn))
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread, received


def test_a_squatter_on_the_port_collects_only_a_random_challenge(loopback):
    """Another program on the port a dead listener named: refused, having got 51 random bytes."""
    with local.listen("squatted"):
        pass  # the secret exists, as it does once a listener has run
    port, thread, received = _squatter(os.urandom(64))
    fd = place.open_private(str(loopback / "squatted.port"), os.O_WRONLY | os.O_CREAT)
    os.write(fd, f"{port}\n".encode())
    os.close(fd)
    with pytest.raises(UntrustedPeer, match=f"127.0.0.1:{port} .*did not prove"):
        local.connect("squatted", 10)
    thread.join(10)
    (got,) = received
    assert got[: len(local.HELLO)] == local.HELLO
    assert len(got) == len(local.HELLO) + 32  # the challenge, and not a byte more


def test_a_relay_to_the_real_listener_is_refused(loopback, spawn):
    """A proof is bound to the listener's port: relayed from another port, it does not verify."""
    import threading

    listener = spawn(LISTENER, "relayed")
    ready(listener)
    real = _port(loopback, "relayed")
    relay = socket.create_server(("127.0.0.1", 0))

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(4096):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        client, _ = relay.accept()
        upstream = socket.create_connection(("127.0.0.1", real), 10)
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    threading.Thread(target=serve, daemon=True).start()
    (loopback / "relayed.port").write_text(f"{relay.getsockname()[1]}\n")
    with pytest.raises(UntrustedPeer, match="did not prove"):
        local.connect("relayed", 10)
    line = listener.stdout.readline()  # and the listener, given no proof, refuses its side
    assert line.startswith("refused") and "did not prove it holds your secret" in line, line
    relay.close()


class Capture:
    """TCP payloads to or from one port on ``lo``, as the kernel carries them (AF_PACKET, root)."""

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.payloads: list[bytes] = []
        self._raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._raw.bind(("lo", 0))  # from here on, every frame is queued for us
        self._raw.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._raw.close()

    @property
    def wire(self) -> bytes:
        return b"".join(self.payloads)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._raw.recv(65536)
            except TimeoutError:
                continue
            if frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4, TCP
                continue
            ip = 14
            tcp = ip + (frame[ip] & 0x0F) * 4
            ports = int.from_bytes(frame[tcp:tcp + 2]), int.from_bytes(frame[tcp + 2:tcp + 4])
            end = ip + int.from_bytes(frame[ip + 2:ip + 4])
            data = frame[tcp + (frame[tcp + 12] >> 4) * 4:end]
            if self.port in ports and data:
                self.payloads.append(data)


def test_the_secret_never_crosses_the_wire(loopback, spawn):
    import base64

    if os.geteuid() != 0:
        _require(["root (to capture packets on lo)"], "the wire-capture test")
    listener = spawn(LISTENER, "watched")
    ready(listener)
    secret = _secret_file(loopback).read_bytes()
    with Capture(_port(loopback, "watched")) as capture:
        assert echo("watched") == b"hi:echo:ping"
        assert wait_for(lambda: b"echo:ping" in capture.wire)  # read off the raw socket
    wire = capture.wire
    # There is something to look at: the whole exchange, handshake to echo, was captured.
    assert local.HELLO in wire and b"hi:" in wire and b"echo:ping" in wire
    assert len(wire) >= len(local.HELLO) + 32 + 64 + 32
    for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
        assert form not in wire


def test_a_port_file_without_a_port_is_refused_by_name(loopback):
    place.directory()
    fd = place.open_private(str(loopback / "junk.port"), os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"not a port\n")
    os.close(fd)
    with pytest.raises(RuntimeDirError, match=r"junk\.port does not hold a port .*remove it"):
        local.connect("junk", 10)


def test_an_unknown_backend_is_a_config_error(monkeypatch, where):
    monkeypatch.setenv(local.BACKEND, "pipes")
    with pytest.raises(ConfigError, match="FLECHE_SSH_LOCAL_BACKEND='pipes': expected 'unix' or"):
        local.listen("x")
