"""A login shared over the client-holder protocol, against the real sshd servers.

The holder runs in this process and each local connection is a plain
socketpair (the local endpoint and its peer checks are tested in their own
module), so these tests are about what crosses: the request, the
questions of a login and their answers, the host keys a joining process
checks, raw frames, stderr, exit status, and errors kept typed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from fleche.call import Call
from support.caches import wait_for
from support.keys import hash_known_host, known_hosts_entry
from support.relay import DelayRelay

from fleche_ssh import ParamikoCache
from fleche_ssh.errors import ConnectionRefused, PromptUnavailable, UnknownHostKey
from fleche_ssh.share import protocol
from fleche_ssh.share.client import SharedProcess, open_shared
from fleche_ssh.share.holder import Grant, Holder
from fleche_ssh.share.protocol import ShareError, VersionMismatch
from fleche_ssh.ssh.session import Login
from fleche_ssh.wire.server import RemoteServer

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]

SECRET = os.urandom(32)


class Pairs:
    """``connect`` for a client: each call a socketpair whose other end the holder serves."""

    def __init__(self, holder: Holder) -> None:
        self.holder = holder
        self.ends: list[socket.socket] = []

    def __call__(self, address: str, timeout: float) -> socket.socket:
        mine, theirs = socket.socketpair()
        self.ends.append(theirs)
        threading.Thread(target=self.holder.handle, args=(theirs,), daemon=True).start()
        return mine


def forwarding(pool) -> Holder:
    """A holder whose logins ask the client (the background holder's way)."""
    return Holder(pool, lambda nonce, given: Grant() if protocol.proves(SECRET, nonce, given)
                  else None)


def through(cache: ParamikoCache, connect, secret: bytes = SECRET) -> ParamikoCache:
    """*cache* with its channels opened through the holder behind *connect*."""
    target = cache.target()

    def opener(command: str) -> SharedProcess:
        process = open_shared("test", secret, target, command, cache.login(target), connect)
        assert process is not None
        return process

    object.__setattr__(cache, "_conn", RemoteServer(cache, opener=opener))
    return cache


def test_a_cache_works_through_the_holder_and_large_frames_cross_untouched(make, pool):
    connect = Pairs(forwarding(pool))
    cache = through(make(), connect)
    value = os.urandom(8 << 20)
    key = cache.save(Call(name="big", arguments={"x": 1}, result=value))
    assert cache.load(key).result == value
    assert cache.info()["pid"] > 0
    assert len(pool) == 1  # the holder's pool logged in once, for the client
    cache.close()


def test_a_wrong_secret_is_refused_with_a_typed_error(make, pool):
    cache = through(make(), Pairs(forwarding(pool)), secret=os.urandom(32))
    with pytest.raises(ShareError, match="did not prove"):
        cache.info()
    assert len(pool) == 0  # refused before any login


@pytest.mark.parametrize(("hello", "message"), [
    ({"t": "hello", "version": 99, "nonce": "00"}, "protocol 99"),
    ({**protocol.hello()[0], "fields": "0" * 16}, "other options"),
], ids=["another protocol version", "other options"])
def test_a_holder_of_another_version_is_told_apart(make, hello, message):
    def other_holder(address: str, timeout: float) -> socket.socket:
        mine, theirs = socket.socketpair()
        protocol.send(theirs, hello)
        return mine

    cache = make()
    target = cache.target()
    with pytest.raises(VersionMismatch, match=message):
        open_shared("other", SECRET, target, "true", cache.login(target), other_holder)


def test_a_listener_closing_before_its_hello_counts_as_none_listening(make):
    """A killed holder's socket accepts for a moment after its process stopped serving it."""
    def dying(address: str, timeout: float) -> socket.socket:
        mine, theirs = socket.socketpair()
        theirs.close()
        return mine

    cache = make()
    target = cache.target()
    assert open_shared("dying", SECRET, target, "true", cache.login(target), dying) is None


def test_the_questions_of_a_login_reach_the_client_and_only_it(client_home, remote_dir,
                                                               remote_python, pool):
    asked = []

    def answer(title, instructions, prompts):
        asked.append([text for text, _ in prompts])
        return [client_home.sshd_totp.code() for _ in prompts]

    connect = Pairs(forwarding(pool))
    cache = through(ParamikoCache(host="totphost", python=remote_python,
                                  workdir=str(remote_dir), prompt=answer), connect)
    second = through(ParamikoCache(host="totphost", python=remote_python,
                                   workdir=str(remote_dir), prompt="none"), connect)
    try:
        assert cache.info()["cwd"] == str(remote_dir)
        assert second.info()["cwd"] == str(remote_dir)  # rides the login: asks nothing
    finally:
        cache.close()
        second.close()
    assert len(asked) == 1 and "One-time password" in asked[0][0]


def test_a_client_that_cannot_ask_fails_fast_quoting_the_question(client_home, remote_dir,
                                                                  remote_python, pool):
    cache = through(ParamikoCache(host="totphost", python=remote_python,
                                  workdir=str(remote_dir), prompt="none"),
                    Pairs(forwarding(pool)))
    started = time.monotonic()
    with pytest.raises(PromptUnavailable, match="One-time password"):
        cache.info()
    assert time.monotonic() - started < 10
    assert len(pool) == 0


def test_the_holders_error_arrives_as_its_own_type(make, pool):
    from support.processes import free_port

    cache = through(make(port=free_port()), Pairs(forwarding(pool)))
    with pytest.raises(ConnectionRefused, match="refused the connection"):
        cache.info()


def test_a_stricter_joining_process_refuses_a_login_its_known_hosts_lacks(client_home, make,
                                                                         pool):
    connect = Pairs(forwarding(pool))
    first = through(make(), connect)
    assert first.info()["pid"] > 0
    # The login is held; this process's known_hosts now lacks the key.
    client_home.known_hosts.write_text("")
    joining = through(make(), connect)
    with pytest.raises(UnknownHostKey, match="not in known_hosts") as caught:
        joining.info()
    assert "checked by this process" in "\n".join(caught.value.__notes__)
    first.close()


def test_stderr_and_the_exit_status_come_back(make, pool):
    cache = make()
    target = cache.target()
    process = open_shared("test", SECRET, target, "echo from-stderr >&2; exit 3",
                          cache.login(target), Pairs(forwarding(pool)))
    assert process is not None
    assert process.recv_stderr(1024) == b"from-stderr\n"
    assert process.recv_stderr(1024) == b""
    assert process.exit_status(5) == 3
    assert process.connection_alive()
    process.kill()


def _holder_gone(make, pool) -> ParamikoCache:
    """A cache whose channel runs through a holder, then the holder's side of it dies."""
    connect = Pairs(forwarding(pool))
    cache = through(make(), connect)
    assert cache.info()["pid"] > 0
    for end in connect.ends:  # the holder's side of every local connection dies
        end.shutdown(socket.SHUT_RDWR)
    return cache


def test_a_holder_gone_mid_save_is_a_typed_error_within_a_bound(make, pool, client_home, sshd):
    # A rate-capped link under the holder's login keeps the save under way for seconds.
    relay = DelayRelay(sshd.port, rate=8e6).start()
    try:
        entry = hash_known_host(known_hosts_entry(sshd.host, relay.port))
        with client_home.known_hosts.open("a") as f:
            f.writelines(f"{entry} {pub}\n" for pub in sshd.host_public_keys.values())
        connect = Pairs(forwarding(pool))
        cache = through(make(port=relay.port), connect)
        server = cache.info()["pid"]
        call = Call(name="share.gone", arguments={}, result=os.urandom(32 << 20))
        failed: list[BaseException] = []

        def save() -> None:
            try:
                cache.save(call)
            except protocol.RemoteConnectionError as e:
                failed.append(e)

        baseline = _read_by(server)
        worker = threading.Thread(target=save, daemon=True)
        worker.start()
        assert wait_for(lambda: _read_by(server) - baseline >= 1 << 20, 30)  # under way
        assert worker.is_alive()
        for end in connect.ends:  # the holder's side of every local connection dies
            end.shutdown(socket.SHUT_RDWR)
        started = time.monotonic()
        worker.join(10)
        assert not worker.is_alive() and time.monotonic() - started < 10
        assert len(failed) == 1  # a write is never sent twice
        assert cache.contains(call.to_lookup_key()) is False  # nothing was stored
    finally:
        relay.stop()


def _read_by(pid: int) -> int:
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return next(int(v) for k, v in (ln.split(": ") for ln in lines) if k == "rchar")


def test_a_read_the_holder_dies_under_is_answered_on_a_new_channel(make, pool):
    cache = _holder_gone(make, pool)
    started = time.monotonic()
    # Retried once on a new channel, the read reaches the remote cache, which answers
    # that it has no such value: an answer, not a lost connection.
    with pytest.raises(KeyError):
        cache.load_value("0" * 64)
    assert time.monotonic() - started < 10


def test_no_login_without_a_proof_means_no_hello_leak(make, pool):
    """The hello carries a nonce only: nothing a squatter could replay as a proof."""
    hello, nonce = protocol.hello()
    assert set(hello) == {"t", "version", "fields", "nonce"}
    assert protocol.proves(SECRET, nonce, protocol.proof(SECRET, nonce))
    assert not protocol.proves(SECRET, os.urandom(32), protocol.proof(SECRET, nonce))
    assert SECRET.hex() not in protocol.proof(SECRET, nonce)


def test_login_of_applies_batch_mode(make):
    target = make(batch_mode=True).target()
    login = Login.of("auto", 5.0, target)
    assert not login.can_ask


def test_a_channel_past_the_servers_max_sessions_is_refused_naming_it(make, pool):
    """The test sshd allows 50 sessions per connection (MaxSessions 50)."""
    cache = make()
    target = cache.target()
    connect = Pairs(forwarding(pool))
    opened = []
    try:
        for _ in range(50):
            process = open_shared("test", SECRET, target, "sleep 30", cache.login(target),
                                  connect)
            assert process is not None
            opened.append(process)
        with pytest.raises(protocol.RemoteConnectionError, match="MaxSessions"):
            open_shared("test", SECRET, target, "sleep 30", cache.login(target), connect)
    finally:
        for process in opened:
            process.kill()
