"""Coming back after a network drop, against the real sshd fixtures through a relay.

The relay (:class:`support.relay.DelayRelay`) stands for the network a
laptop loses when it sleeps or changes Wi-Fi: dropped, nothing listens
and the open connections go silent (or are cut); restored, the same port
listens again and the old connections are reset when next used.

What must hold: a read after the network came back is sent once more on a
new login, asking nothing on a publickey host and exactly one new code on
the TOTP host; a save across the drop fails with the typed error, is not
repeated, and leaves nothing partial; a cache that cannot ask gets
:class:`~fleche_ssh.errors.LoginLost`.  Every wait is bounded.

Keepalives are set far apart (``server_alive_interval = 300``) where a test
needs the drop to go unnoticed until the next call, as after a short sleep:
a probe sent into the silence would make the relay reset the connection on
restore, and the call would then log in again without needing a retry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from fleche.call import Call
from fleche.digest import digest
from support.caches import wait_for
from support.totp import TOTP_STEP

from fleche_ssh.errors import ConnectionLost, ConnectionRefused, LoginLost, PromptUnavailable

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]

#: Bound on a call that fails, or on a call that has to log in again.
PROMPT = 20.0
#: ... with a one-time code, which may wait for the next step (pam_oath refuses replays).
WITH_CODE = PROMPT + TOTP_STEP
QUIET = 300
RETRY = "retrying it once on a new connection"


class Codes:
    """A prompt handler giving one fresh TOTP code per question, counting the questions."""

    def __init__(self, code: Callable[[], str]) -> None:
        self.code = code
        self.asked: list[str] = []

    def __call__(self, title: str, instructions: str, prompts: list[tuple[str, bool]]
                 ) -> list[str]:
        self.asked.extend(text for text, _ in prompts)
        return [self.code() for _ in prompts]


def never(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
    raise AssertionError(f"asked {prompts!r}, on a host that needs no answer")


def logins(server) -> int:
    return server.log_text().count("Accepted publickey")


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if RETRY in r.getMessage()]


def timed(operation: Callable[[], object], bound: float = PROMPT) -> object:
    started = time.monotonic()
    result = operation()
    assert time.monotonic() - started < bound
    return result


def remote_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def io_read(pid: int) -> int:
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return next(int(v) for k, v in (ln.split(": ") for ln in lines) if k == "rchar")


@pytest.mark.parametrize("idle", [True, False], ids=["on-its-channel", "opening-a-channel"])
def test_a_read_after_the_network_comes_back_is_retried_asking_nothing(
        make, sshd, relayed, pool, caplog, idle):
    relay = relayed(sshd)
    cache = make(port=relay.port, prompt=never, server_alive_interval=QUIET)
    value = os.urandom(1 << 20)
    cache.save(Call(name="resume.read", arguments={}, result=value))
    lost = pool.get(cache.target())
    if not idle:
        cache.close()  # the next call opens a channel: the dead login is found by that
        time.sleep(0.5)  # the channel's last messages cross before the network drops
    assert wait_for(lambda: logins(sshd) > 0)
    logged_in = logins(sshd)

    relay.drop()
    relay.restore()
    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        assert timed(lambda: cache.load_value(digest(value))) == value

    assert retries(caplog) == [f"connection to testhost lost during 'load_value'; {RETRY}"]
    assert pool.get(cache.target()) is not lost
    assert wait_for(lambda: logins(sshd) == logged_in + 1)


def test_a_save_the_network_drops_under_is_not_retried(make, sshd, relayed, remote_dir, caplog):
    relay = relayed(sshd)
    cache = make(port=relay.port, prompt=never, server_alive_interval=QUIET)
    pid = cache.info()["pid"]
    value = os.urandom(64 << 20)
    call = Call(name="resume.save", arguments={}, result=value)
    before = remote_files(remote_dir)
    assert wait_for(lambda: logins(sshd) > 0)
    logged_in = logins(sshd)
    outcome: dict[str, object] = {}

    def save() -> None:
        try:
            outcome["key"] = cache.save(call)
        except ConnectionLost as e:
            outcome["error"] = e

    baseline = io_read(pid)
    worker = threading.Thread(target=save, daemon=True)
    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        worker.start()
        assert wait_for(lambda: io_read(pid) - baseline >= 2 << 20)  # under way
        relay.drop()
        time.sleep(0.3)
        assert worker.is_alive()  # stuck in the silence, as over a dead link
        relay.restore()
        worker.join(PROMPT)
    assert not worker.is_alive(), "the save hung after the network came back"
    assert "key" not in outcome
    message = str(outcome["error"])
    assert "connection was lost during 'save'" in message
    assert "a save or an evict is never repeated by itself" in message
    assert retries(caplog) == []
    assert logins(sshd) == logged_in  # not sent again: no new login for it

    # Nothing partial was stored; the next call logs in again by itself.
    with pytest.raises(KeyError):
        cache.load_value(digest(value))
    assert not [name for name in remote_files(remote_dir) - before if name.endswith(".tmp")]
    assert wait_for(lambda: logins(sshd) == logged_in + 1)
    assert cache.save(call) and cache.load_value(digest(value)) == value


def test_calls_while_the_network_is_cut_fail_typed_and_the_next_one_after_works(
        make, sshd, relayed, pool, caplog):
    relay = relayed(sshd)
    cache = make(port=relay.port, prompt=never)
    key = cache.save(Call(name="resume.cut", arguments={}, result=b"kept"))

    relay.drop(cut=True)
    # Once the cut is noticed (a call sent before that fails as in the test above).
    assert wait_for(lambda: not pool.get(cache.target()).alive())
    with caplog.at_level(logging.INFO, logger="fleche_ssh"), \
            pytest.raises(ConnectionRefused) as refused:
        timed(lambda: cache.save(Call(name="resume.cut", arguments={"n": 2}, result=b"x")))
    assert f"port {relay.port} refused the connection" in str(refused.value)
    assert refused.value.__notes__[-1].startswith("The connection to testhost was lost (")
    assert not [r for r in retries(caplog) if "'save'" in r]
    with pytest.raises(ConnectionRefused):
        timed(lambda: cache.load(key))

    relay.restore()
    assert timed(lambda: cache.load(key)).result == b"kept"
    with pytest.raises(KeyError):
        cache.load_value(digest(b"x"))  # the refused save stored nothing


def test_a_lost_two_factor_login_asks_exactly_one_new_code(make, sshd_totp, relayed, caplog):
    relay = relayed(sshd_totp)
    codes = Codes(sshd_totp.code)
    cache = make(host="totphost", port=relay.port, prompt=codes, server_alive_interval=QUIET)
    value = os.urandom(1 << 16)
    cache.save(Call(name="resume.totp", arguments={}, result=value))
    assert len(codes.asked) == 1

    relay.drop()
    relay.restore()
    with caplog.at_level(logging.INFO, logger="fleche_ssh"):
        assert timed(lambda: cache.load_value(digest(value)), WITH_CODE) == value

    assert len(codes.asked) == 2 and "One-time password" in codes.asked[1]
    assert retries(caplog) == [f"connection to totphost lost during 'load_value'; {RETRY}"]


def test_threads_coming_back_together_share_one_new_code(make, sshd_totp, relayed):
    relay = relayed(sshd_totp)
    codes = Codes(sshd_totp.code)
    cache = make(host="totphost", port=relay.port, prompt=codes, channels=4,
                 server_alive_interval=QUIET)
    values = [os.urandom(1 << 12) for _ in range(4)]
    for n, value in enumerate(values):
        cache.save(Call(name="resume.threads", arguments={"n": n}, result=value))
    assert len(codes.asked) == 1

    relay.drop()
    relay.restore()
    got: dict[int, object] = {}

    def load(n: int) -> None:
        got[n] = cache.load_value(digest(values[n]))

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WITH_CODE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert got == dict(enumerate(values))
    assert len(codes.asked) == 2  # one login for all four


def test_a_cache_that_cannot_ask_is_told_its_login_was_lost(make, sshd_totp, relayed):
    relay = relayed(sshd_totp)
    codes = Codes(sshd_totp.code)
    keys = {"host": "totphost", "port": relay.port, "server_alive_interval": QUIET}
    notebook = make(prompt=codes, **keys)
    batch = make(prompt="none", **keys)
    notebook.info()
    assert batch.contains("0" * 64) is False  # on the login the notebook made
    assert len(codes.asked) == 1

    relay.drop()
    relay.restore()
    with pytest.raises(LoginLost) as lost:
        timed(lambda: batch.load_value("0" * 64))
    message = str(lost.value)
    assert message.startswith("The login to totphost was lost (")
    assert "One-time password" in message  # the question nobody could answer
    assert "OpenSSH master" in message and "control_persist" in message
    assert isinstance(lost.value, PromptUnavailable)
    with pytest.raises(LoginLost):
        timed(lambda: batch.save(Call(name="resume.batch", arguments={}, result=1)))
    assert len(codes.asked) == 1  # nobody was asked on the batch cache's behalf


# -- keepalives across a sleep: pure logic, on a stand-in transport ----------------------


class SilentTransport:
    """What :class:`Keepalive` uses of a transport; probes are answered while ``answering``."""

    def __init__(self) -> None:
        self.answering = threading.Event()
        self.answering.set()
        self.closed = threading.Event()

    def is_active(self) -> bool:
        return not self.closed.is_set()

    def global_request(self, kind: str, wait: bool) -> None:
        while not self.answering.is_set():  # unanswered until closed, as over a dead link
            if self.closed.wait(0.05):
                raise EOFError("closed")

    def close(self) -> None:
        self.closed.set()


def test_a_sleep_is_not_counted_as_silence(monkeypatch):
    from fleche_ssh.ssh import liveness

    slept = [0.0]
    real = time.monotonic
    # The monotonic clock of macOS and Windows, which runs on while the laptop sleeps.
    monkeypatch.setattr(liveness, "time", types.SimpleNamespace(
        monotonic=lambda: real() + slept[0]))
    transport = SilentTransport()
    keepalive = liveness.Keepalive(transport, interval=0.4, count_max=2, label="laptop").start()
    try:
        time.sleep(0.3)
        slept[0] += 3600.0  # an hour asleep; the connection survived it
        assert not transport.closed.wait(1.0)
        assert keepalive.verdict is None

        transport.answering.clear()  # now the link is dead: given up in bounded time
        started = real()
        assert transport.closed.wait(5.0)
        assert real() - started < 0.4 * 2 + 1.0
        assert "stopped answering" in keepalive.verdict
    finally:
        keepalive.stop()
        transport.close()
