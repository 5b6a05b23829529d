"""Ctrl-C during a long save or load: answered at once, the login kept, the remote server ended.

SIGINT is sent to this process as a terminal sends it (``os.kill`` of our
own pid, from a timer thread, while the main thread is in the call),
through a relay adding 25 ms each way, so that a 256 MiB transfer is still
running when it arrives.  The bound asserted (0.5 s) is the behaviour
promised; before, the interrupt waited out the 2 s bound on the remote's
exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
from fleche.call import Call
from fleche.digest import digest
from support.caches import wait_for
from support.slow import slow_host

pytestmark = pytest.mark.timeout(240)

SIZE = 256 << 20
#: Seconds into the transfer at which SIGINT arrives.
AFTER = 1.0
#: What the caller may wait for its KeyboardInterrupt after SIGINT.
BOUND = 0.5


@pytest.fixture
def slow(client_home):
    with slow_host(client_home) as alias:
        yield alias


def remote_servers(remote_dir) -> list[str]:
    """Remote server processes working in *remote_dir* (the test sshd runs them here)."""
    found = subprocess.run(["pgrep", "-af", f"cd {remote_dir} "], capture_output=True,
                           text=True, check=False)
    return [line for line in found.stdout.splitlines() if "--serve" in line]


def files(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def interrupted(work) -> float:
    """Run *work* until SIGINT (sent :data:`AFTER` s in) interrupts it; seconds it then took."""
    sent: list[float] = []

    def send() -> None:
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(AFTER, send)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            work()
        return time.monotonic() - sent[0]
    finally:
        timer.cancel()


def logins(sshd) -> int:
    return sshd.log_text().count("Accepted publickey")


def assert_kept(cache, pool, sshd, remote_dir, sessions, logged_in) -> None:
    """The remote server ended, the logins are those before, and the next call works."""
    assert wait_for(lambda: not remote_servers(remote_dir), 10), remote_servers(remote_dir)
    assert pool.sessions() == sessions
    assert all(session.alive() for session in sessions)
    assert cache.contains("0" * 64) is False
    assert logins(sshd) == logged_in


def test_ctrl_c_during_a_load(make, slow, pool, sshd, remote_dir):
    value = b"\x01" * SIZE
    direct = make()
    direct.save(Call(name="big", arguments={}, result=value))
    direct.close()
    cache = make(host=slow)
    assert cache.contains("0" * 64) is False  # logged in, server started
    sessions = pool.sessions()
    logged_in = logins(sshd)
    took = interrupted(lambda: cache.load_value(digest(value)))
    assert took < BOUND
    assert_kept(cache, pool, sshd, remote_dir, sessions, logged_in)


def test_ctrl_c_during_a_save(make, slow, pool, sshd, remote_dir):
    cache = make(host=slow)
    assert cache.contains("0" * 64) is False
    sessions = pool.sessions()
    logged_in = logins(sshd)
    before = files(remote_dir)
    call = Call(name="big", arguments={}, result=b"\x02" * SIZE)
    took = interrupted(lambda: cache.save(call))
    assert took < BOUND
    assert_kept(cache, pool, sshd, remote_dir, sessions, logged_in)
    assert files(remote_dir) == before
