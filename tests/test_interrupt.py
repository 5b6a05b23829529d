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
import sys
import textwrap
import threading
import time

import pytest
from fleche.call import Call
from support.caches import wait_for
from support.kernel import cell_messages, kernel, printed, run_cell
from support.slow import slow_host, store

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
        took = time.monotonic() - sent[0]
        print(f"KeyboardInterrupt {took:.3f} s after SIGINT")
        return took
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


@pytest.fixture(params=["relayed", "loopback"])
def link(request, slow) -> tuple[str, int]:
    """(host, bytes to move): through the relay, or straight to the test sshd.

    On loopback the stream is read and written in the caller's own thread as
    fast as the socket goes, so SIGINT lands inside a socket call or between
    a packet's bytes and its bookkeeping; more bytes keep the transfer running.
    """
    return (slow, SIZE) if request.param == "relayed" else ("testhost", 4 * SIZE)


def test_ctrl_c_during_a_load(make, link, pool, sshd, remote_dir):
    host, size = link
    key = store(make, b"\x01" * size)
    cache = make(host=host)
    assert cache.contains("0" * 64) is False  # logged in, server started
    sessions = pool.sessions()
    logged_in = logins(sshd)
    took = interrupted(lambda: cache.load_value(key))
    assert took < BOUND
    assert_kept(cache, pool, sshd, remote_dir, sessions, logged_in)


def test_ctrl_c_during_a_save(make, link, pool, sshd, remote_dir):
    host, size = link
    cache = make(host=host)
    assert cache.contains("0" * 64) is False
    sessions = pool.sessions()
    logged_in = logins(sshd)
    before = files(remote_dir)
    call = Call(name="big", arguments={}, result=b"\x02" * size)
    took = interrupted(lambda: cache.save(call))
    assert took < BOUND
    assert_kept(cache, pool, sshd, remote_dir, sessions, logged_in)
    assert files(remote_dir) == before


#: Where SIGINT is made to arrive in the caller's thread: just as the transport's
#: socket has put received bytes in the packetizer's buffer (not yet counted as
#: there), and just before a sealed packet is written to the socket's descriptor.
#: Each is the profile event and whether a C function *called* on the transport's
#: socket *sock* is the one.  A ``c_call`` event sees the function, not its
#: arguments, so the ``os.write`` matcher cannot check the descriptor; it need
#: not, as during ``contains`` only the lean packetizer calls ``os.write`` in
#: the caller's thread.
MOMENTS = {
    "a-recv-returns": ("c_return", lambda called, sock: getattr(
        called, "__self__", None) is sock and called.__name__ == "recv_into"),
    "a-packet-is-written": ("c_call", lambda called, sock: called is os.write),
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_ctrl_c_at_the_worst_moment_keeps_the_login(make, pool, sshd, remote_dir, moment):
    """SIGINT raised at an exact point of the stream's reading or writing: the login survives.

    A profile hook on the main thread raises the signal at that point, so the
    handler runs at the very next bytecode, as a real Ctrl-C arriving then
    would.  Were the bytes of that ``recv`` dropped, or the packet's IV spent
    without the packet sent, the stream could no longer be decrypted.
    """
    cache = make()
    assert cache.contains("0" * 64) is False
    sessions = pool.sessions()
    logged_in = logins(sshd)
    sock = sessions[0].transport.sock
    event, is_the_one = MOMENTS[moment]
    fired: list[str] = []

    def hook(frame, what, arg) -> None:
        if not fired and what == event and is_the_one(arg, sock):
            fired.append(arg.__name__)
            signal.raise_signal(signal.SIGINT)

    sys.setprofile(hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            cache.contains("1" * 64)
    finally:
        sys.setprofile(None)
    assert len(fired) == 1
    assert_kept(cache, pool, sshd, remote_dir, sessions, logged_in)


CHECK = 'print(cache.contains("0" * 64), [id(s) for s in POOL.sessions()])\n'
#: Times when the KeyboardInterrupt reaches the cell's code, and raises it on with that time.
LOAD = """
import time
try:
    cache.load_value({key!r})
except KeyboardInterrupt:
    raise KeyboardInterrupt(repr(time.monotonic())) from None
"""


def first_error(client, msg_id: str) -> dict:
    """The error the cell *msg_id* reports on iopub, as soon as it arrives."""
    deadline = time.monotonic() + 60
    while True:
        msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            if msg["header"]["msg_type"] == "error":
                return msg["content"]
            assert msg["header"]["msg_type"] != "execute_reply", msg


def test_interrupt_kernel_during_a_load(make, slow, sshd, remote_dir, remote_python):
    key = store(make, b"\x01" * SIZE)
    setup = textwrap.dedent(f"""
        from fleche_ssh import ParamikoCache
        from fleche_ssh.ssh.pool import POOL
        cache = ParamikoCache(host={slow!r}, python={remote_python!r},
                              workdir={str(remote_dir)!r}, prompt="none")
        """) + CHECK
    with kernel() as (manager, client):
        messages, reply = run_cell(client, setup)
        assert reply["content"]["status"] == "ok", reply["content"]
        before = printed(messages)
        assert before.startswith("False [")
        logged_in = logins(sshd)

        load = client.execute(LOAD.format(key=key))
        time.sleep(AFTER)
        sent = time.monotonic()
        manager.interrupt_kernel()
        error = first_error(client, load)
        shown = time.monotonic() - sent
        cell_messages(client, load)
        assert client.get_shell_msg(timeout=10)["content"]["status"] == "error"
        assert error["ename"] == "KeyboardInterrupt", error
        caught = float(error["evalue"]) - sent
        print(f"caught {caught:.3f} s, shown {shown:.3f} s after the interrupt")
        assert caught < BOUND

        assert wait_for(lambda: not remote_servers(remote_dir), 10), remote_servers(remote_dir)
        messages, reply = run_cell(client, CHECK)  # the same cache, and the same logins
        assert reply["content"]["status"] == "ok", reply["content"]
        assert printed(messages) == before
        assert logins(sshd) == logged_in
