"""A channel's receive buffer that keeps each packet's bytes as they came.

Paramiko's ``BufferedPipe`` copies every packet into one ``array`` and
copies it out again on each read, and ``Channel.recv`` adds five Python
calls and three lock rounds around that (``read_ready``, ``read``, its own
window bookkeeping).  :class:`PacketBuffer` takes its place on the channels
:mod:`.paramiko_process` opens:

* a packet's data is queued as it arrived (``bytes``, or for a large
  packet a view of the decrypted packet), and a reader wanting at least
  that much gets it back (:meth:`PacketBuffer.take`), or several joined
  into one;
* a large answer's body is filled straight from the queue
  (:meth:`PacketBuffer.take_into`), one copy from packet to body;
* :attr:`PacketBuffer.ready` is the queue's C-level ``__len__``, for the
  caller that reads the transport itself to wait on, and a feed notifies
  only when a thread waits in :meth:`PacketBuffer.read`.

Every arrival is told to the channel's receive window (:mod:`.window`),
which is what the buffer is there for in the first place.  ``read``,
``read_ready``, ``empty``, ``set_event``, ``close`` and ``len()`` keep
``BufferedPipe``'s meaning, which is all Paramiko asks of a channel's
buffer.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from paramiko.buffered_pipe import BufferedPipe, PipeTimeout


class PacketBuffer(BufferedPipe):
    """A channel's stdout or stderr buffer, telling *arrived* of every packet's size."""

    #: Fed a ``memoryview`` (of a decrypted packet), it keeps it as it is.
    keeps_views = True

    def __init__(self, arrived: Callable[[int, float], object]) -> None:
        super().__init__()  # the lock, condition, event and closed flag are Paramiko's
        self._chunks: collections.deque[bytes | memoryview] = collections.deque()
        self._size = 0
        self._arrived = arrived
        #: Threads in :meth:`read`, which may be waiting for a feed.
        self._readers = 0
        #: Whether bytes are buffered: ``read_ready`` without its lock (the length of a
        #: deque is read whole), and a C call rather than a Python one.
        self.ready: Callable[[], int] = self._chunks.__len__

    def feed(self, data: bytes | memoryview) -> None:
        if not data:  # an empty chunk would read as EOF
            return
        self._arrived(len(data), time.monotonic())
        lock = self._lock
        lock.acquire()  # acquire() and release(): a with statement costs twice as much
        try:
            if self._event is not None:
                self._event.set()
            self._chunks.append(data)
            self._size += len(data)
            if self._readers:  # the caller reading its own answer waits elsewhere
                self._cv.notify_all()
        finally:
            lock.release()

    def take(self, size: int) -> bytes:
        """Up to *size* buffered bytes, at once; ``b""`` if none are."""
        lock = self._lock
        lock.acquire()
        try:
            return self._pop(size) if self._chunks else b""
        finally:
            lock.release()

    def take_into(self, view: memoryview) -> int:
        """Fill *view* from what is buffered, at once; the bytes copied (0: none were)."""
        with self._lock:
            chunks, got, want = self._chunks, 0, len(view)
            while chunks and got < want:
                first = chunks[0]
                n = len(first) if len(first) <= want - got else want - got
                if n == len(first):
                    view[got:got + n] = chunks.popleft()
                else:
                    view[got:got + n] = memoryview(first)[:n]
                    chunks[0] = memoryview(first)[n:]
                got += n
            self._size -= got
            self._settle()
            return got

    def _pop(self, size: int) -> bytes:
        """Under the lock, something buffered: the first *size* bytes of it."""
        chunks = self._chunks
        first = chunks[0]
        if len(first) > size:
            chunks[0] = first[size:]
            data = bytes(first[:size])
        else:
            chunks.popleft()
            if chunks and len(first) + len(chunks[0]) <= size:
                parts, got = [first], len(first)
                while chunks and got + len(chunks[0]) <= size:
                    parts.append(chunks.popleft())
                    got += len(parts[-1])
                data = b"".join(parts)
            else:
                data = bytes(first)  # the same object when it is bytes
        self._size -= len(data)
        if self._event is not None:
            self._settle()
        return data

    def _settle(self) -> None:
        """Under the lock: clear the event once everything is read, as ``BufferedPipe`` does."""
        if not self._chunks and self._event is not None and not self._closed:
            self._event.clear()

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            self._readers += 1
            try:
                if not self._chunks:
                    if self._closed:
                        return b""
                    if timeout == 0.0:
                        raise PipeTimeout()
                    while not self._chunks and not self._closed:
                        then = time.time()
                        self._cv.wait(timeout)
                        if timeout is not None:
                            timeout -= time.time() - then
                            if timeout <= 0.0 and not self._chunks:
                                raise PipeTimeout()
                return self._pop(nbytes) if self._chunks else b""
            finally:
                self._readers -= 1

    def read_ready(self) -> bool:
        return bool(self._chunks)

    def empty(self) -> bytes:
        with self._lock:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            self._settle()
            return data

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._chunks:
                event.set()
            else:
                event.clear()

    def __len__(self) -> int:
        return self._size


__all__ = ["PacketBuffer"]
