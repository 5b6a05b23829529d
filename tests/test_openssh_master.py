"""A live OpenSSH ControlMaster, logged in once with a one-time code, reused by fleche-ssh.

The master is a real ``ssh -M`` against the real pam_oath TOTP sshd; its
code is typed once (through SSH_ASKPASS).  Everything fleche-ssh then does
through it must ask nothing and log in nowhere: sshd's log shows one login.
"""

from __future__ import annotations

import os
import pwd
import socket
import struct
import subprocess
import sys
import time

import cloudpickle
import pytest
from conftest import TOTP_HOST, _require
from support import openssh_master
from support.caches import wait_for

from fleche_ssh.wire.channel import encode_frame, server_command
from fleche_ssh.wire.openssh_master import MasterError, MasterProcess, find_master
from fleche_ssh.wire.unix import UntrustedSocket, connect_owned

pytestmark = pytest.mark.timeout(120)


def logins(server) -> int:
    return server.log_text().count("Accepted keyboard-interactive")


@pytest.fixture
def where():
    path = openssh_master.short_dir()
    yield path
    openssh_master.remove_dir(path)


@pytest.fixture
def master(client_home, where):
    totp = client_home.sshd_totp
    if totp is None:
        _require(["libpam-oath/oathtool"], "the OpenSSH master tests")
    before = logins(totp)
    started = openssh_master.start_master(client_home.config, TOTP_HOST, totp.code, where)
    # sshd may write the master's own login line a moment after ssh -f returns.
    assert wait_for(lambda: logins(totp) == before + 1)
    yield started
    started.stop()


def call(process: MasterProcess, method: str, *args):
    header, body = encode_frame((method, args, {}))
    assert process.send_all(memoryview(header + body))
    head = bytearray(4)
    assert process.recv_exactly(memoryview(head)) == 4
    (size,) = struct.unpack(">I", head)
    answer = bytearray(size)
    assert process.recv_exactly(memoryview(answer)) == size
    return cloudpickle.loads(answer)


def test_the_master_is_found_with_the_pid_ssh_reports(master):
    found = find_master(master.socket)
    assert found is not None
    assert found.pid == master.pid


def test_a_remote_server_runs_through_the_master_without_a_second_login(
        master, client_home, remote_dir):
    server = client_home.sshd_totp
    before = logins(server)
    process = MasterProcess(find_master(master.socket),
                            server_command(sys.executable, None, (), str(remote_dir)))
    try:
        tag, info = call(process, "info")
        assert tag == "ok" and "fleche_version" in info
        tag, ref = call(process, "save_value", b"through the master")
        assert tag == "ok"
        assert call(process, "load_value", ref) == ("ok", b"through the master")
        process.shutdown_write()
        assert process.exit_status(10) == 0
    finally:
        process.kill()
    assert master.asks() == 1  # the master's own login, nothing since
    assert logins(server) == before  # no new authentication on the server


def test_a_large_value_and_the_servers_stderr_come_through(master, remote_dir):
    command = server_command(sys.executable, None,
                             ("echo from-setup-on-stderr >&2",), str(remote_dir))
    process = MasterProcess(find_master(master.socket), command)
    try:
        value = os.urandom(48 << 20)
        tag, ref = call(process, "save_value", value)
        assert tag == "ok"
        assert call(process, "load_value", ref) == ("ok", value)
        assert process.recv_stderr(4096).startswith(b"from-setup-on-stderr")
    finally:
        process.kill()


def test_a_stale_socket_means_no_master(where):
    path = str(where / "stale.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.close()  # the socket file stays, nobody listens: a killed master's leftover
    assert os.path.exists(path)
    assert find_master(path) is None


def test_no_socket_means_no_master(where):
    assert find_master(str(where / "missing.sock")) is None


def _require_root() -> None:
    if os.geteuid() != 0:
        _require(["root (to create a socket owned by another user)"], "the foreign-socket tests")


def test_a_socket_owned_by_another_user_is_refused_before_connecting(master):
    _require_root()
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(master.socket, nobody, -1)
    try:
        with pytest.raises(UntrustedSocket, match=f"uid {nobody}"):
            find_master(master.socket)
    finally:
        os.chown(master.socket, os.getuid(), -1)


def test_a_symlink_to_a_socket_is_refused(master, where):
    link = where / "link.sock"
    link.symlink_to(master.socket)
    with pytest.raises(UntrustedSocket, match="symlink"):
        find_master(str(link))


def test_a_listener_of_another_user_is_refused_by_the_kernels_word(where):
    """A socket file that looks like ours, but another uid listens on it: the peer check refuses.

    This is the race a path check alone cannot close: the listener is a
    process of ``nobody``; the socket file is then made to look like ours.
    """
    _require_root()
    path = str(where / "squat.sock")
    where.chmod(0o777)
    nobody = pwd.getpwnam("nobody")
    # The system interpreter (python3-venv's dependency): nobody cannot enter /root's venv.
    system_python = "/usr/bin/python3"
    if not os.access(system_python, os.X_OK):
        _require([system_python], "the squatting-listener test")
    squatter = subprocess.Popen(
        [system_python, "-c",
         "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
         "s.listen(); print('ready', flush=True); c,_=s.accept(); "
         "c.settimeout(5); print('got', repr(c.recv(100)), flush=True)", path],
        user=nobody.pw_uid, group=nobody.pw_gid, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert squatter.stdout.readline().strip() == "ready"
        os.chown(path, os.getuid(), os.getgid())  # looks like ours now
        with pytest.raises(UntrustedSocket, match=f"uid {nobody.pw_uid}"):
            connect_owned(path, 5.0)
        out, _ = squatter.communicate(timeout=10)
        assert out.strip() == "got b''"  # it learnt nothing: not a byte was sent
    finally:
        squatter.kill()
        squatter.wait()


def test_something_that_is_not_a_master_gives_a_clear_error(where):
    path = str(where / "not-a-master.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()

    def answer_junk() -> None:
        conn, _ = listener.accept()
        conn.recv(100)
        conn.sendall(struct.pack(">II", 8, 0x12345678) + b"\0\0\0\0")
        time.sleep(0.5)
        conn.close()

    import threading

    threading.Thread(target=answer_junk, daemon=True).start()
    with pytest.raises(MasterError, match="answered hello with 0x12345678"):
        find_master(path)
    listener.close()
