"""A remote command whose stdin, stdout and stderr are three local sockets.

This is how a process is reached when something else runs it and hands us
its stdio: the socketpairs given to a live OpenSSH master, or the
in-process server of :mod:`.memory`.  The byte primitives are plain socket
calls here, once; how the command ended (status, signal, lost connection)
is told by whoever runs it, so that stays with each subclass.
"""

from __future__ import annotations

import contextlib
import select
import socket

from .process import RemoteProcess


class SocketProcess(RemoteProcess):
    """The stdio primitives of :class:`~.process.RemoteProcess` over three connected sockets."""

    def __init__(self, stdin: socket.socket, stdout: socket.socket, stderr: socket.socket,
                 *, command: str) -> None:
        self._stdin, self._stdout, self._stderr = stdin, stdout, stderr
        self.command = command

    def send(self, data: memoryview) -> int:
        try:
            return self._stdin.send(data)
        except (BrokenPipeError, ConnectionResetError):
            return 0  # the command no longer reads its stdin

    def recv(self, size: int) -> bytes:
        return self._stdout.recv(size)

    def recv_ready(self) -> bool:
        try:
            readable, _, _ = select.select([self._stdout], [], [], 0)
        except (OSError, ValueError):  # closed
            return False
        return bool(readable)

    def recv_into(self, view: memoryview) -> int:
        """Straight into the caller's buffer: one copy fewer than :meth:`recv`."""
        return self._stdout.recv_into(view)

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.shutdown(socket.SHUT_WR)

    def recv_stderr(self, size: int) -> bytes:
        return self._stderr.recv(size)

    def kill(self) -> None:
        # shutdown() first: it wakes a thread blocked reading the socket, close() does not.
        for sock in (self._stdin, self._stdout, self._stderr):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
