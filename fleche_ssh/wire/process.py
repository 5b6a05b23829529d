"""The remote-process seam: what the exec channel needs from "a command running over there".

:class:`~fleche_ssh.wire.channel.ExecChannel` speaks fleche's frames; it
does not care how its bytes reach the remote server.  Everything it uses is
here, so that each way of reaching the server is one small class beside
this one:

* a Paramiko channel on our own authenticated transport (:mod:`.paramiko_process`);
* a stream relayed by a local process that shares a login;
* the socketpairs handed to a live OpenSSH master (stdio over local
  sockets: :mod:`.sockets`);
* an in-memory server for tests (:mod:`.memory`).

An implementation provides the primitives; the byte-counted reads and
writes built on them (:meth:`RemoteProcess.send_all`,
:meth:`RemoteProcess.recv_some`, :meth:`RemoteProcess.recv_exactly`) and the
orderly :meth:`RemoteProcess.close` live here, once, so progress reporting
and shutdown behave the same whatever carries the bytes.  Flow control
(windows, buffers) stays inside each implementation.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable

from .pump import CHUNK, send_all

#: Called with ("sent" | "received", byte count) as a frame's bytes move.
Counter = Callable[[str, int], object]


class RemoteProcess(abc.ABC):
    """One remote command: stdin, stdout, stderr, and how it ended."""

    #: The command line it runs, quoted in error messages.
    command: str = ""
    #: Told of every byte :meth:`send_all` and :meth:`recv_exactly` move (progress).
    counter: Counter | None = None
    #: Which login carries it, in the words of :mod:`.sources` (shown by ``check``).
    source: str = "a login of its own"

    # -- what an implementation provides -----------------------------------

    @abc.abstractmethod
    def send(self, data: memoryview) -> int:
        """Write some of *data* to stdin, blocking until some is taken; 0 once it takes no more."""

    @abc.abstractmethod
    def recv(self, size: int) -> bytes:
        """Up to *size* bytes of stdout, blocking until some arrive; ``b""`` at EOF."""

    @abc.abstractmethod
    def recv_stderr(self, size: int) -> bytes:
        """Up to *size* bytes of stderr, blocking; ``b""`` at EOF."""

    @abc.abstractmethod
    def shutdown_write(self) -> None:
        """EOF on stdin: the server's read loop ends, and it exits."""

    @abc.abstractmethod
    def exit_status(self, wait: float) -> int | None:
        """The exit status, waiting up to *wait* s; None if none came (lost, or a signal)."""

    @abc.abstractmethod
    def exit_signal(self) -> str | None:
        """The signal that ended the command (``KILL``, ``TERM`` ...), if one did."""

    @abc.abstractmethod
    def connection_alive(self) -> bool:
        """Whether the connection under this process still works (an exit status can come)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Drop the process now, without waiting: the remote command loses its stdio and ends."""

    # -- what every implementation shares ------------------------------------

    def lost_reason(self) -> str | None:
        """Why the connection died, when fleche-ssh itself closed it (keepalives unanswered)."""
        return None

    def known_lost(self) -> bool:
        """Whether the connection is already known to be gone, found out without any I/O.

        Asked of an idle channel before each call, so that the call after a
        detected drop logs in again instead of failing on a dead channel;
        hence no round trip may be spent on it (an OpenSSH master's
        :meth:`connection_alive` asks the master).  False when unsure: a
        loss found during the call is handled there.
        """
        return False

    def recv_ready(self) -> bool:
        """Whether stdout bytes can be read without waiting (used only to quote bad output)."""
        return False

    def recv_into(self, view: memoryview) -> int:
        """Fill some of *view* from stdout, blocking until some arrive; 0 at EOF.

        Copies what :meth:`recv` returns.  An implementation that can read
        straight into a buffer (a socket) overrides this and saves that copy.
        """
        data = self.recv(len(view))
        view[: len(data)] = data
        return len(data)

    def send_all(self, data: memoryview, chunk: int = CHUNK) -> bool:
        """Write all of *data*; False if stdin stopped taking it."""
        counter = self.counter
        if counter is None:
            return send_all(self.send, data, chunk)

        def counted(view: memoryview) -> int:
            n = self.send(view)
            if n > 0:
                counter("sent", n)
            return n

        return send_all(counted, data, chunk)

    def recv_some(self, size: int) -> bytes:
        """Up to *size* bytes of stdout, whatever has arrived, counted; ``b""`` at EOF.

        Taking what has arrived reads a small answer in one call: the reader
        keeps any bytes past the end of the frame it wanted.
        """
        data = self.recv(size)
        if data and self.counter is not None:
            self.counter("received", len(data))
        return data

    def recv_exactly(self, view: memoryview, chunk: int = CHUNK) -> int:
        """Fill *view* from stdout; the bytes read, fewer than ``len(view)`` only at EOF."""
        got, size = 0, len(view)
        counter = self.counter
        while got < size:
            n = self.recv_into(view[got : got + chunk])
            if n <= 0:
                break
            got += n
            if counter is not None:
                counter("received", n)
        return got

    def close(self, wait: float) -> None:
        """EOF, up to *wait* s for the exit status, then :meth:`kill`."""
        try:
            with contextlib.suppress(Exception):
                self.shutdown_write()
                self.exit_status(wait)
        finally:
            self.kill()
