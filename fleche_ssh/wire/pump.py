"""Moving bytes between two ends: one send loop, one copy loop, one splice, one line drain.

Every place that relays bytes uses these: the frames sent on an exec channel,
a ProxyCommand's stdio wired to the socket Paramiko reads, and the demo
server's child process wired to its SSH channel.  An end is given as plain
callables (``read(n) -> bytes``, ``write(view) -> int``, ``shutdown_write()``),
so a socket, a pipe and a Paramiko channel all fit without adapters.

``write`` is called with memoryview slices of what was read, never with a
re-sliced ``bytes``: Paramiko's own ``Channel.sendall`` copies the unsent rest
on every packet, which makes a large transfer quadratic.

An end that can read into a buffer (a socket's ``recv_into``) is read into
one buffer reused for the whole copy: ``socket.recv(n)`` allocates *n*
bytes per call, and above the allocator's mmap threshold (128 KiB) that is
an ``mmap`` and ``munmap`` each time, 17 µs against 2 µs for a small
message on a 2-core machine: a relay's whole cost per small call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes asked of ``read`` per call, and the most handed to ``write`` at once.
CHUNK = 1 << 20

Read = Callable[[int], bytes]
Write = Callable[[memoryview], int]
ReadInto = Callable[[memoryview], int]


def send_all(write: Write, data: bytes | bytearray | memoryview, chunk: int = CHUNK) -> bool:
    """Write all of *data*, at most *chunk* bytes per call; False if the end stopped taking it."""
    view = memoryview(data)
    sent, total = 0, len(view)
    while sent < total:
        n = write(view[sent : sent + chunk])
        if n <= 0:
            return False
        sent += n
    return True


def copy(read: Read, write: Write, chunk: int = CHUNK,
         read_into: ReadInto | None = None) -> None:
    """Copy from *read* to *write* until *read* gives EOF, *write* stops, or either fails.

    With *read_into* (filling a buffer, 0 at EOF), reads go into one
    *chunk*-byte buffer instead: *write* must be done with a slice of it
    when it returns (a socket's ``send`` and a Paramiko channel's copy it).
    """
    with contextlib.suppress(OSError, EOFError):
        if read_into is None:
            while data := read(chunk):
                if not send_all(write, data, chunk):
                    return
            return
        buffer = memoryview(bytearray(chunk))
        while (n := read_into(buffer)) > 0:
            if not send_all(write, buffer[:n], chunk):
                return


@dataclass(frozen=True)
class End:
    """One end of a splice: how to read from it, write to it, and tell it no more is coming."""

    read: Read
    write: Write
    shutdown_write: Callable[[], object]
    #: Reads into a buffer instead, when the end can (see :func:`copy`).
    read_into: ReadInto | None = None


def splice(a: End, b: End, *, name: str, chunk: int = CHUNK,
           done: Callable[[], object] | None = None) -> list[threading.Thread]:
    """Copy *a* to *b* and *b* to *a* on two daemon threads, each half-closing when its source ends.

    *done* runs once, after both directions have ended.
    """
    left = [2]
    lock = threading.Lock()

    def one_way(source: End, sink: End) -> None:
        try:
            copy(source.read, sink.write, chunk, source.read_into)
        finally:
            with contextlib.suppress(OSError, EOFError):
                sink.shutdown_write()
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last and done is not None:
                done()

    threads = [threading.Thread(target=one_way, args=(a, b), name=f"{name}-out", daemon=True),
               threading.Thread(target=one_way, args=(b, a), name=f"{name}-in", daemon=True)]
    for thread in threads:
        thread.start()
    return threads


def drain_lines(read: Read, line: Callable[[str], object], chunk: int = 1 << 16) -> None:
    """Read until EOF, calling *line* with each line decoded (UTF-8, errors replaced), end stripped.

    A last line without a newline is passed on too.  A failing read ends the
    drain as EOF would: this runs on a daemon thread whose only job is to keep
    a pipe from filling up.
    """
    pending = b""
    with contextlib.suppress(OSError, EOFError):
        while data := read(chunk):
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line(raw.decode("utf-8", "replace").rstrip("\r"))
    if pending:
        line(pending.decode("utf-8", "replace").rstrip("\r"))
