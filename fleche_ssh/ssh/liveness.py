"""Noticing that the server is gone: ServerAliveInterval / ServerAliveCountMax.

Paramiko's ``set_keepalive`` sends a request that wants no reply, so it
keeps NAT state alive but can never tell a dead peer from a quiet one.
:class:`Keepalive` sends OpenSSH's ``keepalive@openssh.com`` request, which
every sshd answers (with a failure, which is the point: it is an answer),
every ``interval`` seconds.  When ``count_max`` requests in a row go
unanswered it closes the transport, so that an operation blocked on the
connection fails with an error instead of hanging until TCP gives up,
which can take hours.

The defaults (15 s x 3) differ from OpenSSH's (off): a notebook left open
for hours over a VPN is the common case here, and 45 s is long enough
not to mistake a busy link for a dead one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import paramiko

logger = logging.getLogger("fleche_ssh.liveness")

DEFAULT_INTERVAL = 15.0
DEFAULT_COUNT_MAX = 3


#: How long :func:`gone` watches a connection that has just failed an operation.
SETTLE = 0.5


def gone(alive: Callable[[], bool], within: float = SETTLE) -> bool:
    """Whether *alive* turns False within *within* seconds: the connection, not one channel, failed.

    Paramiko closes a dead transport's channels a moment before the
    transport says it is inactive, so an operation that has just failed on
    a channel can still find its connection "alive".
    """
    deadline = time.monotonic() + within
    while alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Keepalive:
    """Probe *transport* every *interval* s; close it after *interval* x *count_max* s of silence.

    Silence is measured from the last answered probe, so an operation that
    starts just as the peer vanishes fails at most ``interval x count_max``
    (plus one check tick) later.  Only time this process was awake counts:
    a laptop's sleep moves the monotonic clock on macOS and Windows, and a
    connection that survived the sleep must get its probes' chance before
    it is given up (giving it up means logging in again, perhaps with a
    one-time code).
    """

    def __init__(self, transport: paramiko.Transport, *, interval: float, count_max: int,
                 label: str) -> None:
        self.transport = transport
        self.interval = interval
        self.count_max = max(1, count_max)
        self.label = label
        #: Why the transport was closed, for the error the caller sees.
        self.verdict: str | None = None
        self._stop = threading.Event()
        self._heard = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"fleche-ssh-alive-{label}",
                                        daemon=True)

    def start(self) -> Keepalive:
        if self.interval > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        tick = min(1.0, self.interval / 4)
        limit = self.interval * self.count_max
        probe: threading.Thread | None = None
        sent = 0.0
        silence, heard, last = 0.0, self._heard, time.monotonic()
        while not self._stop.wait(tick) and self.transport.is_active():
            now = time.monotonic()
            # A check comes every tick while awake; a longer gap is a sleep, counted as two.
            silence = 0.0 if self._heard != heard else silence + min(now - last, 2 * tick)
            heard, last = self._heard, now
            if silence > limit:
                self._declare_dead()
                return
            if (probe is None or not probe.is_alive()) and now - sent >= self.interval:
                sent = now
                probe = threading.Thread(target=self._probe, daemon=True,
                                         name=f"fleche-ssh-probe-{self.label}")
                probe.start()

    def _probe(self) -> None:
        with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
            self.transport.global_request("keepalive@openssh.com", wait=True)
            self._heard = time.monotonic()

    def _declare_dead(self) -> None:
        total = self.interval * self.count_max
        self.verdict = (
            f"{self.label} stopped answering: no reply to keepalives for {total:g} s "
            f"(server_alive_interval x server_alive_count_max). The host, the network or the "
            f"VPN is down"
        )
        logger.warning("%s; closing the connection", self.verdict)
        self.transport.close()
