"""An in-process remote for tests: fleche's own server loop on a thread, over socketpairs.

:class:`MemoryRemote` is an opener for :class:`~.server.RemoteServer`, as
httpx's ``MockTransport`` is a transport: each process it opens runs
:func:`fleche.remote.serve`, the very loop ``python -m fleche remote
--serve`` runs, against a cache of this process (an in-memory or
temporary-directory fleche cache).  The bytes cross real sockets, so the
frame code, the channel pool and the error messages above the
:class:`~.process.RemoteProcess` seam run exactly as they do against
sshd, without one.

A :class:`Script` says how each process behaves from its start (text on
stdout or stderr, an exit before serving, starting stalled), and the
methods of :class:`MemoryProcess` make a running one fail the ways a remote
does: :meth:`~MemoryProcess.die` by a signal, :meth:`~MemoryProcess.exit`
with a status, :meth:`~MemoryProcess.lose` the connection,
:meth:`~MemoryProcess.stall`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

from fleche.caches import BaseCache
from fleche.remote import serve

from ..errors import RemoteConnectionError
from .process import Counter
from .sockets import SocketProcess

#: Bound on any wait of the double's own (a stalled process, the end of its thread).
_WAIT = 30.0


@dataclass(frozen=True)
class Script:
    """How a :class:`MemoryProcess` behaves from its start.

    Attributes:
        stderr: lines written to stderr first (a setup command announcing itself).
        stdout: bytes written to stdout before serving (a chatty ``.bashrc``).
        exit_status: exit with this status instead of serving (python missing: 127).
        stalled: start stalled, answering nothing until :meth:`MemoryProcess.resume`.
    """

    stderr: tuple[str, ...] = ()
    stdout: bytes = b""
    exit_status: int | None = None
    stalled: bool = False


class _Stream:
    """One end of the server's stdio as the file object ``serve`` wants, counted and gated."""

    def __init__(self, sock: socket.socket, flowing: threading.Event) -> None:
        self._file = sock.makefile("rwb")
        self._flowing = flowing
        self.moved = 0

    def read(self, size: int) -> bytes:
        self._flowing.wait(_WAIT)
        data = self._file.read(size)
        self.moved += len(data)
        return data

    def write(self, data: bytes) -> int:
        self._flowing.wait(_WAIT)
        n = self._file.write(data)
        self.moved += n
        return n

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


class MemoryProcess(SocketProcess):
    """fleche's server loop on a thread of this process, reached through three socketpairs."""

    def __init__(self, cache: BaseCache, *, command: str, cache_name: str | None,
                 script: Script) -> None:
        pairs = [socket.socketpair() for _ in range(3)]
        super().__init__(*(ours for ours, _ in pairs), command=command)
        self._theirs = [theirs for _, theirs in pairs]
        self._flowing = threading.Event()
        if not script.stalled:
            self._flowing.set()
        self.stdin = _Stream(self._theirs[0], self._flowing)
        self.stdout = _Stream(self._theirs[1], self._flowing)
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._status: int | None = None
        self._signal: str | None = None
        self._alive = True
        self._lost_reason: str | None = None
        self._thread = threading.Thread(target=self._run, args=(cache, cache_name, script),
                                        name="fleche-ssh-memory-server", daemon=True)
        self._thread.start()

    # -- the remote side -------------------------------------------------------

    def _run(self, cache: BaseCache, cache_name: str | None, script: Script) -> None:
        status: int | None = script.exit_status
        try:
            for line in script.stderr:
                self.say(line)
            if script.stdout:
                self.stdout.write(script.stdout)
                self.stdout.flush()
            if status is None:
                serve(self.stdin, self.stdout, cache, cache_name=cache_name)
                self._flowing.wait(_WAIT)  # a stalled server does not even exit
                status = 0
        except Exception:
            status = None  # its stdio went away under it: killed, or the connection lost
        finally:
            self._end(status=status)

    def say(self, line: str) -> None:
        """Write *line* to the process's stderr, as a remote server's warning would be."""
        with contextlib.suppress(OSError):
            self._theirs[2].sendall(line.encode() + b"\n")

    def _end(self, *, status: int | None = None, signal: str | None = None,
             lost: str | None = None, alive: bool = True) -> None:
        """Record how the process ended (the first ending wins), then close its stdio.

        In that order, as sshd reports an exit before the channel closes: the
        client finds the status as soon as it sees EOF.
        """
        with self._lock:
            if self._ended.is_set():
                return
            self._status, self._signal = status, signal
            self._alive, self._lost_reason = alive, lost
            self._ended.set()
        # shutdown() first: it wakes the server thread blocked on a socket, so that
        # closing the file objects (which waits for their lock) does not hang.
        for sock in self._theirs:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._flowing.set()  # a stalled server thread wakes up, to find its stdio gone
        for stream in (self.stdin, self.stdout):
            stream.close()
        for sock in self._theirs:
            sock.close()

    # -- faults a test injects ---------------------------------------------------

    def die(self, signal: str = "KILL") -> None:
        """End now as if killed by *signal* (``KILL``: the out-of-memory killer)."""
        self._end(signal=signal)

    def exit(self, status: int) -> None:
        """End now with exit *status*, as a server that crashed does."""
        self._end(status=status)

    def lose(self, reason: str | None = None) -> None:
        """Lose the connection: no status will come; *reason* as a keepalive verdict would say."""
        self._end(lost=reason, alive=False)

    def stall(self) -> None:
        """Stop reading and answering, as a server blocked on a dead file system does."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def join(self, timeout: float = _WAIT) -> bool:
        """Wait for the server thread to finish; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- RemoteProcess -------------------------------------------------------------

    def kill(self) -> None:
        super().kill()
        self._end()  # it lost its stdio: no status reaches anyone

    def exit_status(self, wait: float) -> int | None:
        self._ended.wait(wait)
        return self._status

    def exit_signal(self) -> str | None:
        return self._signal

    def connection_alive(self) -> bool:
        return self._alive

    def known_lost(self) -> bool:
        return not self._alive

    def lost_reason(self) -> str | None:
        return self._lost_reason


class MemoryRemote:
    """Opens processes serving *cache* (the opener a test gives RemoteServer), and lists them.

    Attributes:
        script: how the next process opened behaves; replace it between opens.
        counter: given to each process opened, as its byte counter.
        refuse: how many of the next opens fail, as when the server allows no
            more sessions on the connection.
        processes: every process opened, oldest first.
    """

    def __init__(self, cache: BaseCache, *, cache_name: str | None = None,
                 script: Script = Script(), counter: Counter | None = None) -> None:
        self.cache = cache
        self.cache_name = cache_name
        self.script = script
        self.counter = counter
        self.refuse = 0
        self.processes: list[MemoryProcess] = []
        self._lock = threading.Lock()

    def __call__(self, command: str) -> MemoryProcess:
        with self._lock:
            if self.refuse > 0:
                self.refuse -= 1
                raise RemoteConnectionError(
                    "Could not start the remote command on memory: the server refused the "
                    "channel. The server may limit sessions per connection (MaxSessions); "
                    "call reconnect() to retry."
                )
            process = MemoryProcess(self.cache, command=command, cache_name=self.cache_name,
                                    script=self.script)
            process.counter = self.counter
            self.processes.append(process)
        return process

    def wait_for(self, count: int, timeout: float = _WAIT) -> bool:
        """Wait until *count* processes have been opened; whether they were."""
        deadline = time.monotonic() + timeout
        while len(self.processes) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
