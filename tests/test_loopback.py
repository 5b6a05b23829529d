"""The demo's SSH server (``fleche_ssh.demo``), driven by a real Paramiko client (no mocks).

Beside it, how the server reads the command of an exec request: fleche's own
server command runs without a shell, anything else through ``/bin/sh -c``.
"""

from __future__ import annotations

import os
import shlex
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

import cloudpickle
import paramiko
import pytest
from support import procfs

from fleche_ssh.demo import command
from fleche_ssh.demo.server import LoopbackServer
from fleche_ssh.wire.command import server_command

pytestmark = pytest.mark.timeout(60)

_HEADER = struct.Struct(">I")


@pytest.fixture(scope="module")
def client_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture
def server(client_key):
    with LoopbackServer(authorized_key=client_key) as srv:
        yield srv


def _transport(srv: LoopbackServer) -> paramiko.Transport:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = paramiko.Transport(
        sock, default_window_size=16 * 1024 * 1024, default_max_packet_size=32768
    )
    t.start_client(timeout=10)
    assert t.get_remote_server_key() == srv.host_key
    return t


def _connect(srv: LoopbackServer, key: paramiko.PKey) -> paramiko.Transport:
    t = _transport(srv)
    assert t.auth_publickey("demo", key) == []
    assert t.is_authenticated()
    return t


def _run(t: paramiko.Transport, command: str, stdin: bytes = b"") -> tuple[bytes, bytes, int]:
    chan = t.open_session(timeout=10)
    chan.settimeout(30)
    chan.exec_command(command)
    if stdin:
        chan.sendall(stdin)
    chan.shutdown_write()
    out = chan.makefile("rb").read()
    err = chan.makefile_stderr("rb").read()
    rc = chan.recv_exit_status()
    chan.close()
    return out, err, rc


def _children() -> set[int]:
    """This process's children, read from each process's parent in /proc.

    (Not the per-thread ``children`` files: they race with threads that
    end, and a child of a thread that ended moves to another thread, so
    they can miss one.)
    """
    return set(procfs.children().get(os.getpid(), []))


def test_known_hosts_line(server):
    host, kind, blob = server.known_hosts_line().split()
    assert host == f"[127.0.0.1]:{server.port}"
    assert kind == server.host_key.get_name() == "ssh-ed25519"
    assert blob == server.host_key.get_base64()


def test_exec_stdout_stderr_exit_status(server, client_key):
    t = _connect(server, client_key)
    try:
        out, err, rc = _run(t, "echo hi; echo err 1>&2; exit 3")
        assert (out, err, rc) == (b"hi\n", b"err\n", 3)
    finally:
        t.close()


def test_many_channels_and_transports(server, client_key):
    transports = [_connect(server, client_key) for _ in range(3)]
    try:
        results: dict[tuple[int, int], bytes] = {}

        def work(i: int, j: int) -> None:
            out, _, rc = _run(transports[i], "cat; echo $0", stdin=f"{i}-{j}\n".encode())
            assert rc == 0
            results[i, j] = out

        threads = [threading.Thread(target=work, args=(i, j)) for i in range(3) for j in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert results == {
            (i, j): f"{i}-{j}\n/bin/sh\n".encode() for i in range(3) for j in range(4)
        }
    finally:
        for t in transports:
            t.close()


def test_wrong_key_refused(server):
    t = _transport(server)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_publickey("demo", paramiko.ECDSAKey.generate())
        assert not t.is_authenticated()
    finally:
        t.close()


def test_pty_and_shell_refused(server, client_key):
    t = _connect(server, client_key)
    try:
        chan = t.open_session(timeout=10)
        with pytest.raises(paramiko.SSHException):
            chan.get_pty()
        chan = t.open_session(timeout=10)
        with pytest.raises(paramiko.SSHException):
            chan.invoke_shell()
    finally:
        t.close()


class TestOneTimeCode:
    CODE = "424242"

    @pytest.fixture
    def otc_server(self, client_key):
        seen: list[str] = []
        with LoopbackServer(
            authorized_key=client_key, one_time_code=self.CODE, on_code_requested=seen.append
        ) as srv:
            yield srv, seen

    def test_key_then_code(self, otc_server, client_key):
        srv, seen = otc_server
        t = _transport(srv)
        try:
            assert t.auth_publickey("demo", client_key) == ["keyboard-interactive"]
            assert not t.is_authenticated()
            prompts_seen = []

            def handler(title, instructions, prompts):
                prompts_seen.extend(prompts)
                # The code is shown before the prompt arrives, like on a phone.
                return [seen[-1]]

            assert t.auth_interactive("demo", handler) == []
            assert t.is_authenticated()
            assert seen == [self.CODE]
            assert prompts_seen == [("One-time code: ", False)]
            assert _run(t, "echo ok") == (b"ok\n", b"", 0)
        finally:
            t.close()

    def test_wrong_code_fails(self, otc_server, client_key):
        srv, seen = otc_server
        t = _transport(srv)
        try:
            assert t.auth_publickey("demo", client_key) == ["keyboard-interactive"]
            with pytest.raises(paramiko.AuthenticationException):
                t.auth_interactive("demo", lambda title, instr, prompts: ["000000"])
            assert not t.is_authenticated()
            assert seen == [self.CODE]
        finally:
            t.close()

    def test_code_alone_is_not_enough(self, otc_server):
        srv, seen = otc_server
        t = _transport(srv)
        try:
            with pytest.raises(paramiko.AuthenticationException):
                t.auth_interactive("demo", lambda title, instr, prompts: [self.CODE])
            assert not t.is_authenticated()
            assert seen == []
        finally:
            t.close()

    def test_wrong_key_refused(self, otc_server):
        srv, _ = otc_server
        t = _transport(srv)
        try:
            with pytest.raises(paramiko.AuthenticationException):
                t.auth_publickey("demo", paramiko.ECDSAKey.generate())
        finally:
            t.close()


def test_32mib_cat_roundtrip(server, client_key):
    payload = os.urandom(32 * 1024 * 1024)
    t = _connect(server, client_key)
    try:
        chan = t.open_session(timeout=10)
        chan.settimeout(30)
        chan.exec_command("cat")
        start = time.monotonic()

        def send() -> None:
            view = memoryview(payload)
            while view:
                view = view[chan.send(view[: 1024 * 1024]) :]
            chan.shutdown_write()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = bytearray()
        while True:
            data = chan.recv(1024 * 1024)
            if not data:
                break
            received += data
        sender.join(10)
        assert chan.recv_exit_status() == 0
        elapsed = time.monotonic() - start
        assert len(received) == len(payload)
        assert received == payload
        assert elapsed < 30, elapsed
    finally:
        t.close()


def _info(t: paramiko.Transport, text: str,
          while_serving: Callable[[dict], object] = lambda info: None) -> dict:
    """``info()`` of the fleche server *text* starts; the server must end at EOF with status 0.

    *while_serving* is called with the answer before the server is told to end.
    """
    chan = t.open_session(timeout=10)
    chan.settimeout(30)
    chan.exec_command(text)
    request = cloudpickle.dumps(("info", (), {}))
    chan.sendall(_HEADER.pack(len(request)) + request)
    stream = chan.makefile("rb")
    (length,) = _HEADER.unpack(stream.read(_HEADER.size))
    status, info = cloudpickle.loads(stream.read(length))
    assert status == "ok"
    while_serving(info)
    chan.shutdown_write()  # EOF ends the serve loop
    assert chan.recv_exit_status() == 0
    return info


def test_fleche_remote_serve_info(server, client_key, tmp_path):
    t = _connect(server, client_key)
    try:
        info = _info(t, f"cd {shlex.quote(str(tmp_path))} && "
                        f"exec {shlex.quote(sys.executable)} -m fleche remote --serve")
        assert info["cwd"] == str(tmp_path)
        assert info["cache"]["values"]["type"] == "memory"
    finally:
        t.close()


# -- the command of an exec request: directly when fleche's own, else through a shell --------

HOME = os.path.expanduser("~")
HOSTILE = "a b'c\"d $(touch x) `y`; z\n&& w"


@pytest.mark.parametrize(("python", "cache_name", "workdir", "argv", "cwd"), [
    ("/v/bin/python", None, None,
     ("/v/bin/python", "-m", "fleche", "remote", "--serve"), None),
    ("python3", "shared", "/srv/work dir",
     ("python3", "-m", "fleche", "remote", "--serve", "--cache", "shared"), "/srv/work dir"),
    ("/v/bin/python", None, "~", ("/v/bin/python", "-m", "fleche", "remote", "--serve"), HOME),
    ("~/v/bin/python", "~/c", "~/my project",
     (f"{HOME}/v/bin/python", "-m", "fleche", "remote", "--serve", "--cache", f"{HOME}/c"),
     f"{HOME}/my project"),
    (f"/v/{HOSTILE}", HOSTILE, f"/w/{HOSTILE}",
     (f"/v/{HOSTILE}", "-m", "fleche", "remote", "--serve", "--cache", HOSTILE), f"/w/{HOSTILE}"),
    ("/v/bin/python", "&&", "~user", ("/v/bin/python", "-m", "fleche", "remote", "--serve",
                                      "--cache", "&&"), "~user"),
])
def test_fleche_server_commands_run_without_a_shell(python, cache_name, workdir, argv, cwd):
    text = server_command(python, cache_name, (), workdir)
    assert command.parse(text) == command.Direct(argv, cwd)


@pytest.mark.parametrize("text", [
    server_command("/v/bin/python", None, ["module load python"], "/w"),  # setup commands
    "echo hi; exit 3",
    "cat",
    "cd /w && exec /v/bin/python -m fleche remote --serve; touch x",
    "cd /w && exec /v/bin/python -m fleche remote --serve --cache",
    "/v/bin/python  -m fleche remote --serve",  # two spaces: not server_command's text
    "cd '~/w' && exec /v/bin/python -m fleche remote --serve",  # a literal ~: shell's business
    "cd $HOME && exec /v/bin/python -m fleche remote --serve",
    "/v/bin/python -m fleche remote --serve '",
    "",
])
def test_other_commands_need_the_shell(text):
    assert command.parse(text) is None


def test_fleche_server_runs_where_there_is_no_shell(client_key, tmp_path, monkeypatch):
    workdir = tmp_path / "a work dir"
    workdir.mkdir()
    monkeypatch.setattr(command, "SHELL", str(tmp_path / "no-such-shell"))
    with LoopbackServer(authorized_key=client_key) as srv:
        t = _connect(srv, client_key)
        try:
            groups = []
            info = _info(t, server_command(sys.executable, None, (), str(workdir)),
                         lambda info: groups.append(os.getpgid(info["pid"])))
            assert info["cwd"] == str(workdir)
            assert groups == [info["pid"]]  # its own process group, to stop what it starts
            chan = t.open_session(timeout=10)
            with pytest.raises(paramiko.SSHException):  # shell syntax, and no shell
                chan.exec_command("echo hi; exit 3")
        finally:
            t.close()


def test_a_fleche_server_that_cannot_start_reports_as_a_shell_would(server, client_key, tmp_path):
    t = _connect(server, client_key)
    try:
        missing = tmp_path / "no such python"
        out, err, rc = _run(t, server_command(str(missing), None, (), str(tmp_path)))
        assert (out, rc) == (b"", 127)
        assert b"not found" in err
    finally:
        t.close()


def test_stop_kills_children_and_closes_port(client_key):
    before = _children()
    srv = LoopbackServer(authorized_key=client_key).start()
    port = srv.port
    t = _connect(srv, client_key)
    pids = []
    for _ in range(2):
        chan = t.open_session(timeout=10)
        chan.settimeout(10)
        chan.exec_command("echo $$; sleep 60 & sleep 60")
        pids.append(int(chan.makefile("rb").readline()))
    assert set(pids) <= _children()
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 10
    assert _children() <= before
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    t.close()


def test_client_closing_channel_terminates_child(server, client_key):
    t = _connect(server, client_key)
    try:
        chan = t.open_session(timeout=10)
        chan.settimeout(10)
        chan.exec_command("echo $$; exec sleep 60")
        pid = int(chan.makefile("rb").readline())
        assert os.path.exists(f"/proc/{pid}")
        chan.close()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        t.close()


def test_instant_commands_do_not_race_the_exec_reply(server, client_key):
    # A command that exits at once must not get its CLOSE on the wire before
    # paramiko's reply to the exec request (the client would see "Channel closed").
    t = _connect(server, client_key)
    try:
        for _ in range(100):
            assert _run(t, "true") == (b"", b"", 0)
    finally:
        t.close()
