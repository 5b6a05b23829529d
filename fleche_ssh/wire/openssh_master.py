"""The remote server run by a live OpenSSH ControlMaster, in passenger mode.

A user who ran ``ssh cluster`` with ``ControlMaster``/``ControlPath`` has an
authenticated connection already: the one-time code was typed there.  Its
control socket speaks OpenSSH's mux protocol (``PROTOCOL.mux`` and
``mux.c`` in openssh-portable).  In passenger mode the client asks the
master to run a command (``MUX_C_NEW_SESSION``) and hands it three file
descriptors with ``SCM_RIGHTS``; the master wires the remote command's
stdin, stdout and stderr to them and does all the SSH work, crypto
included, in C.  fleche-ssh gives it one end of three socketpairs and
speaks frames over the other ends, so everything above the remote-process
seam (frames, errors, stderr, progress) is the same as over Paramiko.

Facts of the protocol this follows (mux protocol version 4):

* every message is ``uint32 length``, ``uint32 type``, body; strings are
  ``uint32 length`` + bytes;
* the four flags of ``MUX_C_NEW_SESSION`` go as uint32, not as the
  one-byte booleans ``PROTOCOL.mux`` shows (``mux.c`` writes
  ``sshbuf_put_u32``);
* each descriptor travels with a one-byte message of its own;
* the exit status comes as ``MUX_S_EXIT_MESSAGE``; a remote command killed
  by a signal gets none (the master does not relay ``exit-signal``), and
  the master then just closes the control connection.

Each wait on the master is bounded.  A reply out of sequence or of an
unknown type is a :class:`MasterError` naming it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from dataclasses import dataclass

from ..errors import RemoteConnectionError
from .sockets import SocketProcess
from .unix import connect_owned

logger = logging.getLogger("fleche_ssh.master")

VERSION = 4
MUX_MSG_HELLO = 0x00000001
MUX_C_NEW_SESSION = 0x10000002
MUX_C_ALIVE_CHECK = 0x10000004
MUX_S_OK = 0x80000001
MUX_S_PERMISSION_DENIED = 0x80000002
MUX_S_FAILURE = 0x80000003
MUX_S_EXIT_MESSAGE = 0x80000004
MUX_S_ALIVE = 0x80000005
MUX_S_SESSION_OPENED = 0x80000006
MUX_S_TTY_ALLOC_FAIL = 0x80000008
#: "no escape character", as ``ssh -e none`` sends it.
_NO_ESCAPE = 0xFFFFFFFF
#: Bound on each exchange with the master (hello, alive check, session open).
MASTER_TIMEOUT = 10.0
#: Largest control message accepted from the master; real ones are tiny.
_MAX_MESSAGE = 1 << 16
#: Socket buffer asked for the stdio socketpairs: the master moves up to a
#: window's worth at a time, and a small buffer would cost a wake-up per 200 KiB.
_STDIO_BUFFER = 4 << 20

_U32 = struct.Struct(">I")


class MasterError(RemoteConnectionError):
    """A live OpenSSH master refused or broke a request."""


def _string(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


class _Reader:
    """Fields of one control message, read in order."""

    def __init__(self, body: bytes, path: str) -> None:
        self._body, self._at, self._path = body, 0, path

    def u32(self) -> int:
        if self._at + 4 > len(self._body):
            raise MasterError(f"the OpenSSH master at {self._path} sent a truncated message")
        (value,) = _U32.unpack_from(self._body, self._at)
        self._at += 4
        return value

    def string(self) -> str:
        size = self.u32()
        raw = self._body[self._at : self._at + size]
        self._at += size
        return raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class Master:
    """A live master: its control socket path and its pid (as ``ssh -O check`` shows it)."""

    path: str
    pid: int


class _Control:
    """One connection to a master's control socket, past the hello exchange."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock, self.path = sock, path
        self._next_id = 1
        self.send(MUX_MSG_HELLO, _U32.pack(VERSION))
        kind, reader = self.receive(MASTER_TIMEOUT)
        if kind != MUX_MSG_HELLO:
            raise MasterError(f"the OpenSSH master at {path} answered hello with 0x{kind:08x}")
        version = reader.u32()
        if version != VERSION:
            raise MasterError(
                f"the OpenSSH master at {path} speaks mux protocol {version}, fleche-ssh "
                f"speaks {VERSION}. fleche-ssh logs in itself instead if you set ControlPath "
                f"none."
            )

    def request_id(self) -> int:
        rid, self._next_id = self._next_id, self._next_id + 1
        return rid

    def send(self, kind: int, body: bytes) -> None:
        self.sock.sendall(_U32.pack(len(body) + 4) + _U32.pack(kind) + body)

    def receive(self, timeout: float) -> tuple[int, _Reader]:
        """The next message, waiting up to *timeout* s; EOFError if the master closed."""
        self.sock.settimeout(timeout)
        try:
            (size,) = _U32.unpack(self._exactly(4))
            if not 4 <= size <= _MAX_MESSAGE:
                raise MasterError(f"the OpenSSH master at {self.path} sent a {size}-byte message")
            body = self._exactly(size)
        except TimeoutError:
            raise MasterError(
                f"the OpenSSH master at {self.path} did not answer within {timeout:g} s. "
                f"Check it with `ssh -O check -S {self.path} HOST`."
            ) from None
        (kind,) = _U32.unpack_from(body)
        return kind, _Reader(body[4:], self.path)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError(f"the OpenSSH master at {self.path} closed the control connection")
            data += chunk
        return data

    def reply(self, rid: int, expected: int, during: str) -> _Reader:
        """The reply to request *rid*, which must be of type *expected*."""
        try:
            kind, reader = self.receive(MASTER_TIMEOUT)
        except EOFError as e:
            raise MasterError(f"{e} during {during}") from None
        answered = reader.u32()
        if answered != rid:
            raise MasterError(
                f"the OpenSSH master at {self.path} answered request {answered} during "
                f"{during}; request {rid} was pending"
            )
        if kind in (MUX_S_PERMISSION_DENIED, MUX_S_FAILURE):
            word = "refused" if kind == MUX_S_PERMISSION_DENIED else "failed"
            raise MasterError(
                f"the OpenSSH master at {self.path} {word} {during}: {reader.string()}. "
                f"Set ControlPath none to have fleche-ssh log in itself."
            )
        if kind != expected:
            raise MasterError(
                f"the OpenSSH master at {self.path} answered {during} with unknown message "
                f"0x{kind:08x}"
            )
        return reader

    def close(self) -> None:
        self.sock.close()


def find_master(path: str) -> Master | None:
    """The live master listening on *path*, or None if there is none (no socket, a stale one).

    Raises:
        UntrustedSocket: the socket or its listener is not this user's.
        MasterError: something listens there but does not answer as a master.
    """
    sock = connect_owned(path, MASTER_TIMEOUT)
    if sock is None:
        return None
    try:
        control = _Control(sock, path)
        rid = control.request_id()
        control.send(MUX_C_ALIVE_CHECK, _U32.pack(rid))
        pid = control.reply(rid, MUX_S_ALIVE, "the alive check").u32()
    except EOFError:
        return None
    finally:
        sock.close()
    return Master(path=path, pid=pid)


class MasterProcess(SocketProcess):
    """A command the master runs on its connection, our stdio being three socketpairs."""

    def __init__(self, master: Master, command: str) -> None:
        sock = connect_owned(master.path, MASTER_TIMEOUT)
        if sock is None:
            raise MasterError(f"the OpenSSH master at {master.path} is gone")
        self.master = master
        self._control = control = _Control(sock, master.path)
        pairs = [socket.socketpair() for _ in range(3)]
        theirs = [other for _, other in pairs]
        super().__init__(*(mine for mine, _ in pairs), command=command)
        self._exit: int | None = None
        self._ended = False
        try:
            for s in (mine for pair in pairs for mine in pair):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _STDIO_BUFFER)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _STDIO_BUFFER)
            rid = control.request_id()
            flags = _U32.pack(0) * 4  # tty, X11, agent, subsystem: all off
            control.send(MUX_C_NEW_SESSION, _U32.pack(rid) + _string(b"") + flags
                         + _U32.pack(_NO_ESCAPE) + _string(b"") + _string(command.encode()))
            for end in theirs:
                socket.send_fds(control.sock, [b"\0"], [end.fileno()])
            self.session_id = control.reply(rid, MUX_S_SESSION_OPENED, "the session request").u32()
        except BaseException:
            self.kill()
            raise
        finally:
            for end in theirs:
                end.close()
        logger.debug("session %d through the OpenSSH master at %s (pid %d)", self.session_id,
                     master.path, master.pid)

    def exit_status(self, wait: float) -> int | None:
        """The status from ``MUX_S_EXIT_MESSAGE``, read off the control socket within *wait* s."""
        deadline = time.monotonic() + wait
        while not self._ended:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                kind, reader = self._control.receive(left)
            except (EOFError, OSError, MasterError):
                self._ended = True  # closed without a status: the command died of a signal
                break
            if kind == MUX_S_EXIT_MESSAGE and reader.u32() == self.session_id:
                self._exit = reader.u32()
            elif kind != MUX_S_TTY_ALLOC_FAIL:
                logger.debug("ignoring mux message 0x%08x from %s", kind, self.master.path)
        return self._exit

    def exit_signal(self) -> str | None:
        return None  # the master does not relay exit-signal

    def connection_alive(self) -> bool:
        """Whether the master still answers (its connection to the host is then up too)."""
        try:
            return find_master(self.master.path) is not None
        except (OSError, RemoteConnectionError):
            return False

    def lost_reason(self) -> str | None:
        if self.connection_alive():
            return None
        return f"The OpenSSH master (pid {self.master.pid}, {self.master.path}) went away"

    def kill(self) -> None:
        super().kill()
        self._control.close()
