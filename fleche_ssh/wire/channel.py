"""One remote fleche server and the frame I/O with it: frames out, frames in, stderr aside.

:class:`ExecChannel` runs over any :class:`~.process.RemoteProcess`; the
bytes of a frame are :mod:`.frames`' business, moving them is the
process's.  The I/O is written for large values: frames go out as slices
of one memoryview (Paramiko's ``Channel.sendall()`` and ``makefile()`` copy
the unsent or unread rest on every packet, which makes a large value
quadratic), and come in through reads into a buffer allocated once from
the header, which is unpickled in place: the client holds one copy of the
bytes and the value, where the stock client holds three.  A small answer
(most of them) comes in one read, header and body together.

stdout and stderr share a channel's window, so unread stderr would stall
stdout: a daemon thread drains stderr into the per-host logger and a ring
buffer that error messages quote.

A frame of :data:`~fleche_ssh.progress.LARGE` bytes or more is a
:class:`~fleche_ssh.progress.Transfer`, fed by the process's byte counter.
A body larger than one packet goes out from a worker thread while the
caller's thread waits in an interruptible join: Ctrl-C
(``KeyboardInterrupt``) then lands in that wait, never halfway through an
SSH packet, which would break the login every other channel shares.  The
caller drops the channel at once (:meth:`ExecChannel.close` with no wait),
which ends the remote server.

When the server goes away,
:meth:`ExecChannel.failure` says why, from its exit status or signal and
those last lines.  Shutting down happens in one place,
:meth:`ExecChannel.close`: EOF, a bounded wait for the exit status, then
the process is dropped.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import mmap
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ConnectionLost, ProtocolError, RemoteCommandError, RemoteConnectionError
from ..progress import LARGE, Progress
from ..ssh.liveness import gone
from . import frames
from .frames import HEADER, QUOTED, SNIFF, Frame
from .process import Counter, RemoteProcess
from .pump import CHUNK, drain_lines

#: A frame this small goes out as one packet, header and body together.
SMALL_FRAME = 1 << 16
#: Asked of the process for the start of an answer, so that a small answer
#: (most of them) arrives in one read, header and body together.
FIRST_READ = 1 << 16
#: An answer body this large is received into memory mapped for it (see :func:`_body_buffer`).
MAPPED = 1 << 20
STDERR_LINES = 50
#: Bound on waiting for the remote exit status when closing or diagnosing.
EXIT_WAIT = 2.0
#: Bound on waiting for the sending thread once the caller was interrupted.
STOP_WAIT = 0.3
#: What to do after a lost connection: nothing but repeat a write (a read was retried already).
LOST_ADVICE = ("The next call connects again, logging in again if it must; a save or an evict "
               "is never repeated by itself.")


def host_logger_name(host: str) -> str:
    """The stock cache's per-host logger: ``fleche.remote.host.<host>``."""
    return "fleche.remote.host." + host.replace(".", "_").replace("@", "_at_")


class ChannelClosed(EOFError):
    """The channel ended before a whole frame arrived."""


class ExecChannel:
    """The remote fleche server on one remote process: frames out, frames in, stderr aside."""

    def __init__(self, process: RemoteProcess, *, host: str,
                 progress: Progress | None = None) -> None:
        self.process = process
        self._progress = progress if progress is not None else Progress(host)
        self._sender = f"fleche-ssh-send-{host}"
        #: The progress transfer of the frame moving in each direction, and the counter
        #: the process had before the first of them started.
        self._transfers: dict[str, Counter] = {}
        self._outer: Counter | None = None
        self._counting_lock = threading.Lock()
        self.command = process.command
        self._send, self._send_all = process.send, process.send_all
        self._recv_some = process.recv_some
        #: Bytes read past the end of the last answer: the start of the next one, when
        #: requests are pipelined.
        self._pending = b""
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._log = logging.getLogger(host_logger_name(host))
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, name=f"fleche-ssh-stderr-{host}", daemon=True
        )
        self._stderr_thread.start()

    # -- frames -----------------------------------------------------------

    def send_frame(self, frame: Frame) -> None:
        header, body = frame
        total = len(header) + len(body)
        if len(body) <= SMALL_FRAME:
            view = memoryview(header + body)
            if self.process.counter is None:
                # One send takes a small frame whole, nearly always: no loop, no slices.
                n = self._send(view)
                sent = n == total or (n > 0 and self._send_all(view[n:]))
            else:
                sent = self._send_all(view)
        else:
            with self._moving("sent", total) if total >= LARGE else contextlib.nullcontext():
                sent = _interruptible(lambda: self._send_large(header, body),
                                      stop=self.process.kill, name=self._sender)
        if not sent:
            raise ChannelClosed("the channel closed while sending")

    def _send_large(self, header: bytes, body: bytes) -> bool:
        return (self._send_all(memoryview(header + body[: CHUNK - HEADER.size]))
                and self._send_all(memoryview(body)[CHUNK - HEADER.size :]))

    @contextlib.contextmanager
    def _moving(self, direction: str, total: int, done: int = 0) -> Iterator[None]:
        """Count this frame's bytes into a progress transfer while the block moves them.

        With pipelined calls a frame can go out while another comes in, on
        two threads: each direction has its own transfer, and the process's
        own counter (a test's, a benchmark's) is told of every byte, as before.
        """
        transfer = self._progress.start(direction, total, done)
        process = self.process
        with self._counting_lock:
            if not self._transfers:
                self._outer, process.counter = process.counter, self._count
            self._transfers[direction] = transfer.count
        try:
            yield
        finally:
            with self._counting_lock:
                del self._transfers[direction]
                if not self._transfers:
                    process.counter = self._outer
            transfer.end(transfer.done >= total)

    def _count(self, direction: str, n: int) -> None:
        if self._outer is not None:
            self._outer(direction, n)
        count = self._transfers.get(direction)
        if count is not None:
            count(direction, n)

    def recv_frame(self) -> Any:
        """The next answer, unpickled.

        Raises:
            ProtocolError: the bytes are not a fleche frame.
            Undecodable: the frame is whole but cannot be unpickled here.
        """
        try:
            head = self._recv_at_least(b"", HEADER.size)
            size = frames.body_size(head)
            if len(head) < SNIFF:
                head = self._recv_at_least(head, SNIFF)
                frames.body_size(head)  # now with the pickle's first bytes
            end = HEADER.size + size
            body: bytearray | memoryview
            if len(head) >= end:
                self._pending = head[end:]
                body = memoryview(head)[HEADER.size : end]
            else:
                body = _body_buffer(size)
                have = len(head) - HEADER.size
                body[:have] = head[HEADER.size :]
                if end < LARGE:
                    self._recv_into(memoryview(body)[have:])
                else:
                    with self._moving("received", end, len(head)):
                        self._recv_into(memoryview(body)[have:])
            return frames.decode(body)
        except frames.NotAFrame as e:
            raise self._not_a_frame(e.seen) from e.__cause__

    def _not_a_frame(self, seen: bytes) -> ProtocolError:
        """What was written to stdout instead of a frame, with whatever has arrived since."""
        process = self.process
        while len(seen) < QUOTED and process.recv_ready():
            more = process.recv(QUOTED - len(seen))
            if not more:
                break
            seen += more
        return frames.protocol_error(seen)

    def _recv_at_least(self, head: bytes, size: int) -> bytes:
        """*head* and what follows it, at least *size* bytes: whatever has arrived, in one read.

        Taking what has arrived, rather than exactly the header and then the
        body, reads a small answer in one call instead of three (each a lock
        round trip on Paramiko's buffer); anything read past the answer is kept
        for the next one.
        """
        while len(head) < size:
            if self._pending:
                chunk, self._pending = self._pending, b""
            else:
                chunk = self._recv_some(FIRST_READ)
            if not chunk:
                raise ChannelClosed(f"the channel closed after {len(head)} of {size} bytes")
            head += chunk
        return head

    def _recv_into(self, view: memoryview) -> None:
        got = self.process.recv_exactly(view)
        if got < len(view):
            raise ChannelClosed(f"the channel closed after {got} of {len(view)} bytes")

    # -- stderr and shutdown ---------------------------------------------------

    def _drain_stderr(self) -> None:
        drain_lines(self.process.recv_stderr, self._stderr_line)

    def _stderr_line(self, text: str) -> None:
        self.stderr_tail.append(text)
        self._log.info("%s", text)

    def failure(self, during: str, cause: BaseException) -> RemoteConnectionError:
        """An error saying why the remote server went away, with its last words."""
        if isinstance(cause, ProtocolError):
            return cause
        process = self.process
        alive = process.connection_alive()
        status = process.exit_status(EXIT_WAIT) if alive else None
        signal = process.exit_signal()
        self._stderr_thread.join(0.5 if alive else 0.05)
        tail = "\n".join(self.stderr_tail)
        said = f"\nremote stderr (last {len(self.stderr_tail)} lines):\n{tail}" if tail else ""
        error_type: type[RemoteConnectionError] = RemoteCommandError
        if signal is not None:
            what, advice = _explain_signal(signal)
        elif status is None:
            # No status on a live connection is the channel's loss alone, not the login's.
            error_type = (ConnectionLost if not alive or gone(process.connection_alive)
                          else RemoteConnectionError)
            why = process.lost_reason()
            what = (f"{why}; {during!r} failed." if why
                    else f"The connection was lost during {during!r} ({cause}).")
            advice = LOST_ADVICE
        else:
            what, advice = _explain_exit(status, tail, self.command)
        return error_type(f"{what} {advice}\nremote command: {self.command}{said}")

    def close(self, wait: float = EXIT_WAIT) -> None:
        """EOF, up to *wait* seconds for the exit status, then drop the process.

        The stderr thread then ends.
        """
        try:
            self.process.close(wait)
        finally:
            # A finalizer may run this on any thread, the stderr thread included.
            # Closing without a wait (an interrupted call) does not wait for it either.
            if self._stderr_thread is not threading.current_thread():
                self._stderr_thread.join(0.5 if wait else 0.05)


def _body_buffer(size: int) -> bytearray | memoryview:
    """A writable buffer for an answer body of *size* bytes, not written before it is filled.

    ``bytearray(size)`` sets every byte to zero first, holding the GIL: for a
    256 MiB answer, a quarter of a second on a 2-core machine in which Ctrl-C
    is not answered and no other thread runs.  Anonymous memory from
    ``mmap`` is zero-filled by the system page by page as the receive first
    writes it, outside the GIL, and given back when the last view of it goes.
    """
    if size < MAPPED:
        return bytearray(size)
    return memoryview(mmap.mmap(-1, size))


def _interruptible(work: Callable[[], bool], *, stop: Callable[[], object], name: str) -> bool:
    """``work()`` on a worker thread, this thread waiting where a signal can interrupt it.

    On ``KeyboardInterrupt`` (or any exception raised into the wait),
    ``stop()`` ends the work (it drops the process, which wakes a send
    blocked on the window), the worker gets :data:`STOP_WAIT` s to finish
    its packet, and the exception goes on to the caller.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as e:
            outcome["error"] = e

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    try:
        worker.join()
    except BaseException:
        with contextlib.suppress(Exception):  # the interrupt, not a failure to stop, goes on
            stop()
        worker.join(STOP_WAIT)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return bool(outcome["value"])


def _explain_signal(name: str) -> tuple[str, str]:
    """(what happened, what to do) for a remote server killed by signal *name*."""
    return (f"The remote fleche server was killed by signal SIG{name}.",
            "Something on the remote host stopped it: the out-of-memory killer sends KILL, "
            "a batch scheduler or an administrator TERM. Check its memory and time limits; "
            "the next operation starts a new server.")


def _explain_exit(status: int, stderr: str, command: str) -> tuple[str, str]:
    """Turn the remote exit status and stderr into (what happened, what to do)."""
    lowered = stderr.lower()
    if "no module named fleche" in lowered:
        return (f"fleche is not installed for the remote python (exit status {status}).",
                "Install it there (pip install fleche cloudpickle), or point python= or "
                "setup_commands at an environment that has it.")
    if status == 127:
        return ("The remote command was not found (exit status 127).",
                "Check python= (a full path helps) and setup_commands.")
    if status == 126:
        return ("The remote command is not executable (exit status 126).",
                "Check python= and the permissions of that file.")
    if " && " in command and "traceback" not in lowered:
        return (f"The remote command exited with status {status} before the server started.",
                "A setup command or the cd into workdir failed; see the stderr below.")
    return (f"The remote fleche server exited with status {status}.",
            "Read its stderr below; call reconnect() on the cache after fixing the cause.")
