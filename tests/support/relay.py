"""A TCP relay on loopback: a slow link, and a network that drops and comes back.

Loopback answers in microseconds, which hides what matters on a VPN or a
long-distance link: how many round trips an operation waits for, and
whether calls from several threads can overlap their waiting.  Putting
this relay between the client and sshd adds ``2 * one_way_delay`` to every
round trip without throttling bandwidth: each direction has a reader that
timestamps chunks as they arrive and a writer that forwards each one once
its time has come, so chunks stay in order and keep flowing while earlier
ones wait.

It also plays the network a laptop loses when it sleeps or changes Wi-Fi.
:meth:`DelayRelay.drop` takes it away: the port stops listening (a new
connection is refused) and the open connections either go silent (what
either end sends vanishes, and neither end can tell, as over a dead
link) or, with ``cut=True``, are closed at once.  :meth:`DelayRelay.restore`
brings it back on the same port, and a connection that went silent is
then closed the next time either end sends, or at once if something was
sent into the silence: the far side, or a NAT on the way, has forgotten
it.  Used by ``benchmarks/harness.py`` for latency and by the tests of
coming back after a drop.
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
class _Link:
    """One relayed connection, and the relay's era it was opened in."""

    sockets: tuple[socket.socket, socket.socket]
    era: int
    #: Something was sent while the network was down (and vanished).
    sent_into_silence: bool = False

    def cut(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@dataclass
class DelayRelay:
    """Listens on 127.0.0.1:``port`` and forwards to 127.0.0.1:``target_port``."""

    target_port: int
    one_way_delay: float = 0.0
    port: int = 0
    _listener: socket.socket | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _links: list[_Link] = field(default_factory=list, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Counts the drops: a link of an earlier era than this one was forgotten.
    _era: int = 0
    _down: bool = False

    def start(self) -> DelayRelay:
        self._listen()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.cut()
        for thread in self._threads:
            thread.join(2 * POLL + self.one_way_delay)

    def drop(self, *, cut: bool = False) -> None:
        """The network goes away: nothing listens, and the open connections go silent (or, with
        *cut*, are closed now)."""
        with self._lock:
            self._down = True
            self._era += 1
            links = list(self._links) if cut else []
        self._close_listener()
        for link in links:
            link.cut()

    def restore(self) -> None:
        """The network comes back on the same port; the connections open across the drop are
        cut when next used (at once if something was sent into the silence)."""
        self._listen()
        with self._lock:
            self._down = False
            stale = [link for link in self._links if link.sent_into_silence]
        for link in stale:
            link.cut()

    def __enter__(self) -> DelayRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(POLL)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "relay-accept", listener)

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() takes it out of LISTEN at once, even while its accept loop
            # waits on it, so that restore() can bind the same port again.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _spawn(self, target, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set() and listener is self._listener:
            try:
                client, _ = listener.accept()
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
            with self._lock:
                link = _Link((client, server), self._era)
                self._links.append(link)
            self._pipe(link, client, server)
            self._pipe(link, server, client)

    def _pipe(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        """Forward source -> sink, each chunk ``one_way_delay`` after it arrived."""
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self._spawn(self._read, "relay-read", link, source, chunks)
        self._spawn(self._write, "relay-write", sink, chunks)

    def _read(self, link: _Link, source: socket.socket, chunks: queue.Queue) -> None:
        while True:
            try:
                data = source.recv(RECV_SIZE)
            except OSError:
                data = b""
            if data:
                with self._lock:
                    down, forgotten = self._down, link.era != self._era
                    link.sent_into_silence |= down and forgotten
                if down:
                    continue  # into the silence
                if forgotten:
                    link.cut()  # the far side no longer knows this connection
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
