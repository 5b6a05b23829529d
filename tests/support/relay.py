"""A TCP relay on loopback: a slow link, and a network that drops and comes back.

Loopback answers in microseconds, which hides what matters on a VPN or a
long-distance link: how many round trips an operation waits for, whether
calls from several threads can overlap their waiting, and whether a
transfer keeps enough bytes in flight to fill the link.  Putting this
relay between the client and sshd adds ``2 * one_way_delay`` to every
round trip: each direction has a reader that timestamps chunks as they
arrive and a writer that forwards each one once its time has come, so
chunks stay in order and keep flowing while earlier ones wait.

By default bandwidth is not throttled.  With ``rate`` (bytes per second)
each direction is a link of that rate: a chunk leaves once the ones before
it have gone out at that rate, then travels ``one_way_delay``.  Like a
router, the link queues at most ``QUEUE_SECONDS`` of traffic: the reader
stops reading beyond that, and small socket buffers pass the back-pressure
on to the sender instead of hiding megabytes in the kernel.

It also plays the network a laptop loses when it sleeps or changes Wi-Fi.
:meth:`DelayRelay.drop` takes it away: the port stops listening (a new
connection is refused) and the open connections either go silent (what
either end sends vanishes, and neither end can tell, as over a dead
link) or, with ``cut=True``, are closed at once.  :meth:`DelayRelay.restore`
brings it back on the same port, and a connection that went silent is
then closed the next time either end sends, or at once if something was
sent into the silence: the far side, or a NAT on the way, has forgotten
it.  Used by ``benchmarks/harness.py`` for latency and bandwidth, and by
the tests of slow links and of coming back after a drop.
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
#: A rate-capped link queues at most this much time's worth of traffic.
QUEUE_SECONDS = 0.05
#: Socket buffers of a rate-capped relay: small, so that a full queue slows the sender.
CAPPED_SOCKET_BUFFER = 1 << 18


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
    """Listens on ``host``:``port`` and forwards to 127.0.0.1:``target_port``.

    ``host`` is loopback unless a test needs the server seen at another
    address of this machine (``CheckHostIP`` ignores loopback).
    """

    target_port: int
    one_way_delay: float = 0.0
    #: Bytes per second in each direction; None: as fast as loopback goes.
    rate: float | None = None
    port: int = 0
    host: str = "127.0.0.1"
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
        listener = self._socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
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

    def _socket(self) -> socket.socket:
        """A TCP socket; with small buffers when the link is rate-capped (accepted ones inherit)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rate is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, CAPPED_SOCKET_BUFFER)
        return sock

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
            server = self._socket()
            try:
                server.settimeout(5)
                server.connect(("127.0.0.1", self.target_port))
            except OSError:
                server.close()
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
        link_free = 0.0  # when the capped link has sent everything queued so far
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
            now = time.monotonic()
            if self.rate is None:
                chunks.put((now + self.one_way_delay, data))
            else:
                link_free = max(now, link_free) + len(data) / self.rate
                chunks.put((link_free + self.one_way_delay, data))
                backlog = link_free - now - QUEUE_SECONDS
                if backlog > 0:
                    time.sleep(backlog)  # the queue is full: the sender has to wait
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


def main(argv: list[str] | None = None) -> int:
    """``python relay.py TARGET_PORT ONE_WAY_DELAY [RATE]``: relay until stdin closes.

    Prints the listening port on its first line.  The benchmark runs its
    relays this way, in processes of their own: in the benchmark's process
    their threads would compete for the interpreter lock with the Python
    client being timed (and not with the stock client, a separate ``ssh``).
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    rate = float(args[2]) if len(args) > 2 else None
    with DelayRelay(int(args[0]), float(args[1]), rate=rate) as relay:
        print(relay.port, flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
