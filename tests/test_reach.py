"""Reaching hosts the way clusters require: jump hosts, ProxyCommand, certificates, liveness.

Every server here is a real sshd on 127.0.0.1: two bastions that allow TCP
forwarding, the publickey target and the 2FA target of conftest.py, and a
target that trusts a user CA.  The bastions log at DEBUG1 so a test can see
that a connection really went through them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from support import sshd as sshd_helpers
from support.caches import wait_for

from fleche_ssh import ParamikoCache
from fleche_ssh.errors import AuthenticationError, ConfigError, RemoteConnectionError

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]


@pytest.fixture(scope="module")
def bastions(tmp_path_factory, client_key):
    servers = [
        sshd_helpers.start_sshd(
            tmp_path_factory.mktemp(f"bastion{i}"), authorized_keys=[client_key.public_line],
            allow_tcp_forwarding=True, extra_config=["LogLevel DEBUG1"],
        )
        for i in (1, 2)
    ]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def closed_bastion(tmp_path_factory, client_key):
    server = sshd_helpers.start_sshd(
        tmp_path_factory.mktemp("closed-bastion"), authorized_keys=[client_key.public_line],
        allow_tcp_forwarding=False,
    )
    yield server
    server.stop()


def host_block(alias: str, port: int, identity: Path, *extra: str) -> str:
    # Absolute paths, so that the ssh binary of a ProxyCommand reads the same files.
    lines = [f"Host {alias}", "    HostName 127.0.0.1", f"    Port {port}", "    User root",
             f"    IdentityFile {identity}", "    IdentitiesOnly yes",
             f"    UserKnownHostsFile {identity.parent / 'known_hosts'}",
             *(f"    {line}" for line in extra)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def cluster(client_home, bastions, closed_bastion):
    """client_home plus bastion hosts in its ssh config and known_hosts."""
    first, second = bastions
    with client_home.known_hosts.open("a") as f:
        for server in (first, second, closed_bastion):
            f.writelines(line + "\n" for line in server.known_hosts_lines(hashed=True))
    ident = client_home.identity
    blocks = [
        host_block("inner", client_home.sshd.port, ident, "ProxyJump bastion1"),
        host_block("inner2", client_home.sshd.port, ident, "ProxyJump bastion1,bastion2"),
        host_block("totp-inner", client_home.sshd_totp.port, ident, "ProxyJump bastion1"),
        host_block("blocked", client_home.sshd.port, ident, "ProxyJump closed"),
        host_block("loop-a", client_home.sshd.port, ident, "ProxyJump loop-b"),
        host_block("loop-b", first.port, ident, "ProxyJump loop-a"),
        host_block("bastion1", first.port, ident),
        host_block("bastion2", second.port, ident),
        host_block("closed", closed_bastion.port, ident),
        host_block("direct", client_home.sshd.port, ident, "ProxyJump none"),
        # A later pattern that would send "direct" through bastion2, but for its ProxyJump none.
        "Host dir* inner*\n    ProxyJump bastion2\n",
    ]
    with client_home.config.open("a") as f:
        f.write("\n" + "\n".join(blocks))
    return client_home


def log_end(server) -> int:
    """Where the server's log ends now: the lines after it are those of the calls that follow."""
    return server.log_path.stat().st_size


def logged(server, since: int, wanted: Callable[[str], bool]) -> list[str]:
    """The lines *wanted* picks from those the server logged after offset *since*.

    Waits up to 5 s for one: sshd's privilege-separated children log through
    their monitor, which may write a moment after the client goes on.
    """
    deadline = time.monotonic() + 5
    while True:
        with server.log_path.open("rb") as log:
            log.seek(since)
            found = [line for line in log.read().decode(errors="replace").splitlines()
                     if wanted(line)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def forwarded_through(server, port: int, since: int) -> bool:
    """The bastion logged, after offset *since*, a direct-tcpip request to 127.0.0.1:port."""
    return bool(logged(server, since, lambda line: "server_request_direct_tcpip: " in line
                       and line.endswith(f" target 127.0.0.1 port {port}")))


def cache(host, remote_python, remote_dir, **keys) -> ParamikoCache:
    return ParamikoCache(host=host, python=remote_python, workdir=str(remote_dir), **keys)


def test_one_hop_from_ssh_config(cluster, bastions, remote_python, remote_dir):
    c = cache("inner", remote_python, remote_dir)
    since = log_end(bastions[0])
    assert c.info()["cwd"] == str(remote_dir)
    target = c.target()
    assert target.jump is not None and target.jump.port == bastions[0].port
    assert forwarded_through(bastions[0], cluster.sshd.port, since)


def test_two_hops_and_a_shared_bastion(cluster, bastions, remote_python, remote_dir, pool):
    deep = cache("inner2", remote_python, remote_dir)
    since = [log_end(bastion) for bastion in bastions]
    assert deep.contains("0" * 64) is False
    chain = []
    hop = deep.target().jump
    while hop is not None:
        chain.append(hop.port)
        hop = hop.jump
    assert chain == [bastions[1].port, bastions[0].port]
    assert forwarded_through(bastions[0], bastions[1].port, since[0])
    assert forwarded_through(bastions[1], cluster.sshd.port, since[1])

    before = {s.target for s in pool.sessions()}
    shallow = cache("inner", remote_python, remote_dir)
    assert shallow.contains("0" * 64) is False
    new_sessions = {s.target for s in pool.sessions()} - before
    assert [t.port for t in new_sessions] == [cluster.sshd.port]  # bastion1 was reused


def test_the_snapshot_shows_the_jump_host_in_use(cluster, bastions, remote_python, remote_dir,
                                                 pool):
    c = cache("inner", remote_python, remote_dir)
    assert c.contains("0" * 64) is False
    target = c.target()
    entries = {entry.target: entry for entry in pool.snapshot()}
    assert set(entries) == {target.label, target.jump.label}
    inner, bastion = entries[target.label], entries[target.jump.label]
    assert (inner.via, bastion.via) == (target.jump.label, None)
    assert inner.channels == 1  # the remote server
    assert bastion.channels == 1  # the channel carrying the inner connection
    assert bastion.idle == inner.idle == 0

    c.close()
    assert wait_for(lambda: [e.channels for e in pool.snapshot()
                             if e.target == target.label] == [0])
    # The inner login is still up, so the bastion still carries it.
    assert [e.channels for e in pool.snapshot() if e.target == target.jump.label] == [1]


def test_jump_from_the_proxy_jump_key_and_ssh_options(cluster, bastions, remote_python,
                                                      remote_dir):
    by_key = cache("direct", remote_python, remote_dir, proxy_jump="bastion1")
    assert by_key.target().jump.port == bastions[0].port
    assert by_key.info()["cwd"] == str(remote_dir)

    by_flag = cache("direct", remote_python, remote_dir, ssh_options=["-J", "bastion2"])
    assert by_flag.target().jump.port == bastions[1].port
    assert by_flag.info()["cwd"] == str(remote_dir)


def test_proxy_jump_none_stops_inheritance(cluster, remote_python, remote_dir):
    direct = cache("direct", remote_python, remote_dir)
    assert direct.target().jump is None
    assert direct.info()["cwd"] == str(remote_dir)


def test_two_factor_behind_a_bastion_asks_once(cluster, remote_python, remote_dir):
    asked = []

    def handler(title, instructions, prompts):
        asked.append([text for text, _ in prompts])
        return [cluster.sshd_totp.code() for _ in prompts]

    first = cache("totp-inner", remote_python, remote_dir, prompt=handler)
    second = cache("totp-inner", remote_python, remote_dir, prompt=handler, channels=2)
    assert first.info()["cwd"] == str(remote_dir)
    assert second.info()["cwd"] == str(remote_dir)
    assert len(asked) == 1 and "One-time password" in asked[0][0]


def test_a_hop_that_refuses_forwarding(cluster, closed_bastion, remote_python, remote_dir):
    with pytest.raises(RemoteConnectionError) as refused:
        cache("blocked", remote_python, remote_dir).info()
    message = str(refused.value)
    assert f"127.0.0.1:{closed_bastion.port}" in message
    assert "AllowTcpForwarding" in message


def test_a_loop_is_refused_with_the_chain(cluster, remote_python, remote_dir):
    with pytest.raises(ConfigError) as refused:
        cache("loop-a", remote_python, remote_dir).target()
    assert "loop-a" in str(refused.value) and "loop-b" in str(refused.value)


def test_proxy_command_with_tokens(cluster, bastions, remote_python, remote_dir):
    command = (f"ssh -F {cluster.config} -o BatchMode=yes -o ProxyJump=none "
               f"-W %h:%p bastion1")
    c = cache("direct", remote_python, remote_dir, ssh_options=["-o", f"ProxyCommand={command}"])
    since = log_end(bastions[0])
    assert c.info()["cwd"] == str(remote_dir)
    assert forwarded_through(bastions[0], cluster.sshd.port, since)


def test_proxy_command_failure_shows_its_stderr(cluster, remote_python, remote_dir):
    c = cache("direct", remote_python, remote_dir,
              proxy_command="echo proxy-went-wrong-%h 1>&2; exit 3")
    with pytest.raises(RemoteConnectionError) as failed:
        c.info()
    assert "proxy-went-wrong-127.0.0.1" in str(failed.value)


def test_compression(cluster, remote_python, remote_dir, pool):
    c = cache("direct", remote_python, remote_dir, ssh_options=["-C"])
    assert c.contains("0" * 64) is False
    transport = pool.get(c.target()).transport
    assert transport.local_compression.startswith("zlib")
    assert c.target().compression is True


@pytest.fixture(scope="module")
def ca_target(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ca")
    ca = folder / "user_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True,
                   timeout=30)
    server = sshd_helpers.start_sshd(folder / "sshd", authorized_keys=[],
                                     trusted_user_ca_keys=ca.with_suffix(".pub"))
    yield ca, server
    server.stop()


def accepted_certificates(server, since: int) -> list[str]:
    """sshd's "Accepted certificate" lines after offset *since*: ID, serial and CA file."""
    found = logged(server, since, lambda line: line.startswith("Accepted certificate ID "))
    return [re.sub(r" signed by \S+ CA \S+", "", line.removeprefix("Accepted certificate "))
            for line in found]


def test_user_certificate_signed_by_a_ca(client_home, ca_target, remote_python, remote_dir, pool):
    ca, server = ca_target
    key = client_home.ssh_dir / "id_cert_user"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   timeout=30)
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "test-user", "-n", "root",
                    "-V", "+1h", str(key.with_suffix(".pub"))], check=True, timeout=30)
    known = client_home.ssh_dir / "ca_known_hosts"
    known.write_text("".join(line + "\n" for line in server.known_hosts_lines(hashed=True)))

    base = dict(hostname="127.0.0.1", port=server.port, user="root", identity_file=str(key),
                identities_only=True, known_hosts_file=str(known))
    with_cert = cache("ca-target", remote_python, remote_dir, **base)
    since = log_end(server)
    assert with_cert.info()["cwd"] == str(remote_dir)
    assert accepted_certificates(server, since) == [f'ID "test-user" (serial 0) via {ca}.pub']

    pool.close_all()
    Path(f"{key}-cert.pub").rename(client_home.ssh_dir / "elsewhere-cert.pub")
    without = cache("ca-target", remote_python, remote_dir, **base)
    with pytest.raises(AuthenticationError):
        without.info()
    pool.close_all()
    explicit = cache("ca-target", remote_python, remote_dir, **base,
                     certificate_file=str(client_home.ssh_dir / "elsewhere-cert.pub"))
    since = log_end(server)
    assert explicit.info()["cwd"] == str(remote_dir)
    assert accepted_certificates(server, since) == [f'ID "test-user" (serial 0) via {ca}.pub']


def _connection_processes(listener_pid: int) -> list[int]:
    """sshd's per-connection processes under the listener (not the remote python)."""
    found = subprocess.run(["pgrep", "-P", str(listener_pid)], capture_output=True, text=True,
                           timeout=10, check=False)
    return [int(pid) for pid in found.stdout.split()]


@pytest.fixture
def frozen_target(tmp_path, client_key):
    server = sshd_helpers.start_sshd(tmp_path / "freeze", authorized_keys=[client_key.public_line])
    yield server
    for pid in _connection_processes(server.process.pid):
        os.kill(pid, signal.SIGCONT)
    server.stop()


@pytest.mark.parametrize("method", ["evict", "contains"])
def test_a_frozen_server_fails_the_call_in_flight(client_home, frozen_target, remote_python,
                                                  remote_dir, method, caplog):
    """Keepalives end the call in bounded time: a write fails, a read is sent again."""
    with client_home.known_hosts.open("a") as f:
        f.writelines(line + "\n" for line in frozen_target.known_hosts_lines(hashed=True))
    c = cache("frozen", remote_python, remote_dir, hostname="127.0.0.1", port=frozen_target.port,
              user="root", server_alive_interval=1, server_alive_count_max=2)
    assert c.contains("0" * 64) is False
    pids = _connection_processes(frozen_target.process.pid)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)

    outcome: dict[str, object] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            outcome["value"] = getattr(c, method)("1" * 64)
        except RemoteConnectionError as e:
            outcome["error"] = e
        outcome["took"] = time.monotonic() - started

    worker = threading.Thread(target=call)
    with caplog.at_level("INFO", logger="fleche_ssh"):
        worker.start()
        worker.join(30)
    assert not worker.is_alive(), "the call hung on a frozen server"
    retried = [r for r in caplog.records if "retrying it once" in r.getMessage()]
    if method == "evict":
        assert isinstance(outcome.get("error"), RemoteConnectionError)
        assert outcome["took"] <= 1 * 2 + 2
        assert "keepalive" in str(outcome["error"])
        assert retried == []
    else:
        # A new connection (sshd's listener is not frozen) and a new remote server.
        assert outcome.get("value") is False
        assert outcome["took"] <= 1 * 2 + 2 + 10
        assert len(retried) == 1 and "'contains'" in retried[0].getMessage()

    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    c.reconnect()
    assert c.contains("0" * 64) is False


def test_tcp_keepalive_is_on(client_home, remote_python, remote_dir, pool):
    c = cache("testhost", remote_python, remote_dir)
    c.contains("0" * 64)
    sock = pool.get(c.target()).transport.sock
    import socket

    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert isinstance(pool.get(c.target()).transport, paramiko.Transport)
