"""The remote command on a Paramiko channel of our own authenticated transport.

Flow control is this implementation's business: the receive window and
packet size asked for when the channel opens are chosen here, not by the
session that opens it, since they trade download speed against the
server's CPU, which only matters for a channel carrying large answers.

The receive window starts at :data:`WINDOW_SIZE`, or at the window an
earlier channel of the same session grew to (the same connection, so the
same link: :attr:`~fleche_ssh.ssh.session.Session.grown_window`), either
shared among the channels open at once, and grows to what the link needs
(:mod:`.window` decides; the figures are in ``docs/performance.rst``).
Paramiko has no public way to grow a window, so this module takes over its
window adjustments on the channels it opens: it notes the requests leaving
and the bytes arriving (a :class:`~.packet_buffer.PacketBuffer` in place of
Paramiko's, which tells the window of each packet), hands consumed bytes
back itself, and keeps Paramiko from doing so.  The
Paramiko internals that takes are checked once (:func:`window_control`);
without them a channel keeps Paramiko's own flow control at the fixed
starting window.

A caller waiting for data on stdout reads the transport's packets itself
when the transport allows it (:meth:`~fleche_ssh.ssh.lean_reader.SharedPacketizer.serve`),
instead of waiting for Paramiko's thread to hand them over.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

import paramiko
from paramiko.buffered_pipe import BufferedPipe
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST

from ..ssh.transport import EXIT_SIGNAL
from .packet_buffer import PacketBuffer
from .process import RemoteProcess
from .window import CAP, FLOOR, ReceiveWindow

if TYPE_CHECKING:
    from ..ssh.session import Session

logger = logging.getLogger("fleche_ssh.window")

#: Receive window a channel opens with: 4 MiB allows ~400 MB/s at 10 ms and
#: ~80 MB/s at 50 ms before it needs to grow.
WINDOW_SIZE = FLOOR
#: The least window a channel opens with beside others on its connection (32 packets).
LEAST_SHARE = 1 << 20
MAX_PACKET_SIZE = 32768
#: How often :meth:`ParamikoProcess.exit_status` looks for the status while it waits.
_POLL = 0.01
#: Attributes of a ``paramiko.Channel`` the window control reads or sets.
_CHANNEL_INTERNALS = ("in_buffer", "in_stderr_buffer", "in_window_size",
                      "in_window_threshold", "remote_chanid", "eof_received", "transport")
#: Paramiko never hands bytes back once this threshold is set: we do.
_NEVER = 1 << 62


@functools.cache
def window_control() -> bool:
    """Whether this Paramiko has the internals a growing window relies on (checked once)."""
    probe = paramiko.Channel(0)
    missing = [name for name in _CHANNEL_INTERNALS if not hasattr(probe, name)]
    if not isinstance(probe.in_buffer, BufferedPipe):
        missing.append("in_buffer: BufferedPipe")
    if not callable(getattr(paramiko.Transport, "_send_user_message", None)):
        missing.append("Transport._send_user_message")
    if missing:
        logger.debug("paramiko %s lacks %s: channels keep Paramiko's fixed %d-byte window",
                     paramiko.__version__, ", ".join(missing), WINDOW_SIZE)
    return not missing


def _take_over_window(channel: paramiko.Channel, window: ReceiveWindow) -> None:
    """Count arrivals on *channel*, and stop Paramiko handing consumed bytes back itself.

    Runs between opening the channel and starting the command: no data
    has arrived yet.
    """
    channel.in_buffer = PacketBuffer(window.arrived)
    channel.in_stderr_buffer = PacketBuffer(functools.partial(window.arrived, answer=False))
    channel.in_window_threshold = _NEVER


class _StartTimer:
    """Times the two round trips of starting a command: the window's first samples.

    The server confirms a new channel at once, and answers the ``exec``
    request as soon as it has forked the command, before any data is
    queued on the way.  Both are needed: the first channel after a login
    waits for the server to set up the session (tens of milliseconds for
    OpenSSH's sshd, on loopback too), which only the second leaves out.
    """

    def __init__(self, window: ReceiveWindow) -> None:
        self._window = window
        self._mark = time.monotonic()

    def _lap(self) -> None:
        now = time.monotonic()
        self._window.round_trip_took(now - self._mark)
        self._mark = now

    def opened(self, channel: paramiko.Channel) -> None:
        """The channel is open (``Session.open_exec``'s *prepare*): take its window over."""
        self._lap()
        _take_over_window(channel, self._window)

    def started(self) -> None:
        """The server answered the ``exec`` request."""
        self._lap()


def _starting_window(session: Session, window_size: int, cap: int) -> int:
    """A share of *window_size*, or the window a channel of *session* grew to, within *cap*.

    What one channel grew to is what one transfer needs on the link.
    Channels open at the same time share the link, and each window is a
    promise to buffer that much: a new channel inherits at most *cap*
    divided among the channels then open (itself included), so that what
    a login's new channels promise together stays near one channel's bound.

    The starting window is divided the same way, down to
    :data:`LEAST_SHARE`: the server queues what the windows of one
    connection allow together, and a queue of several windows costs it as
    one large window does (four pool workers loading at once through one
    login cost sshd twice the CPU per byte at 4 MiB each).  A window too
    small for its link still grows.
    """
    open_now, _ = session.usage()
    share = max(window_size // (open_now + 1), min(window_size, LEAST_SHARE))
    return min(cap, max(share, min(session.grown_window, cap // (open_now + 1))))


class ParamikoProcess(RemoteProcess):
    """A command running on a ``paramiko.Channel``, with Paramiko's quirks handled."""

    def __init__(self, channel: paramiko.Channel, *, command: str, session: Session,
                 window: ReceiveWindow | None = None) -> None:
        self._channel = channel
        self._session = session
        self.command = command
        #: The receive window's control; None when Paramiko's own fixed window is in use.
        self.window = window
        #: The window the server gave us when the channel opened: what bounds uploads.
        self.server_window: int = channel.out_window_size
        packetizer = channel.transport.packetizer
        shared = getattr(packetizer, "shared", False)
        #: Reads packets in this thread until the given buffer has data (None: Paramiko's thread).
        self._serve = packetizer.serve if shared else None
        #: Has Paramiko's thread read when no caller will (None: it always does).
        self._wake = packetizer.wake if shared else None
        #: The stdout buffer this module counts arrivals in (None: Paramiko's own window).
        self._pipe = channel.in_buffer if isinstance(channel.in_buffer, PacketBuffer) else None
        lean_send = getattr(packetizer, "send_data", None)
        #: ``channel.send``, or the lean packetizer's shorter path to the same packet.
        self._send = channel.send if lean_send is None else functools.partial(lean_send, channel)

    @classmethod
    def open(cls, session: Session, command: str, *, window_size: int = WINDOW_SIZE,
             window_cap: int = CAP) -> ParamikoProcess:
        """Start *command* on a new channel of *session*.

        The window starts at *window_size*, or at the window a channel of
        *session* grew to when that is larger (:func:`_starting_window`), and
        grows up to *window_cap*, which bounds both; they are parameters for
        ``benchmarks/window.py`` and the tests, which measure what fixed
        windows cost and gain.  Paramiko's own fixed window (no
        :func:`window_control`) stays at *window_size*.
        """
        if not window_control():
            channel = session.open_exec(command, window_size=window_size,
                                        max_packet_size=MAX_PACKET_SIZE)
            return cls(channel, command=command, session=session)
        window_size = _starting_window(session, window_size, window_cap)
        window = ReceiveWindow(window_size, window_cap)
        timer = _StartTimer(window)
        channel = session.open_exec(command, window_size=window_size,
                                    max_packet_size=MAX_PACKET_SIZE, prepare=timer.opened)
        timer.started()
        return cls(channel, command=command, session=session, window=window)

    def send(self, data: memoryview) -> int:
        if self.window is not None:
            self.window.sent(time.monotonic())
        if self._wake is not None and self._channel.out_window_size < len(data):
            self._wake()  # the send waits for the server's window adjustment
        return self._send(data)

    def recv(self, size: int) -> bytes:
        pipe = self._pipe
        if pipe is None:
            if self._serve is not None:
                self._serve(self._channel.in_buffer.read_ready)
            return self._channel.recv(size)
        if not pipe.ready() and self._serve is not None:
            self._serve(pipe.ready)
        data = pipe.take(size)
        if not data:  # nothing buffered: wait in Paramiko's buffer, or learn of the EOF
            data = self._channel.recv(size)
        if data:
            self._consumed(len(data))
        return data

    def recv_into(self, view: memoryview) -> int:
        """Straight from the packets into *view*: one copy, where :meth:`recv` makes two."""
        pipe = self._pipe
        if pipe is None:
            return super().recv_into(view)
        if not pipe.ready() and self._serve is not None:
            self._serve(pipe.ready)
        n = pipe.take_into(view)
        if not n:  # nothing buffered: wait in Paramiko's buffer, or learn of the EOF
            return super().recv_into(view)
        self._consumed(n)
        return n

    def recv_stderr(self, size: int) -> bytes:
        # No serve(): stderr is drained by a thread that waits all the time; as a
        # reader it would keep Paramiko's thread parked and take the answers'
        # packets from the thread waiting for them.
        data = self._channel.recv_stderr(size)
        if data and self.window is not None:
            self._consumed(len(data))
        return data

    def _consumed(self, n: int) -> None:
        """Hand *n* read bytes back to the server, with whatever the window grew by."""
        assert self.window is not None
        grant = self.window.consumed(n, time.monotonic())
        channel = self._channel
        if not grant or channel.closed or channel.eof_received:
            return
        if channel.in_window_size != self.window.size:
            logger.debug("channel %d: receive window %d -> %d bytes (round trip %.1f ms)",
                         channel.chanid, channel.in_window_size, self.window.size,
                         1000 * (self.window.round_trip or 0.0))
            channel.in_window_size = self.window.size
            self._session.window_grew(self.window.size)
        message = paramiko.Message()
        message.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        message.add_int(channel.remote_chanid)
        message.add_int(grant)
        channel.transport._send_user_message(message)

    def recv_ready(self) -> bool:
        return self._channel.recv_ready()

    def shutdown_write(self) -> None:
        # An EOF sent after the channel closed (from another thread) makes sshd
        # drop the whole transport.
        if not self._channel.closed:
            self._channel.shutdown_write()

    def exit_status(self, wait: float) -> int | None:
        """The exit status, or None if the server reported none.

        Paramiko counts a closed channel as "ready" with status -1 when no
        status came: the connection was lost (or the process died of a
        signal), which must not read as the command failing.  Its own wait,
        ``recv_exit_status()``, has no bound.
        """
        channel = self._channel
        deadline = time.monotonic() + wait
        if self._wake is not None:
            self._wake()
        while not channel.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(_POLL)
        if channel.exit_status_ready():
            status = channel.recv_exit_status()
            return status if status >= 0 else None
        return None

    def exit_signal(self) -> str | None:
        return getattr(self._channel, EXIT_SIGNAL, None)

    def connection_alive(self) -> bool:
        transport = self._channel.get_transport()
        return transport is not None and transport.is_active()

    def known_lost(self) -> bool:
        # Paramiko's flag, read directly: no I/O, and asked before every call.
        transport = self._channel.transport
        return transport is None or not transport.active

    def lost_reason(self) -> str | None:
        return self._session.lost_reason()

    def kill(self) -> None:
        self._channel.close()
