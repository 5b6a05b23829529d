"""A live OpenSSH ControlMaster, logged in once with a one-time code, reused by fleche-ssh.

The master is a real ``ssh -M`` against the real pam_oath TOTP sshd; its
code is typed once (through SSH_ASKPASS).  Everything fleche-ssh then does
through it must ask nothing and log in nowhere: sshd's log shows one login.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import cloudpickle
import pytest
from conftest import TOTP_HOST, _require
from fleche.remote import RemoteConnectionError
from support import openssh_master
from support.caches import wait_for

from fleche_ssh.errors import PromptUnavailable
from fleche_ssh.wire.command import server_command
from fleche_ssh.wire.frames import encode_frame
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


def _start(totp, config, where, **kw) -> openssh_master.OpenSshMaster:
    before = logins(totp)
    started = openssh_master.start_master(config, TOTP_HOST, totp.code, where, **kw)
    # sshd may write the master's own login line a moment after ssh -f returns.
    assert wait_for(lambda: logins(totp) == before + 1)
    return started


@pytest.fixture(scope="module")
def shared_master(sshd_totp, client_key):
    """One master for the tests that only use it: each login costs a fresh one-time code."""
    place = openssh_master.short_dir()
    known_hosts = place / "known_hosts"
    known_hosts.write_text("".join(line + "\n" for line in sshd_totp.known_hosts_lines()))
    config = place / "config"
    config.write_text(
        f"Host {TOTP_HOST}\n    HostName 127.0.0.1\n    Port {sshd_totp.port}\n    User root\n"
        f"    IdentityFile {client_key.path}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts}\n    StrictHostKeyChecking yes\n")
    started = _start(sshd_totp, config, place)
    yield started
    started.stop()
    openssh_master.remove_dir(place)


@pytest.fixture
def master(shared_master, client_home):
    """The shared master, alive, with the test's client home set up."""
    assert shared_master.alive()
    return shared_master


@pytest.fixture
def own_master(client_home, where):
    """A master of this test's own, for a test that kills it."""
    yield _start(client_home.sshd_totp, client_home.config, where)


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


# -- ParamikoCache through the master -------------------------------------------------------


def remote_files(remote_dir) -> set[str]:
    return {str(p.relative_to(remote_dir)) for p in remote_dir.rglob("*") if p.is_file()}


def code_answers(totp, asked: list[str]):
    """A prompt handler that types a fresh code, counting the questions."""
    def answer(title, instructions, prompts):
        asked.extend(question for question, _ in prompts)
        return [totp.code() for _ in prompts]
    return answer


def test_a_cache_works_through_the_master_asking_nothing(master, make, client_home, remote_dir,
                                                         caplog):
    server = client_home.sshd_totp
    before = logins(server)
    cache = make(host=TOTP_HOST, control_path=master.socket, prompt="none",
                 setup_commands=["echo started-through-the-master >&2"])
    with caplog.at_level(logging.INFO):
        assert cache.info()["cwd"] == str(remote_dir)
        value = os.urandom(32 << 20)
        assert cache.load_value(cache._rpc("save_value", value)) == value
    assert master.asks() == 1
    assert logins(server) == before
    assert f"through the OpenSSH master (pid {master.pid}" in caplog.text
    # The remote server's stderr reaches the per-host logger, as over Paramiko.
    assert wait_for(lambda: "started-through-the-master" in caplog.text)


def test_control_path_from_ssh_config_with_the_connection_hash(client_home, where, make,
                                                               remote_dir):
    totp = client_home.sshd_totp
    pattern = str(where / "cm-%C")
    config = client_home.ssh_dir / "config"
    config.write_text(config.read_text().replace(
        f"Host {TOTP_HOST}\n", f"Host {TOTP_HOST}\n    ControlPath {pattern}\n"))
    expected = subprocess.run(["ssh", "-G", "-F", str(config), TOTP_HOST], capture_output=True,
                              text=True, check=True).stdout
    (path,) = [line.split(" ", 1)[1] for line in expected.splitlines()
               if line.startswith("controlpath ")]
    started = _start(totp, config, where, socket_name=os.path.basename(path))
    try:
        cache = make(host=TOTP_HOST, prompt="none")
        assert cache.target().control_paths == (path,)  # as ssh -G expands it
        assert cache.info()["cwd"] == str(remote_dir)
        assert started.asks() == 1
    finally:
        started.stop()


@pytest.mark.parametrize("spelling", ["-S", "-o"])
def test_control_path_from_ssh_options(master, make, spelling, remote_dir):
    options = ["-S", master.socket] if spelling == "-S" else ["-o", f"ControlPath={master.socket}"]
    cache = make(host=TOTP_HOST, ssh_options=options, prompt="none")
    assert cache.info()["cwd"] == str(remote_dir)
    assert master.asks() == 1


def test_a_stale_socket_means_an_ordinary_login(make, where, remote_dir, fresh_pool):
    path = str(where / "stale.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.close()
    cache = make(control_path=path)  # the publickey-only test host
    assert cache.info()["cwd"] == str(remote_dir)
    assert cache.target() in fresh_pool  # logged in itself


def test_control_path_none_means_our_own_login(master, make, client_home, remote_dir):
    server = client_home.sshd_totp
    before = logins(server)
    asked: list[str] = []
    config = client_home.ssh_dir / "config"
    config.write_text(config.read_text().replace(
        f"Host {TOTP_HOST}\n", f"Host {TOTP_HOST}\n    ControlPath {master.socket}\n"))
    cache = make(host=TOTP_HOST, control_path="none", prompt=code_answers(server, asked))
    assert cache.info()["cwd"] == str(remote_dir)
    assert len(asked) == 1  # its own login, with its own code
    assert wait_for(lambda: logins(server) == before + 1)


def test_a_foreign_socket_is_refused_naming_it(master, make):
    _require_root()
    os.chown(master.socket, pwd.getpwnam("nobody").pw_uid, -1)
    try:
        cache = make(host=TOTP_HOST, control_path=master.socket, prompt="none")
        with pytest.raises(UntrustedSocket, match=master.socket):
            cache.info()
    finally:
        os.chown(master.socket, os.getuid(), -1)


def test_a_master_killed_mid_transfer_fails_typed_stores_nothing_then_falls_back(
        own_master, make, client_home, remote_dir):
    master = own_master
    cache = make(host=TOTP_HOST, control_path=master.socket, prompt="none")
    assert cache.info()["cwd"] == str(remote_dir)
    before = remote_files(remote_dir)
    value = os.urandom(256 << 20)
    outcome: list[BaseException] = []

    def save() -> None:
        try:
            cache._rpc("save_value", value)
        except BaseException as e:
            outcome.append(e)

    import threading

    saver = threading.Thread(target=save)
    saver.start()
    time.sleep(0.3)  # the upload is under way
    os.kill(master.pid, signal.SIGKILL)
    saver.join(30)
    assert not saver.is_alive()
    (error,) = outcome
    assert isinstance(error, RemoteConnectionError)
    assert "save_value" in str(error)
    time.sleep(1)
    assert remote_files(remote_dir) == before  # nothing partial stored

    # The next call: no master any more, and no one to type a code.
    with pytest.raises(PromptUnavailable) as refused:
        cache.info()
    assert "no OpenSSH master listens at" in "\n".join(refused.value.__notes__)

    # With someone to answer, fleche-ssh logs in itself and carries on.
    asked: list[str] = []
    fallback = make(host=TOTP_HOST, control_path=master.socket,
                    prompt=code_answers(client_home.sshd_totp, asked))
    assert fallback.info()["cwd"] == str(remote_dir)
    assert len(asked) == 1


def test_check_says_it_goes_through_the_master_and_asks_nothing(master, remote_dir,
                                                               remote_python):
    result = subprocess.run(
        [sys.executable, "-m", "fleche_ssh.cli", "check", TOTP_HOST, "-S", master.socket,
         "--prompt", "none", "--python", remote_python, "--workdir", str(remote_dir)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(rf"^ +through +OpenSSH master pid {master.pid} \(ssh -O check\)", out, re.M)
    assert re.search(rf"^ +control socket +{re.escape(master.socket)}$", out, re.M)
    assert re.search(rf"^ +channel through +the OpenSSH master \(pid {master.pid}\) at "
                     rf"{re.escape(master.socket)}$", out, re.M), out
    assert re.search(r"^ +skipped +the OpenSSH master .* is connected", out, re.M), out
    assert re.search(r"^ +median of \d+ contains\(\)", out, re.M)
    assert master.asks() == 1
