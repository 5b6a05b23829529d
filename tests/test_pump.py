"""The byte pump of :mod:`fleche_ssh.wire.pump` reading into one reused buffer.

Pure logic over real socketpairs: what a relay (the holder's splice) relies on.
"""

from __future__ import annotations

import os
import socket
import threading

from fleche_ssh.wire.pump import End, copy, splice

CHUNK = 1 << 12
#: Larger than the chunk and not a multiple of it.
SIZE = 5 * CHUNK + 123


def test_copy_reads_into_one_buffer_and_moves_every_byte_in_order():
    data = os.urandom(SIZE)
    source, feeder = socket.socketpair()
    got = bytearray()
    buffers = set()

    def write(view: memoryview) -> int:
        buffers.add(id(view.obj))
        n = min(len(view), 1000)  # a sink taking less than it is given
        got.extend(view[:n])
        return n

    with source, feeder:
        feeder.sendall(data)
        feeder.shutdown(socket.SHUT_WR)
        copy(source.recv, write, CHUNK, source.recv_into)
    assert bytes(got) == data
    assert len(buffers) == 1, "each read allocated a buffer of its own"


def test_copy_stops_when_the_sink_stops_taking():
    source, feeder = socket.socketpair()
    calls = []

    def refuse(view: memoryview) -> int:
        calls.append(len(view))
        return 0

    with source, feeder:
        feeder.sendall(b"x" * SIZE)
        feeder.shutdown(socket.SHUT_WR)
        copy(source.recv, refuse, CHUNK, source.recv_into)
    assert len(calls) == 1


def test_splice_with_a_buffered_end_relays_both_ways_and_half_closes():
    """A relay between two socketpairs, one end read into a buffer, the other with recv."""
    left_outer, left_inner = socket.socketpair()
    right_inner, right_outer = socket.socketpair()
    done = threading.Event()

    def shut(sock: socket.socket):
        return lambda: sock.shutdown(socket.SHUT_WR)

    threads = splice(End(left_inner.recv, left_inner.send, shut(left_inner)),
                     End(right_inner.recv, right_inner.send, shut(right_inner),
                         right_inner.recv_into),
                     name="test-pump", chunk=CHUNK, done=done.set)
    up, down = os.urandom(SIZE), os.urandom(SIZE + 7)
    try:
        right_outer.sendall(up)
        right_outer.shutdown(socket.SHUT_WR)
        left_outer.sendall(down)
        left_outer.shutdown(socket.SHUT_WR)
        assert _read_to_eof(left_outer) == up
        assert _read_to_eof(right_outer) == down
        for thread in threads:
            thread.join(10)
        assert done.wait(10)
    finally:
        for sock in (left_outer, left_inner, right_inner, right_outer):
            sock.close()


def _read_to_eof(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    got = bytearray()
    while chunk := sock.recv(1 << 16):
        got += chunk
    return bytes(got)
