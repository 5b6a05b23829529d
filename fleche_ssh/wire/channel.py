"""One exec channel running the remote fleche server, and the frame I/O on it.

The wire format is fleche's own: a 4-byte big-endian length, then a
cloudpickle body.  The I/O is written here rather than through
``Channel.makefile()`` or ``Channel.sendall()`` because both copy the
unsent or unread rest on every packet in Paramiko 5.1, which makes a
large value quadratic.  Frames go out as slices of one memoryview, and
come in through ``recv`` into a buffer allocated once from the header,
which is unpickled in place: the client holds one copy of the bytes and
the value, where the stock client holds three.

A request is pickled before any channel is touched, so a value that cannot
be sent (unpicklable, or over the 4 GiB a frame can describe) fails with
nothing sent.  An answer is checked before it is trusted: a pickle starts
with ``PROTO <n>`` and ends with ``STOP``, and bytes that do not (text a
start-up file printed, a frame shifted by stray bytes) raise
:class:`ProtocolError` quoting them instead of hanging on a bogus length
or failing deep inside ``pickle``.

stdout and stderr share the channel's window, so unread stderr would
stall stdout: a daemon thread drains stderr into the per-host logger and
a ring buffer that error messages quote.  Shutting down happens in one
place, :meth:`ExecChannel.close`: EOF, a bounded wait for the exit status,
then close.
"""

from __future__ import annotations

import collections
import logging
import pickle
import shlex
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle
import paramiko

from ..errors import ProtocolError, RemoteCommandError, RemoteConnectionError, ValueTooLarge
from ..ssh.transport import EXIT_SIGNAL
from .pump import CHUNK, drain_lines, send_all

HEADER = struct.Struct(">I")
#: Largest body the 4-byte length header can describe.
MAX_FRAME = (1 << 32) - 1
#: A frame this small goes out as one packet, header and body together.
SMALL_FRAME = 1 << 16
#: Asked of the channel for the start of an answer, so that a small answer
#: (most of them) arrives in one read, header and body together.
FIRST_READ = 1 << 16
STDERR_LINES = 50
#: Bound on waiting for the remote exit status when closing or diagnosing.
EXIT_WAIT = 2.0
#: A body is a pickle of protocol 2 or later: PROTO <protocol> ... STOP.
_PROTO, _STOP = pickle.PROTO[0], pickle.STOP[0]
_PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)
#: Bytes of a damaged answer quoted in the error.
_QUOTED = 64

#: One request, pickled: the 4-byte header and the body.
Frame = tuple[bytes, bytes]


def encode_frame(request: tuple[str, tuple[Any, ...], dict[str, Any]]) -> Frame:
    """Pickle a ``(method, args, kwargs)`` request, refusing one no header can describe."""
    body = cloudpickle.dumps(request)
    if len(body) > MAX_FRAME:
        raise ValueTooLarge(
            f"{request[0]}: the value pickles to {len(body):,} bytes, and fleche's wire format "
            f"carries at most {MAX_FRAME:,} bytes (4 GiB) per request, so nothing was sent. "
            f"Save it in parts smaller than 4 GiB."
        )
    return HEADER.pack(len(body)), body


class Undecodable(Exception):
    """A whole answer arrived, but this interpreter cannot rebuild what it holds.

    Typically a class or module the remote has and this side lacks.  The
    channel is still in step (the frame was read to its end), unlike after
    a :class:`ProtocolError`.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error

    def explained(self, during: str, host: str) -> Exception:
        """The original error, with a note saying where the object came from.

        Its type stays what unpickling raised (``ModuleNotFoundError`` ...),
        as loading the same value from a local cache would raise.
        """
        self.error.add_note(
            f"fleche-ssh: the remote cache on {host} answered {during!r} with an object this "
            f"Python cannot unpickle: it needs a module or class the remote side has and this "
            f"side lacks (or has in another version). Install the same packages here."
        )
        return self.error


def server_command(python: str, cache_name: str | None, setup_commands: Sequence[str],
                   workdir: str | None) -> str:
    """The remote shell command, built as the stock ``SshCache`` builds it.

    ``cd <workdir> && <setup commands> && exec <python> -m fleche remote
    --serve [--cache NAME]``: the setup commands verbatim, everything else
    shell-quoted so that no value runs as a command.  A leading ``~/`` stays
    unquoted so the remote shell expands it to the remote home.
    """
    argv = [python, "-m", "fleche", "remote", "--serve"]
    if cache_name is not None:
        argv += ["--cache", cache_name]
    server = " ".join(_quote(a) for a in argv)
    prefix = ([f"cd {_quote(workdir)}"] if workdir is not None else []) + list(setup_commands)
    if not prefix:
        return server
    return " && ".join((*prefix, f"exec {server}"))


def _quote(value: str) -> str:
    if value == "~":
        return value
    if value.startswith("~/"):
        return "~/" + shlex.quote(value[2:])
    return shlex.quote(value)


def host_logger_name(host: str) -> str:
    """The stock cache's per-host logger: ``fleche.remote.host.<host>``."""
    return "fleche.remote.host." + host.replace(".", "_").replace("@", "_at_")


class ChannelClosed(EOFError):
    """The channel ended before a whole frame arrived."""


class ExecChannel:
    """The remote fleche server on one channel: frames out, frames in, stderr aside."""

    def __init__(self, channel: paramiko.Channel, *, host: str, command: str,
                 lost_reason: Callable[[], str | None] = lambda: None) -> None:
        self._channel = channel
        self.command = command
        self._lost_reason = lost_reason
        #: Bytes read past the end of the last answer (none, unless the server misbehaves).
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
        if len(body) <= SMALL_FRAME:
            self._send(memoryview(header + body))
            return
        self._send(memoryview(header + body[: CHUNK - HEADER.size]))
        self._send(memoryview(body)[CHUNK - HEADER.size :])

    def _send(self, view: memoryview) -> None:
        if not send_all(self._channel.send, view):
            raise ChannelClosed("the channel closed while sending")

    def recv_frame(self) -> Any:
        """The next answer, unpickled.

        Raises:
            ProtocolError: the bytes are not a fleche frame.
            Undecodable: the frame is whole but cannot be unpickled here.
        """
        head = self._recv_at_least(b"", HEADER.size)
        (size,) = HEADER.unpack_from(head)
        if size < 3:
            raise self._not_a_frame(head[:_QUOTED])
        # Check the pickle's first two bytes before trusting the length: text on
        # stdout reads as a length of a gigabyte or more, and waiting for that
        # many bytes would hang (and allocating them could exhaust memory).
        head = self._recv_at_least(head, HEADER.size + 2)
        if head[4] != _PROTO or head[5] not in _PROTOCOLS:
            raise self._not_a_frame(head[:_QUOTED])
        end = HEADER.size + size
        body: bytearray | memoryview
        if len(head) >= end:
            self._pending = head[end:]
            body = memoryview(head)[HEADER.size : end]
        else:
            body = bytearray(size)
            body[: len(head) - HEADER.size] = head[HEADER.size :]
            self._recv_into(memoryview(body)[len(head) - HEADER.size :])
        # A few stray bytes before a frame shift it: the "body" then ends
        # inside the real frame, not on STOP.
        if body[-1] != _STOP:
            raise self._not_a_frame(head[: HEADER.size] + bytes(body[: _QUOTED]))
        try:
            return cloudpickle.loads(body)
        except pickle.UnpicklingError as e:
            raise self._not_a_frame(head[: HEADER.size] + bytes(body[: _QUOTED])) from e
        except Exception as e:
            raise Undecodable(e) from e

    def _not_a_frame(self, seen: bytes) -> ProtocolError:
        """What was written to stdout instead of a frame, with whatever has arrived since."""
        channel = self._channel
        while len(seen) < _QUOTED and channel.recv_ready():
            seen += channel.recv(_QUOTED - len(seen))
        return ProtocolError(
            f"The remote side wrote something that is not a fleche frame to stdout: "
            f"{seen!r}. Usually a shell start-up file (.bashrc) or a setup command "
            f"prints text; send that output to stderr or remove it."
        )

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
                chunk = self._channel.recv(FIRST_READ)
            if not chunk:
                raise ChannelClosed(f"the channel closed after {len(head)} of {size} bytes")
            head += chunk
        return head

    def _recv_into(self, view: memoryview) -> None:
        got, size = 0, len(view)
        recv = self._channel.recv
        while got < size:
            chunk = recv(min(size - got, CHUNK))
            if not chunk:
                raise ChannelClosed(f"the channel closed after {got} of {size} bytes")
            view[got : got + len(chunk)] = chunk
            got += len(chunk)

    # -- stderr and shutdown ---------------------------------------------------

    def _drain_stderr(self) -> None:
        drain_lines(self._channel.recv_stderr, self._stderr_line)

    def _stderr_line(self, text: str) -> None:
        self.stderr_tail.append(text)
        self._log.info("%s", text)

    def exit_status(self, wait: float = EXIT_WAIT) -> int | None:
        """The remote command's exit status, or None if the server reported none.

        Paramiko counts a closed channel as "ready" with status -1 when no
        status came: the connection was lost (or the process died of a
        signal), which must not read as the command failing.
        """
        deadline = time.monotonic() + wait
        while not self._channel.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._channel.exit_status_ready():
            status = self._channel.recv_exit_status()
            return status if status >= 0 else None
        return None

    def exit_signal(self) -> str | None:
        """The signal that killed the remote command (``KILL``, ``TERM`` ...), if one did."""
        return getattr(self._channel, EXIT_SIGNAL, None)

    def failure(self, during: str, cause: BaseException) -> RemoteConnectionError:
        """An error saying why the remote server went away, with its last words."""
        if isinstance(cause, ProtocolError):
            return cause
        transport = self._channel.get_transport()
        alive = transport is not None and transport.is_active()
        status = self.exit_status() if alive else None
        signal = self.exit_signal()
        self._stderr_thread.join(0.5 if alive else 0.05)
        tail = "\n".join(self.stderr_tail)
        said = f"\nremote stderr (last {len(self.stderr_tail)} lines):\n{tail}" if tail else ""
        error_type: type[RemoteConnectionError] = RemoteCommandError
        if signal is not None:
            what, advice = _explain_signal(signal)
        elif status is None:
            error_type = RemoteConnectionError
            why = self._lost_reason()
            what = (f"{why}; {during!r} failed." if why
                    else f"The connection was lost during {during!r} ({cause}).")
            advice = "Call reconnect() on the cache to connect again."
        else:
            what, advice = _explain_exit(status, tail, self.command)
        return error_type(f"{what} {advice}\nremote command: {self.command}{said}")

    def close(self, wait: float = EXIT_WAIT) -> None:
        """EOF, up to *wait* seconds for the exit status, close; the stderr thread then ends."""
        channel = self._channel
        try:
            if not channel.closed:
                channel.shutdown_write()
                self.exit_status(wait)
        except Exception:
            pass
        finally:
            channel.close()
            # A finalizer may run this on any thread, the stderr thread included.
            if self._stderr_thread is not threading.current_thread():
                self._stderr_thread.join(0.5)


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
