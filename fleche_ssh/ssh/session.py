"""One authenticated SSH transport to one destination, and how to log in.

A :class:`Session` is what :class:`~fleche_ssh.ssh.pool.ConnectionPool`
keeps per :class:`~fleche_ssh.config.target.Target`: the transport, what
the login used, and the channels opened on it.  It counts its channels
itself so that the pool can say which logins are in use and for how long
they have been idle, without anything on the path a frame takes: a
channel is noted once when it opens, and the transport stamps the time
whenever one closes (:mod:`fleche_ssh.ssh.transport`).

It also remembers the largest receive window a channel of it grew to
(:meth:`Session.window_grew`): every channel of one session crosses the
same TCP connection, so the next one can open at the window the link was
found to need instead of finding it again.  That stays with the session
and ends with it: a new login may take another path (a laptop that moved
from a VPN to the office LAN), where a large window only costs.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

from ..config.target import Target
from ..errors import ConnectionLost, RemoteConnectionError
from ..prompts import Handler, Prompter, resolve_handler
from .auth import AuthReport
from .liveness import Keepalive, gone
from .proxy import ProxyProcess
from .transport import Transport

#: Bound on opening a channel on an established transport.
CHANNEL_OPEN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Login:
    """How to authenticate: who answers questions, and how long a human may take."""

    prompter: Prompter
    auth_timeout: float
    can_ask: bool

    @classmethod
    def of(cls, prompt: str | Handler | None, auth_timeout: float, target: Target) -> Login:
        """The login a cache's ``prompt`` and ``auth_timeout`` keys give for *target*.

        ``BatchMode`` on the target means nobody is asked, whatever ``prompt`` says.
        """
        handler = resolve_handler("none" if target.batch_mode else prompt)
        return cls(prompter=Prompter(handler), auth_timeout=auth_timeout,
                   can_ask=not target.batch_mode and prompt != "none")


@dataclass
class Session:
    """One authenticated transport to one target."""

    target: Target
    transport: Transport
    host_key: str
    host_key_verified: str
    auth: AuthReport
    connected_in: float
    #: Wall-clock time (``time.time()``) the login completed.
    connected_at: float = field(default_factory=time.time)
    keepalive: Keepalive | None = field(default=None, repr=False)
    proxy: ProxyProcess | None = field(default=None, repr=False)
    #: Guards the set of channels, which several threads open at once.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _channels: weakref.WeakSet[paramiko.Channel] = field(
        default_factory=weakref.WeakSet, init=False, repr=False)
    _opened_at: float = field(default_factory=time.monotonic, init=False, repr=False)
    #: The largest receive window a channel of this session grew to; 0: none grew.
    grown_window: int = field(default=0, init=False)

    def alive(self) -> bool:
        return self.transport.is_active() and self.transport.is_authenticated()

    def lost_reason(self) -> str | None:
        """Why the connection died, when fleche-ssh closed it itself (keepalives unanswered)."""
        return self.keepalive.verdict if self.keepalive is not None else None

    def open_exec(self, command: str, *, window_size: int, max_packet_size: int,
                  prepare: Callable[[paramiko.Channel], object] | None = None
                  ) -> paramiko.Channel:
        """Open a session channel running *command*, with the flow control its user chose.

        *prepare* sees the channel once it is open and before the command
        starts, when no data can have arrived on it yet.
        """
        try:
            channel = self.transport.open_session(
                window_size=window_size, max_packet_size=max_packet_size,
                timeout=CHANNEL_OPEN_TIMEOUT,
            )
            if prepare is not None:
                prepare(channel)
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as e:
            if gone(self.alive):  # a silently dead connection, found by this first packet
                raise ConnectionLost(
                    f"The connection to {self.target.label} was lost while starting the remote "
                    f"command ({self.lost_reason() or str(e) or type(e).__name__}). The next call "
                    f"connects again, logging in again if it must."
                ) from e
            raise RemoteConnectionError(
                f"Could not start the remote command on {self.target.label}: {e}. The server "
                f"may limit sessions per connection (MaxSessions); call reconnect() to retry."
            ) from e
        self.track(channel)
        return channel

    def track(self, channel: paramiko.Channel) -> None:
        """Count *channel* among this session's open channels until it closes."""
        with self.lock:
            self._channels.add(channel)
            self._opened_at = time.monotonic()

    def window_grew(self, size: int) -> None:
        """A channel of this session grew its receive window to *size* bytes."""
        with self.lock:
            self.grown_window = max(self.grown_window, size)

    def usage(self) -> tuple[int, float]:
        """``(channels open, seconds idle)``.

        Idle counts from the last channel opened or closed, and is 0 while
        any channel is open: a login in use is never idle.
        """
        with self.lock:
            open_now = sum(not channel.closed for channel in self._channels)
            last = max(self._opened_at, self.transport.channel_closed_at)
        return open_now, 0.0 if open_now else time.monotonic() - last

    def close(self) -> None:
        if self.keepalive is not None:
            self.keepalive.stop()
        self.transport.close()
        if self.proxy is not None:
            self.proxy.close()


__all__ = ["Login", "Session"]
