"""The real-server fixtures work, checked with real tools only (ssh, sshd, paramiko, fleche)."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import fleche
import paramiko
from fleche.remote import SshCache
from support.agent import start_agent
from support.keys import make_client_key
from support.sshd import start_sshd


def test_sshd_banner_and_host_keys(sshd):
    assert sshd.alive
    assert sshd.banner.startswith("SSH-2.0-OpenSSH")
    assert set(sshd.host_public_keys) == {"ssh-ed25519", "ecdsa-sha2-nistp256"}
    # Our hand-built lines agree with the real ssh-keyscan.
    assert sorted(sshd.known_hosts_lines(hashed=False)) == sorted(sshd.keyscan_lines(hashed=False))
    for line in sshd.known_hosts_lines(hashed=True):
        assert line.startswith("|1|")


def test_hashed_known_hosts_accepted_by_ssh_keygen(client_home, sshd):
    out = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(client_home.known_hosts)],
        capture_output=True, text=True, timeout=10,
    )
    assert out.returncode == 0, out.stderr
    assert "ssh-ed25519" in out.stdout and "ecdsa-sha2-nistp256" in out.stdout


def test_stock_ssh_binary_runs_remote_python(client_home, remote_python):
    out = subprocess.run(
        ["ssh", *client_home.ssh_options_for_stock(), "testhost",
         remote_python, "-c", "'import fleche, os; print(fleche.__name__, os.getuid())'"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["fleche", "0"]


def test_stock_sshcache_round_trip(client_home, remote_dir, remote_python):
    cache = SshCache(
        host="testhost",
        python=remote_python,
        workdir=str(remote_dir),
        ssh_options=tuple(client_home.ssh_options_for_stock()),
    )
    try:
        info = cache.info()
        assert info["cwd"] == str(remote_dir)
        assert info["python"] == remote_python or info["python"].startswith(sys.prefix)
        assert info["read_only"] is False

        calls = []

        @fleche.fleche
        def square(x):
            calls.append(x)
            return x * x

        with fleche.cache(cache):
            assert square(7) == 49
            assert square(7) == 49
        assert calls == [7]
        # Persisted on the remote's disk, where the server's fleche.toml put it.
        assert any((remote_dir / "calls").iterdir())
        assert any((remote_dir / "values").iterdir())
    finally:
        cache.close()

    # A fresh server process (new ssh) sees the same on-disk cache, read-only too.
    ro = SshCache(
        host="testhost",
        cache_name="readonly",
        python=remote_python,
        workdir=str(remote_dir),
        ssh_options=tuple(client_home.ssh_options_for_stock()),
    )
    try:
        assert ro.read_only
        with fleche.cache(ro):
            assert square(7) == 49
        assert calls == [7]
    finally:
        ro.close()


def test_client_home_isolates_environment(client_home):
    import os

    assert os.environ["HOME"] == str(client_home.home)
    assert "SSH_AUTH_SOCK" not in os.environ
    assert (client_home.identity.stat().st_mode & 0o777) == 0o600
    cfg = paramiko.SSHConfig.from_path(str(client_home.config)).lookup("testhost")
    assert cfg["hostname"] == "127.0.0.1"
    assert int(cfg["port"]) == client_home.sshd.port
    assert cfg["user"] == "root"


def _totp_login(port: int, key_path, answer: str) -> tuple[list[str], bool]:
    key = paramiko.Ed25519Key.from_private_key_file(str(key_path))
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.start_client(timeout=10)
        remaining = transport.auth_publickey("root", key)

        def handler(title, instructions, prompts):
            return [answer] if len(prompts) == 1 else []

        with contextlib.suppress(paramiko.AuthenticationException):
            transport.auth_interactive("root", handler)
        return remaining, transport.is_authenticated()
    finally:
        transport.close()


def test_totp_server_accepts_fresh_code(sshd_totp, client_key):
    remaining, ok = _totp_login(sshd_totp.port, client_key.path, sshd_totp.code())
    assert remaining == ["keyboard-interactive"]
    assert ok, sshd_totp.log_text()[-2000:]


def test_totp_server_rejects_wrong_code(sshd_totp, client_key):
    remaining, ok = _totp_login(sshd_totp.port, client_key.path, sshd_totp.wrong_code())
    assert remaining == ["keyboard-interactive"]
    assert not ok


def test_totp_pam_service_is_private(sshd_totp):
    pam = sshd_totp.server.pam_service
    assert pam is not None and pam.exists()
    assert "pam_oath.so" in pam.read_text()
    assert oct((sshd_totp.server.workdir / "users.oath").stat().st_mode & 0o777) == "0o600"


def test_stop_removes_pam_file_and_process(tmp_path, client_key, sshd_totp):
    # (sshd_totp requested only for its fail-in-CI / skip-locally tool check)
    server = start_sshd(
        tmp_path / "s", authorized_keys=[client_key.public_line], totp_secret_hex="00" * 20
    )
    pam = server.pam_service
    assert pam is not None and pam.exists()
    server.stop()
    assert not pam.exists()
    assert not server.alive


def test_agent_holds_key(tmp_path):
    key = tmp_path / "k"
    pub = make_client_key(key, passphrase="s3cret")
    agent = start_agent(tmp_path / "agent")
    try:
        agent.add(key, passphrase="s3cret")
        assert [ln.split()[1] for ln in agent.list_keys()] == [pub.split()[1]]
        assert set(agent.env) == {"SSH_AUTH_SOCK"}
    finally:
        agent.stop()
