"""A TCP relay that holds every chunk back for a fixed time: a slow link on loopback.

Loopback answers in microseconds, which hides what matters on a VPN or a
long-distance link: how many round trips an operation waits for, and
whether calls from several threads can overlap their waiting.  Putting
this relay between the client and sshd adds ``2 * one_way_delay`` to every
round trip without throttling bandwidth: each direction has a reader that
timestamps chunks as they arrive and a writer that forwards each one once
its time has come, so chunks stay in order and keep flowing while earlier
ones wait.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

#: Bound on every blocking wait in the relay, so stop() always finishes.
POLL = 0.2
RECV_SIZE = 1 << 16


@dataclass
class DelayRelay:
    """Listens on ``host``:``port`` and forwards to 127.0.0.1:``target_port``.

    ``host`` is loopback unless a test needs the server seen at another
    address of this machine (``CheckHostIP`` ignores loopback).
    """

    target_port: int
    one_way_delay: float
    port: int = 0
    host: str = "127.0.0.1"
    _listener: socket.socket | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _sockets: list[socket.socket] = field(default_factory=list, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    def start(self) -> DelayRelay:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((self.host, 0))
        listener.listen(64)
        listener.settimeout(POLL)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "relay-accept")
        return self

    def stop(self) -> None:
        self._stop.set()
        for sock in [self._listener, *self._sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(2 * POLL + self.one_way_delay)

    def __enter__(self) -> DelayRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            self._pipe(client, server)
            self._pipe(server, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        """Forward source -> sink, each chunk ``one_way_delay`` after it arrived."""
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self._spawn(self._read, "relay-read", source, sink, chunks)
        self._spawn(self._write, "relay-write", sink, chunks)

    def _read(self, source: socket.socket, sink: socket.socket, chunks: queue.Queue) -> None:
        while True:
            try:
                data = source.recv(RECV_SIZE)
            except OSError:
                data = b""
            chunks.put((time.monotonic() + self.one_way_delay, data))
            if not data:
                return

    def _write(self, sink: socket.socket, chunks: queue.Queue) -> None:
        while not self._stop.is_set():
            try:
                due, data = chunks.get(timeout=POLL)
            except queue.Empty:
                continue
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
