"""``PacketBuffer``: a channel's receive buffer keeps Paramiko's ``BufferedPipe`` contract.

Pure logic: what Paramiko's ``Channel`` and our readers ask of the buffer
(the channels themselves are tested against the real sshd).
"""

from __future__ import annotations

import threading
import time

import pytest
from paramiko.buffered_pipe import PipeTimeout

from fleche_ssh.wire.packet_buffer import PacketBuffer


def make() -> tuple[PacketBuffer, list[int]]:
    arrived: list[int] = []
    return PacketBuffer(lambda n, now: arrived.append(n)), arrived


def test_bytes_come_out_in_order_whatever_the_sizes_asked():
    buffer, arrived = make()
    for part in (b"abc", b"defgh", memoryview(b"__ij")[2:], b"k"):
        buffer.feed(part)
    assert arrived == [3, 5, 2, 1]
    assert len(buffer) == 11
    assert buffer.take(2) == b"ab"
    assert buffer.take(4) == b"c"  # the rest of a packet, not a wait for the next
    assert buffer.take(100) == b"defghijk"  # the whole packets that fit, joined
    assert buffer.take(100) == b""
    assert len(buffer) == 0 and not buffer.read_ready() and not buffer.ready()


def test_take_into_fills_across_packets_and_keeps_the_rest():
    buffer, _ = make()
    buffer.feed(b"0123")
    buffer.feed(memoryview(b"456789"))
    target = bytearray(7)
    assert buffer.take_into(memoryview(target)) == 7
    assert target == b"0123456"
    assert buffer.read(10) == b"789"
    assert buffer.take_into(memoryview(bytearray(4))) == 0


def test_read_waits_for_a_feed_and_honours_its_timeout():
    buffer, _ = make()
    with pytest.raises(PipeTimeout):
        buffer.read(10, 0.0)
    started = time.monotonic()
    with pytest.raises(PipeTimeout):
        buffer.read(10, 0.1)
    assert 0.05 < time.monotonic() - started < 5
    threading.Timer(0.05, buffer.feed, args=(b"late",)).start()
    assert buffer.read(10, 5.0) == b"late"


def test_close_ends_a_waiting_read_with_eof_after_the_buffered_bytes():
    buffer, _ = make()
    buffer.feed(b"last")
    buffer.close()
    assert buffer.read(10) == b"last"
    assert buffer.read(10) == b""  # EOF, at once
    waiting, _ = make()
    threading.Timer(0.05, waiting.close).start()
    assert waiting.read(10, 5.0) == b""


def test_the_event_says_whether_anything_is_buffered():
    buffer, _ = make()
    event = threading.Event()
    buffer.set_event(event)
    assert not event.is_set()
    buffer.feed(b"x")
    assert event.is_set()
    assert buffer.take(1) == b"x"
    assert not event.is_set()
    buffer.feed(b"yz")
    assert buffer.empty() == b"yz"
    assert not event.is_set() and len(buffer) == 0


def test_an_empty_feed_is_not_taken_for_eof():
    buffer, arrived = make()
    buffer.feed(b"")
    assert not buffer.ready() and arrived == []
    with pytest.raises(PipeTimeout):
        buffer.read(10, 0.0)
