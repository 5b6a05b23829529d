"""Shared fixtures: real OpenSSH servers on 127.0.0.1 and a throwaway client home.

* ``sshd``        (session) publickey-only server; ``Sshd`` from ``tests/sshd.py``.
* ``sshd_totp``   (session) publickey + keyboard-interactive (real pam_oath TOTP) server.
* ``client_key``  (session) the ed25519 client key both servers authorise.
* ``pool``        (function) the process's connection pool, emptied before and after.
* ``client_home`` (function) ``$HOME`` with ``.ssh/{id_ed25519,known_hosts,config}``.
* ``remote_dir``  (function) a remote workdir whose ``fleche.toml`` serves an on-disk cache.
* ``remote_python`` the interpreter the remote side runs (this venv's ``sys.executable``).

Tests needing a server never skip silently in CI: with ``CI`` set, missing
packages fail the test instead of skipping it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import support as sshd_helpers
from support.caches import CacheFactory

TEST_HOST = "testhost"
TOTP_HOST = "totphost"


def _require(missing: list[str], what: str) -> None:
    """Skip locally, fail in CI, when the Debian packages for *what* are missing."""
    if not missing:
        return
    reason = (
        f"{what} needs Debian package(s) {', '.join(missing)} "
        f"(apt-get install openssh-server openssh-client libpam-oath oathtool; see .ci/run)"
    )
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set, so not skipping: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class ClientKey:
    path: Path
    public_line: str

    @property
    def pub_path(self) -> Path:
        return self.path.with_name(self.path.name + ".pub")


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> ClientKey:
    """ed25519 client key without passphrase, generated once per session."""
    _require([m for m in sshd_helpers.missing_sshd_tools() if m == "openssh-client"], "ssh-keygen")
    path = tmp_path_factory.mktemp("client-key") / "id_ed25519"
    return ClientKey(path=path, public_line=sshd_helpers.make_client_key(path))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory, client_key):
    """A publickey-only sshd on 127.0.0.1 authorising ``client_key``."""
    _require(sshd_helpers.missing_sshd_tools(), "the sshd fixture")
    server = sshd_helpers.start_sshd(
        tmp_path_factory.mktemp("sshd"), authorized_keys=[client_key.public_line]
    )
    try:
        yield server
    finally:
        server.stop()


@dataclass
class TotpServer:
    """The 2FA sshd plus its secret; ``code()`` gives a fresh, never-replayed code."""

    server: sshd_helpers.Sshd
    secret_hex: str
    codes: sshd_helpers.TotpCodes = field(repr=False)

    def code(self) -> str:
        """A code pam_oath will accept for the next login (one per login: no replays)."""
        return self.codes()

    def wrong_code(self) -> str:
        return self.codes.wrong()

    # Convenience pass-throughs so it can be used like an ``Sshd``.
    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def known_hosts_lines(self, hashed: bool = True) -> list[str]:
        return self.server.known_hosts_lines(hashed)

    def log_text(self) -> str:
        return self.server.log_text()


@pytest.fixture(scope="session")
def sshd_totp(tmp_path_factory, client_key):
    """sshd demanding ``publickey,keyboard-interactive``; the second factor is pam_oath TOTP."""
    _require(sshd_helpers.missing_totp_tools(), "the sshd_totp fixture")
    secret = secrets.token_hex(20)
    server = sshd_helpers.start_sshd(
        tmp_path_factory.mktemp("sshd-totp"),
        authorized_keys=[client_key.public_line],
        totp_secret_hex=secret,
    )
    try:
        yield TotpServer(server=server, secret_hex=secret, codes=sshd_helpers.TotpCodes(secret))
    finally:
        server.stop()


@dataclass
class ClientHome:
    home: Path
    ssh_dir: Path
    config: Path
    known_hosts: Path
    identity: Path
    sshd: sshd_helpers.Sshd
    sshd_totp: TotpServer | None

    def ssh_options_for_stock(self) -> list[str]:
        """Options for the ``ssh`` binary (stock ``fleche.remote.SshCache``).

        OpenSSH reads ``~`` from the passwd entry, not ``$HOME``, so the config is
        passed explicitly; ``BatchMode`` keeps it from ever prompting.
        """
        return ["-F", str(self.config), "-o", "BatchMode=yes"]


def _host_block(alias: str, port: int) -> str:
    return (
        f"Host {alias}\n"
        "    HostName 127.0.0.1\n"
        f"    Port {port}\n"
        "    User root\n"
        "    IdentityFile ~/.ssh/id_ed25519\n"
        "    IdentitiesOnly yes\n"
        "    UserKnownHostsFile ~/.ssh/known_hosts\n"
        "    StrictHostKeyChecking yes\n"
    )


@pytest.fixture
def client_home(tmp_path, monkeypatch, client_key, sshd, request) -> ClientHome:
    """A throwaway ``$HOME`` whose ``.ssh`` reaches ``testhost`` (and ``totphost``).

    ``$HOME`` is monkeypatched and ``SSH_AUTH_SOCK`` removed so the developer's own
    keys/agent never take part.  The TOTP host block is only written when the
    TOTP server can run (its fixture is requested lazily).
    """
    totp: TotpServer | None = None
    if not sshd_helpers.missing_totp_tools():
        totp = request.getfixturevalue("sshd_totp")

    home = tmp_path / "home"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True)
    ssh_dir.chmod(0o700)
    identity = ssh_dir / "id_ed25519"
    shutil.copyfile(client_key.path, identity)
    identity.chmod(0o600)
    identity.with_name("id_ed25519.pub").write_text(client_key.public_line + "\n")

    known_hosts = ssh_dir / "known_hosts"
    lines = sshd.known_hosts_lines(hashed=True)
    if totp is not None:
        lines += totp.known_hosts_lines(hashed=True)
    known_hosts.write_text("".join(ln + "\n" for ln in lines))
    known_hosts.chmod(0o600)

    # Absolute paths too, for the stock ssh binary which expands ``~`` from passwd.
    blocks = [_host_block(TEST_HOST, sshd.port)]
    if totp is not None:
        blocks.append(_host_block(TOTP_HOST, totp.port))
    text = "\n".join(blocks).replace("~/.ssh", str(ssh_dir))
    config = ssh_dir / "config"
    config.write_text(text)
    config.chmod(0o600)

    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("SSH_AGENT_PID", raising=False)
    return ClientHome(
        home=home,
        ssh_dir=ssh_dir,
        config=config,
        known_hosts=known_hosts,
        identity=identity,
        sshd=sshd,
        sshd_totp=totp,
    )


@pytest.fixture
def remote_dir(tmp_path) -> Path:
    """Remote workdir: ``fleche.toml`` with on-disk caches ``remote`` (default) and ``readonly``."""
    return sshd_helpers.write_remote_workdir(tmp_path / "remote")


@pytest.fixture(scope="session")
def remote_python() -> str:
    """Interpreter for the remote side: this venv's (sshd's PATH python3 lacks fleche)."""
    return sys.executable


@pytest.fixture
def pool():
    """The process's connection pool, empty: no pooled transport, no remembered key.

    Each test using it logs in from scratch and leaves no login behind.
    """
    from fleche_ssh.ssh.pool import POOL

    POOL.close_all()
    POOL.forget_keys()
    yield POOL
    POOL.close_all()
    POOL.forget_keys()


@pytest.fixture
def fresh_pool(pool):
    """:func:`pool` for modules whose tests count logins or prompts.

    Use it as ``pytestmark = pytest.mark.usefixtures("fresh_pool")``.
    """
    return pool


@pytest.fixture
def make(client_home, remote_dir, remote_python, pool):
    """``make(**keys)``: a cache on ``testhost``; all closed, then the pool emptied, after the test.

    It uses :func:`pool`, so a test taking both sees its caches closed before the
    transports under them.
    """
    with CacheFactory(client_home, remote_dir, remote_python) as build:
        yield build


@pytest.fixture
def relayed(client_home):
    """``relayed(server, rate=None)``: a :class:`~support.relay.DelayRelay` in front of *server*.

    The relay stands for the network: a test drops and restores it.  Its port
    is added to known_hosts with the server's keys.  *server* is an ``Sshd``
    or the TOTP fixture that wraps one; *rate* caps the bytes per second.
    """
    from support.keys import hash_known_host, known_hosts_entry
    from support.relay import DelayRelay

    relays: list[DelayRelay] = []

    def start(server: object, rate: float | None = None) -> DelayRelay:
        server = getattr(server, "server", server)
        relay = DelayRelay(server.port, rate=rate).start()
        relays.append(relay)
        entry = known_hosts_entry(server.host, relay.port)
        with client_home.known_hosts.open("a") as f:
            f.writelines(f"{hash_known_host(entry)} {pub}\n"
                         for pub in server.host_public_keys.values())
        return relay

    yield start
    for relay in relays:
        relay.stop()
