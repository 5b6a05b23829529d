"""What is negotiated and how the socket is made, against real sshd servers.

Each algorithm list is checked as the one the server agreed to: sshd at
``LogLevel DEBUG1`` logs the key exchange, host key, cipher and MAC it
chose, and the client's transport says the same.  The connect-side
keywords are checked where they show: the source address in sshd's log
(``BindAddress``, and ``BindInterface`` beside the ``ssh`` binary's own), a
port that starts listening late (``ConnectionAttempts``), the socket's
options (``TCPKeepAlive``) and a ProxyCommand that hands over a connected
socket (``ProxyUseFdpass``).
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from support import sshd as sshd_helpers
from support.keys import hash_known_host, known_hosts_entry
from support.processes import HOST, free_port
from test_reach import log_end, logged

from fleche_ssh.config.target import resolve
from fleche_ssh.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionRefused,
    HostNotFound,
    UnsupportedByParamiko,
)
from fleche_ssh.ssh import interfaces
from fleche_ssh.ssh.connect import open_socket

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]


@pytest.fixture(scope="module")
def chatty(tmp_path_factory, client_key):
    """An sshd that logs what it negotiated (DEBUG1), with ed25519 and ecdsa host keys."""
    server = sshd_helpers.start_sshd(tmp_path_factory.mktemp("chatty"),
                                     authorized_keys=[client_key.public_line],
                                     extra_config=["LogLevel DEBUG1"])
    yield server
    server.stop()


@pytest.fixture
def on_chatty(make, client_home, chatty):
    """``on_chatty(**keys)``: a cache on the chatty server, whose host keys are known."""
    with client_home.known_hosts.open("a") as f:
        f.writelines(line + "\n" for line in chatty.known_hosts_lines(hashed=True))

    def build(**keys):
        return make(hostname=HOST, port=chatty.port, **keys)

    return build


def negotiated(server, since: int) -> dict[str, str]:
    """What sshd says it agreed to, after log offset *since*: kex, host key, cipher, MAC."""
    found: dict[str, str] = {}
    for line in logged(server, since, lambda line: "kex: client->server cipher:" in line):
        cipher, mac = re.search(r"cipher: (\S+) MAC: (\S+)", line).groups()
        found.update(cipher=cipher, mac=mac)
    for name in ("algorithm", "host key algorithm"):
        for line in logged(server, since, lambda line, n=name: f"kex: {n}: " in line):
            found[name] = line.split(f"kex: {name}: ", 1)[1].split()[0]
    return found


@pytest.mark.parametrize(("keys", "expected"), [
    ({"ciphers": "aes256-ctr"}, {"cipher": "aes256-ctr"}),
    ({"ciphers": "+aes256-ctr"}, {"cipher": "aes128-gcm@openssh.com", "mac": "<implicit>"}),
    ({"ciphers": "aes128-ctr", "macs": "hmac-sha2-512"},
     {"cipher": "aes128-ctr", "mac": "hmac-sha2-512"}),
    ({"ciphers": "aes128-ctr", "macs": "^hmac-sha2-256-etm@openssh.com"},
     {"mac": "hmac-sha2-256-etm@openssh.com"}),
    ({"kex_algorithms": "ecdh-sha2-nistp384"}, {"algorithm": "ecdh-sha2-nistp384"}),
    ({"kex_algorithms": "-curve25519*,mlkem*,ecdh-sha2-nistp256"},
     {"algorithm": "ecdh-sha2-nistp384"}),
    ({"host_key_algorithms": "ecdsa-sha2-nistp256"},
     {"host key algorithm": "ecdsa-sha2-nistp256"}),
    # A plain list is the user's order; known_hosts holding both keys does not change it.
    ({"host_key_algorithms": "ecdsa-sha2-nistp256,ssh-ed25519"},
     {"host key algorithm": "ecdsa-sha2-nistp256"}),
    ({"host_key_algorithms": "-ecdsa-sha2-nistp521"}, {"host key algorithm": "ssh-ed25519"}),
], ids=lambda v: ",".join(f"{k}={v}" for k, v in v.items()) if isinstance(v, dict) else v)
def test_the_list_set_is_the_one_negotiated(on_chatty, chatty, pool, keys, expected):
    since = log_end(chatty)
    cache = on_chatty(**keys)
    assert cache.contains("0" * 64) is False
    agreed = negotiated(chatty, since)
    assert {k: agreed.get(k) for k in expected} == expected
    transport = pool.get(cache.target()).transport
    if "cipher" in expected:
        assert transport.local_cipher == transport.remote_cipher == expected["cipher"]
    if expected.get("mac", "<implicit>") != "<implicit>":
        assert transport.local_mac == transport.remote_mac == expected["mac"]
    if "host key algorithm" in expected:
        assert pool.get(cache.target()).host_key.startswith(expected["host key algorithm"])


def test_a_key_of_a_kind_not_accepted_is_never_offered(on_chatty, chatty):
    since = log_end(chatty)
    refused = on_chatty(pubkey_accepted_algorithms="ecdsa-sha2-nistp256")
    with pytest.raises(AuthenticationError) as failed:
        refused.info()
    assert "tried: nothing" in str(failed.value)
    assert logged(chatty, since, lambda line: "for user root service ssh-connection method "
                                              "none" in line)
    assert not logged(chatty, since, lambda line: "method publickey" in line)

    accepted = on_chatty(pubkey_accepted_algorithms="ssh-ed25519*")
    since = log_end(chatty)
    assert accepted.contains("0" * 64) is False
    assert logged(chatty, since, lambda line: line.startswith("Accepted publickey for root"))


@pytest.fixture(scope="module")
def rsa_only(tmp_path_factory, client_key):
    """An old server: one RSA host key, offered only as ssh-rsa (SHA-1)."""
    folder = tmp_path_factory.mktemp("rsa-only")
    key = folder / "ssh_host_rsa_key"
    sshd_helpers.run_tool(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f",
                           str(key)], timeout=60)
    server = sshd_helpers.start_sshd(folder, authorized_keys=[client_key.public_line],
                                     extra_config=[f"HostKey {key}",
                                                   "HostKeyAlgorithms ssh-rsa"])
    yield server
    server.stop()


def test_asking_for_ssh_rsa_from_an_old_server_points_to_type_ssh(make, client_home,
                                                                    rsa_only):
    config = client_home.ssh_dir / "config"
    with config.open("a") as f:
        f.write(f"\nHost old\n    HostName {HOST}\n    Port {rsa_only.port}\n    User root\n"
                "    HostKeyAlgorithms +ssh-rsa\n")
    with pytest.raises(UnsupportedByParamiko) as failed:
        make(host="old").info()
    message = str(failed.value)
    assert "Paramiko 5 has no SHA-1" in message and 'type = "ssh"' in message
    assert f"HostKeyAlgorithms ({config}:" in message


# --- the socket -----------------------------------------------------------------------------


def test_bind_address_is_the_source_sshd_sees(make, sshd, pool):
    since = log_end(sshd)
    cache = make(bind_address="127.0.0.2")
    assert cache.contains("0" * 64) is False
    assert pool.get(cache.target()).transport.sock.getsockname()[0] == "127.0.0.2"
    assert logged(sshd, since, lambda line: line.startswith("Accepted publickey for root from "
                                                            "127.0.0.2 port "))


def test_a_bind_address_that_is_not_ours_fails_naming_it(make):
    with pytest.raises(ConnectionRefused, match=re.escape("BindAddress 192.0.2.7")):
        make(bind_address="192.0.2.7").info()


def test_bind_interface_connects_from_the_address_ssh_connects_from(make, sshd, pool,
                                                                    client_home):
    # ssh prefers an address of lo other than 127.0.0.1, and lo's one IPv4 address is that.
    def source(since: int) -> list[str]:
        return [line.split(" from ")[1].split()[0] for line in logged(
            sshd, since, lambda line: line.startswith("Accepted publickey for root from "))]

    since = log_end(sshd)
    cache = make(bind_interface="lo")
    assert cache.contains("0" * 64) is False
    assert pool.get(cache.target()).transport.sock.getsockname()[0] == "127.0.0.1"
    assert source(since) == ["127.0.0.1"]
    since = log_end(sshd)
    done = subprocess.run(["ssh", *client_home.ssh_options_for_stock(), "-o", "BindInterface=lo",
                           "testhost", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert source(since) == ["127.0.0.1"]


@pytest.mark.parametrize(("address", "skipped"), [
    ("127.0.0.1", True), ("127.0.0.2", False), ("192.0.2.2", False),
    ("::1", True), ("fe80::1%eth0", True), ("fd00::2", False)])
def test_bind_interface_skips_the_addresses_ssh_skips_while_it_has_others(address, skipped):
    assert interfaces.skipped_as_local(address) is skipped


def test_bind_address_wins_over_bind_interface(make, sshd, pool):
    cache = make(bind_address="127.0.0.2", bind_interface="no-such-if0")
    assert cache.contains("0" * 64) is False
    assert pool.get(cache.target()).transport.sock.getsockname()[0] == "127.0.0.2"


def test_a_bind_interface_that_is_not_there_fails_naming_it(make):
    with pytest.raises(ConnectionRefused, match="BindInterface no-such-if0: this machine has "
                                                "no network interface of that name"):
        make(bind_interface="no-such-if0").info()


def test_bind_interface_off_linux_says_to_set_bind_address(monkeypatch, tmp_path):
    config = tmp_path / "config"
    config.write_text("Host far\n    BindInterface en0\n")
    target = resolve("far", config_file=str(config))
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(ConfigError, match=re.escape(f"{config}:2: BindInterface en0: ") +
                       ".*only on Linux. Set BindAddress to the address of en0 instead"):
        open_socket(target)


def _relay_later(port: int, to: int, delay: float) -> threading.Thread:
    """After *delay* s, listen on *port* and relay one connection to sshd on *to*."""
    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        time.sleep(delay)
        with socket.create_server((HOST, port)) as listener:
            listener.settimeout(30)
            client, _ = listener.accept()
        upstream = socket.create_connection((HOST, to), timeout=10)
        upstream.settimeout(None)
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    thread = threading.Thread(target=serve, name="late-relay", daemon=True)
    thread.start()
    return thread


@pytest.fixture
def late_port(client_home, sshd) -> int:
    """A free port, whose host key (sshd's, through a relay) known_hosts holds."""
    port = free_port()
    with client_home.known_hosts.open("a") as f:
        for line in sshd.known_hosts_lines(hashed=False):
            _, key = line.split(" ", 1)
            f.write(f"{hash_known_host(known_hosts_entry(HOST, port))} {key}\n")
    return port


def test_connection_attempts_reach_a_port_that_opens_late(make, sshd, late_port):
    relay = _relay_later(late_port, sshd.port, 1.5)
    started = time.monotonic()
    cache = make(port=late_port, connection_attempts=4)
    assert cache.contains("0" * 64) is False
    assert 1.0 <= time.monotonic() - started < 30
    cache.close()
    relay.join(10)


def test_one_attempt_gives_up_at_once(make, late_port):
    started = time.monotonic()
    with pytest.raises(ConnectionRefused, match=f"port {late_port} refused"):
        make(port=late_port).info()
    assert time.monotonic() - started < 5


def test_tcp_keep_alive_no_leaves_the_kernel_probes_off(make, pool):
    cache = make(tcp_keep_alive=False)
    assert cache.contains("0" * 64) is False
    sock = pool.get(cache.target()).transport.sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_address_family_limits_the_addresses_tried(make):
    assert make(address_family="inet").contains("0" * 64) is False
    with pytest.raises(HostNotFound, match=r"as inet6 \(AddressFamily\)"):
        make(address_family="inet6").info()


# A ProxyCommand as ``ssh -o ProxyUseFdpass=yes`` runs it: connect, pass the socket, exit.
PASS_FD = """\
import socket, sys
connected = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
out = socket.socket(fileno=1)
socket.send_fds(out, [b"\\0"], [connected.fileno()])
"""


def test_proxy_use_fdpass_runs_ssh_on_the_socket_the_command_passes(make, sshd, pool,
                                                                     tmp_path):
    script = tmp_path / "pass_fd.py"
    script.write_text(PASS_FD)
    cache = make(proxy_command=f"{sys.executable} {script} %h %p", proxy_use_fdpass=True)
    assert cache.contains("0" * 64) is False
    session = pool.get(cache.target())
    assert session.proxy is None  # no process between us and sshd
    assert session.transport.sock.getpeername() == (HOST, sshd.port)


def test_a_proxy_that_passes_nothing_fails_with_its_stderr(make):
    cache = make(proxy_command="echo no-socket-here 1>&2; exit 4", proxy_use_fdpass=True)
    with pytest.raises(ConnectionRefused) as failed:
        cache.info()
    assert "exited with status 4 without passing a socket" in str(failed.value)
    assert "no-socket-here" in str(failed.value)

