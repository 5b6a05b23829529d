"""Every way connecting can fail, against real servers: the type and what the message says.

Each message must name what failed (host, port, key, path) and say what to do;
every failure is a ``fleche.remote.RemoteConnectionError`` so code written for
the stock cache keeps catching it, and none of them hangs.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time

import pytest
import support as sshd_helpers
from fleche.remote import RemoteConnectionError, SshCache

from fleche_ssh import ParamikoCache
from fleche_ssh.errors import (
    AuthenticationError,
    ChangedHostKey,
    ConnectionRefused,
    ConnectTimeout,
    HostNotFound,
    ProtocolError,
    RemoteCommandError,
    UnknownHostKey,
)

pytestmark = pytest.mark.timeout(60)

FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def failure(cache: ParamikoCache, expected: type[BaseException]) -> str:
    """The message of the error the first operation raises, checked to be *expected*."""
    with pytest.raises(expected) as caught:
        cache.info()
    assert isinstance(caught.value, RemoteConnectionError)
    return str(caught.value)


@contextlib.contextmanager
def silent_listener():
    """A TCP port whose connections complete (the kernel accepts them) but never speak."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


# -- reaching the server ----------------------------------------------------------------


def test_unresolvable_host(make):
    message = failure(make(hostname="nonexistent.invalid"), HostNotFound)
    assert "'nonexistent.invalid'" in message
    assert "'testhost'" in message
    assert "HostName" in message and "spelling" in message


def test_refused_port(make):
    port = sshd_helpers.free_port()
    message = failure(make(port=port), ConnectionRefused)
    assert f"127.0.0.1 port {port}" in message
    assert "refused" in message
    assert "Check the port" in message


def test_silent_server_times_out(make):
    with silent_listener() as port:
        cache = make(port=port, connect_timeout=1)
        started = time.monotonic()
        message = failure(cache, ConnectTimeout)
        elapsed = time.monotonic() - started
    assert elapsed < 5
    assert f"127.0.0.1:{port}" in message
    assert "SSH server" in message


# -- host keys ----------------------------------------------------------------------------


def test_unknown_host_key(make, client_home, sshd):
    empty = client_home.ssh_dir / "empty_known_hosts"
    empty.write_text("")
    message = failure(make(known_hosts_file=str(empty)), UnknownHostKey)
    assert f"[127.0.0.1]:{sshd.port}" in message
    assert FINGERPRINT.search(message)
    assert str(empty) in message
    assert "ssh-keyscan" in message and "accept-new" in message
    assert empty.read_text() == ""


def test_changed_host_key(make, client_home, sshd, tmp_path):
    other = tmp_path / "other_host_key"
    public = sshd_helpers.make_client_key(other).split()
    assert public[0] == "ssh-ed25519"
    changed = client_home.ssh_dir / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {public[0]} {public[1]}\n")

    message = failure(make(known_hosts_file=str(changed)), ChangedHostKey)
    assert f"[127.0.0.1]:{sshd.port}" in message
    assert FINGERPRINT.search(message)
    assert f"{changed}:1" in message
    assert "ssh-keygen -R" in message
    assert changed.read_text().count("\n") == 1


# -- authentication -----------------------------------------------------------------------


def test_unknown_identity_is_refused(make, client_home, sshd, tmp_path):
    stranger = tmp_path / "stranger_key"
    sshd_helpers.make_client_key(stranger)
    # A config of its own: ~/.ssh/config would add the authorised key (IdentityFile adds up).
    bare_config = tmp_path / "ssh_config"
    bare_config.write_text("")
    cache = make(
        config_file=str(bare_config), hostname="127.0.0.1", port=sshd.port, user="root",
        identity_file=str(stranger), identities_only=True,
        known_hosts_file=str(client_home.known_hosts),
    )
    message = failure(cache, AuthenticationError)
    assert f"root@127.0.0.1:{sshd.port}" in message
    assert "Server offered: publickey" in message
    assert f"tried: publickey ({stranger})" in message
    assert "authorized_keys" in message


# -- the remote command --------------------------------------------------------------------


def test_missing_remote_python(make):
    message = failure(make(python="/nonexistent/python3"), RemoteCommandError)
    assert "not found" in message
    assert "exit status 127" in message
    assert "/nonexistent/python3" in message
    assert "remote stderr" in message
    assert "python=" in message


def test_remote_python_without_fleche(make, remote_python, tmp_path):
    # A new virtual environment: an interpreter on every machine that lacks fleche.
    bare = tmp_path / "bare-venv"
    subprocess.run([remote_python, "-m", "venv", "--without-pip", str(bare)], check=True,
                   capture_output=True, timeout=60)
    python = str(bare / "bin" / "python")
    probe = subprocess.run([python, "-I", "-c", "import fleche"], capture_output=True,
                           timeout=30)
    assert probe.returncode != 0, f"{python} imports fleche"
    message = failure(make(python=python), RemoteCommandError)
    assert "fleche is not installed" in message
    assert "No module named fleche" in message
    assert "pip install fleche" in message


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ({"setup_commands": ["false"]}, "exited with status 1 before the server started"),
        ({"workdir": "/nonexistent/fleche-workdir"}, "before the server started"),
    ],
    ids=["false", "missing-workdir"],
)
def test_failing_setup(make, keys, said):
    cache = make(**keys)
    message = failure(cache, RemoteCommandError)
    assert said in message
    assert "setup command or the cd into workdir failed" in message
    assert "remote command: cd " in message
    if "workdir" in keys:
        assert "/nonexistent/fleche-workdir" in message.split("remote stderr", 1)[1]

    # Nothing fixed: the next operation fails the same way, promptly.
    started = time.monotonic()
    again = failure(cache, RemoteCommandError)
    assert said in again
    assert time.monotonic() - started < 10


def test_stdout_pollution(make):
    started = time.monotonic()
    message = failure(make(setup_commands=["echo hello"]), ProtocolError)
    assert time.monotonic() - started < 10
    assert "stdout" in message
    assert "b'hello" in message
    assert ".bashrc" in message


def test_broken_remote_cache_config_shows_the_remote_traceback(make, remote_dir):
    with (remote_dir / "fleche.toml").open("a") as config:
        config.write('\n[broken]\ntype = "no-such-type"\n')
    message = failure(make(cache_name="broken"), RemoteCommandError)
    assert "exited with status 1" in message
    assert "--cache broken" in message
    stderr = message.split("remote stderr", 1)[1]
    assert "Traceback" in stderr
    assert "unknown cache type 'no-such-type'" in stderr.strip().splitlines()[-1]


def test_unknown_cache_name_is_served_as_stock_serves_it(make):
    # fleche itself serves an in-memory cache for a name its fleche.toml lacks.
    mine = make(cache_name="no_such_cache")
    stock = make(SshCache, cache_name="no_such_cache")
    assert mine.info()["cache"] == stock.info()["cache"]
    assert mine.info()["cache_name"] == "no_such_cache"
