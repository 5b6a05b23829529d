"""A TCP relay that holds every chunk back for a fixed time: a slow link on loopback.

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
class DelayRelay:
    """Listens on ``host``:``port`` and forwards to 127.0.0.1:``target_port``.

    ``host`` is loopback unless a test needs the server seen at another
    address of this machine (``CheckHostIP`` ignores loopback).
    """

    target_port: int
    one_way_delay: float
    #: Bytes per second in each direction; None: as fast as loopback goes.
    rate: float | None = None
    port: int = 0
    host: str = "127.0.0.1"
    _listener: socket.socket | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _sockets: list[socket.socket] = field(default_factory=list, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    def start(self) -> DelayRelay:
        listener = self._socket()
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

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
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
                self._sockets.append(sock)
            self._pipe(client, server)
            self._pipe(server, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        """Forward source -> sink, each chunk ``one_way_delay`` after it arrived."""
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self._spawn(self._read, "relay-read", source, sink, chunks)
        self._spawn(self._write, "relay-write", sink, chunks)

    def _read(self, source: socket.socket, sink: socket.socket, chunks: queue.Queue) -> None:
        link_free = 0.0  # when the capped link has sent everything queued so far
        while True:
            try:
                data = source.recv(RECV_SIZE)
            except OSError:
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
