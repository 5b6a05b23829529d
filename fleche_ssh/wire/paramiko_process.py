"""The remote command on a Paramiko channel of our own authenticated transport.

Flow control is this implementation's business: the receive window and
packet size asked for when the channel opens are chosen here, not by the
session that opens it, since they trade download speed against the
server's CPU, which only matters for a channel carrying large answers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import paramiko

from ..ssh.transport import EXIT_SIGNAL
from .process import RemoteProcess

if TYPE_CHECKING:
    from ..ssh.session import Session

#: Receive window: how much the server may send before we acknowledge.  A
#: download runs at most at window / round-trip time: 4 MiB allows ~400 MB/s
#: at 10 ms and ~80 MB/s at 50 ms.  Larger is not better: sshd reads the remote
#: command's output as fast as the window allows, and with tens of MiB queued
#: it spends far more CPU per byte; on loopback a 64 MiB window cost sshd
#: 14-23x the CPU and made downloads 4x slower (see benchmarks/window.py).
WINDOW_SIZE = 4 << 20
MAX_PACKET_SIZE = 32768
#: How often :meth:`ParamikoProcess.exit_status` looks for the status while it waits.
_POLL = 0.01


class ParamikoProcess(RemoteProcess):
    """A command running on a ``paramiko.Channel``, with Paramiko's quirks handled."""

    def __init__(self, channel: paramiko.Channel, *, command: str, session: Session) -> None:
        self._channel = channel
        self._session = session
        self.command = command

    @classmethod
    def open(cls, session: Session, command: str, *,
             window_size: int = WINDOW_SIZE) -> ParamikoProcess:
        """Start *command* on a new channel of *session*.

        *window_size* is there for ``benchmarks/window.py``, which measures
        what the default costs and gains.
        """
        channel = session.open_exec(command, window_size=window_size,
                                    max_packet_size=MAX_PACKET_SIZE)
        return cls(channel, command=command, session=session)

    def send(self, data: memoryview) -> int:
        return self._channel.send(data)

    def recv(self, size: int) -> bytes:
        return self._channel.recv(size)

    def recv_stderr(self, size: int) -> bytes:
        return self._channel.recv_stderr(size)

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
        return not self.connection_alive()  # a flag of Paramiko's: no I/O

    def lost_reason(self) -> str | None:
        return self._session.lost_reason()

    def kill(self) -> None:
        self._channel.close()
