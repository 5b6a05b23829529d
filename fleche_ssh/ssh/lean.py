"""A lean per-packet path for AES-GCM, under Paramiko's own key exchange.

Paramiko spends most of a small call's client CPU on each packet, not on
the cipher: one ``AESGCM`` call costs about 1 µs, while
``Packetizer.read_message`` and ``send_message`` take tens of µs each,
building ``Message`` objects, joining bytes several times over and calling
``recv`` twice per packet.  :class:`LeanPacketizer` keeps Paramiko's
packetizer (key exchange, authentication, rekeying and keepalives still run
through it and through ``Transport.run``) and replaces only the per-packet
work once the negotiated cipher is an AEAD one:

* sending: one ``AESGCM.encrypt`` over the packet, with the 4-byte length
  as associated data and the IV's 64-bit counter incremented per packet
  (RFC 5647 as OpenSSH uses it);
* receiving: socket reads of up to :data:`RECV_SIZE` bytes into one buffer,
  one ``AESGCM.decrypt`` per packet, and channel data handed to its channel
  directly, with no ``Message`` and no trip through ``Transport.run``.
  Every other message (window adjustments, requests, EOF, close, a key
  exchange) is returned to ``Transport.run`` in the order it came, so
  Paramiko's handlers see it exactly as they would have.

The packetizer's counters (sequence numbers, bytes and packets towards the
next rekey, the IVs) are Paramiko's own private attributes, read and
written under their mangled names: both paths then share one state, and a
packet that must take Paramiko's path (a cipher without AEAD, compression,
packet dumps) can follow one that took this one.  Those internals are
checked once (:func:`lean_internals`); a Paramiko without them keeps its
own packetizer, with a debug log saying why.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import socket
import struct
import time
import weakref
from typing import TYPE_CHECKING, Any

import paramiko
from paramiko.common import MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA
from paramiko.packet import NeedRekeyException, Packetizer
from paramiko.ssh_exception import SSHException

from .interrupts import HeldInterrupts

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("fleche_ssh.lean")

#: The most one ``recv`` asks for: a few 32 KiB data packets at once.
RECV_SIZE = 1 << 18
#: Largest packet accepted, OpenSSH's own ``PACKET_MAX_SIZE``: a corrupt length
#: fails the connection instead of waiting for gigabytes that never come.
PACKET_MAX = 1 << 18
#: Bytes of the AES-GCM tag after each packet.
TAG = 16
#: Channel data of at least this many bytes is handed on as a view of its packet.
_VIEW_FROM = 4096
#: The receive buffer: room for a whole packet of the largest size after a full read.
RX_BUFFER = PACKET_MAX + 4 + TAG + RECV_SIZE
_LENGTH = struct.Struct(">I")
_HEADER = struct.Struct(">IB")
_DATA = struct.Struct(">BII")
_EXTENDED = struct.Struct(">BIII")
#: An AES-GCM IV as RFC 5647 splits it: 4 fixed bytes and a 64-bit invocation counter.
_IV = struct.Struct(">4sQ")
_STDERR = 1
_MASK32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1
#: Padding under AEAD: encrypted and authenticated with the packet, its bytes
#: carry no security (Paramiko pads CTR packets with zeros too), and
#: ``os.urandom`` is a system call per packet.
_ZEROS = bytes(32)

#: Paramiko's private ``Packetizer`` attributes this module reads or sets.
_PACKETIZER_INTERNALS = (
    "socket", "closed", "need_rekey", "remainder", "sent_bytes", "sent_packets",
    "received_bytes", "received_packets", "received_bytes_overflow",
    "received_packets_overflow", "block_size_out", "block_engine_out", "block_engine_in",
    "compress_engine_out", "compress_engine_in", "sequence_number_out",
    "sequence_number_in", "aead_out", "aead_in", "iv_out", "iv_in", "write_lock",
    "dump_packets", "keepalive_last",
)
#: Public or protected methods of ``Packetizer`` called here.
_PACKETIZER_METHODS = ("write_all", "_check_keepalive", "_trigger_rekey", "_log")
#: Attributes of a ``Transport`` the dispatch of channel data and :meth:`send_data` use.
_TRANSPORT_INTERNALS = ("_channels", "_expected_packet", "active", "clear_to_send",
                        "clear_to_send_lock", "_send_user_message")
#: Attributes of a ``Channel`` the same two use.
_CHANNEL_INTERNALS = ("in_buffer", "in_stderr_buffer", "combine_stderr", "lock", "closed",
                      "eof_sent", "out_window_size", "out_max_packet_size", "remote_chanid")


def _mangled(name: str) -> str:
    return f"_Packetizer__{name}"


@functools.cache
def lean_internals() -> bool:
    """Whether this Paramiko has every internal the lean path uses (checked once)."""
    ends = socket.socketpair()
    try:
        probe = Packetizer(ends[0])
        missing = [name for name in _PACKETIZER_INTERNALS if not hasattr(probe, _mangled(name))]
        missing += [name for name in _PACKETIZER_METHODS
                    if not callable(getattr(probe, name, None))]
        transport = paramiko.Transport(ends[1])  # not started: no thread, nothing sent
        missing += [f"Transport.{n}" for n in _TRANSPORT_INTERNALS if not hasattr(transport, n)]
    finally:
        for end in ends:
            end.close()
    if "packetizer_class" not in inspect.signature(paramiko.Transport.__init__).parameters:
        missing.append("Transport(packetizer_class=)")
    channel = paramiko.Channel(0)
    missing += [f"Channel.{n}" for n in _CHANNEL_INTERNALS if not hasattr(channel, n)]
    if missing:
        logger.debug("paramiko %s lacks %s: packets take Paramiko's own path",
                     paramiko.__version__, ", ".join(missing))
    return not missing


def next_iv(iv: bytes) -> bytes:
    """The IV of the next packet: its fixed 4 bytes, and the 8-byte counter plus one."""
    fixed, counter = _IV.unpack(iv)
    return _IV.pack(fixed, (counter + 1) & _MASK64)


class LeanPacketizer(Packetizer):
    """Paramiko's packetizer with a short path for each packet under an AEAD cipher."""

    # Paramiko's private state, shared with its own path (typed here for mypy).
    _Packetizer__remainder: bytes
    _Packetizer__iv_in: bytes
    _Packetizer__iv_out: bytes
    _Packetizer__sequence_number_in: int
    _Packetizer__sequence_number_out: int

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        #: Received bytes not yet handled are ``_rx[_head:_tail]``.  The buffer is
        #: allocated once and read into (``recv_into``): no bytes object per read, no
        #: copy into the buffer, no shifting its contents along as packets are taken.
        self._rx = bytearray(RX_BUFFER)
        self._rxv = memoryview(self._rx)
        self._head = self._tail = 0
        #: The transport's socket can read into a buffer (a jump host's channel cannot).
        self.direct = isinstance(sock, socket.socket)
        #: The descriptor sealed packets are written to with ``os.write``: the
        #: packetizer's own copy of the socket's, closed only by :meth:`close` (see
        #: there); -1 where packets go through ``send``.  CPython polls before every
        #: ``send`` on a socket with a timeout (Paramiko's 0.1 s), a system call that a
        #: packet the socket buffer takes at once does not need; such a socket's
        #: descriptor is non-blocking, so ``os.write`` takes what fits and returns.
        #: Not on Windows, whose sockets are not file descriptors.
        self._fd = (os.dup(sock.fileno())
                    if self.direct and os.name == "posix" and sock.gettimeout() is not None
                    else -1)
        self._release_fd = weakref.finalize(self, os.close, self._fd) if self._fd >= 0 else None
        self._transport: Callable[[], Any] = lambda: None
        #: The channel the last data packet went to, and its id.
        self._last_channel: tuple[int, weakref.ref[paramiko.Channel]] | None = None
        #: Packets of channel data that took the lean path, each way (tests read them).
        self.lean_sent = 0
        self.lean_received = 0

    def attach(self, transport: Any) -> None:
        """Hand channel data to *transport*'s channels (held weakly: no cycle)."""
        self._transport = weakref.ref(transport)

    # -- sending ---------------------------------------------------------------

    def send_message(self, data: Any) -> None:
        # Sent from a caller's thread, a packet is sealed and written whole:
        # Ctrl-C half-way would leave the server's decryption out of step.
        with HeldInterrupts():
            if not self._lean_out():
                super().send_message(data)
            else:
                self._send_lean(data)

    def _send_lean(self, data: Any) -> None:
        payload = data.asbytes()
        self._seal_and_write(payload)
        self._after_send(payload[0])

    def send_data(self, channel: paramiko.Channel, data: memoryview) -> int:
        """Send the first packet's worth of *data* on *channel*, as ``channel.send`` does.

        With the window open and no key exchange under way, the packet is
        sealed straight from *data*: no ``Message`` built and read back, no
        trip through ``Channel._send`` and ``Transport._send_user_message``,
        which cost a small call about a tenth of its client CPU.  Anything
        else (a closed or full window, another cipher) is ``channel.send``,
        which waits as Paramiko does.  The window taken, a key exchange
        that began meanwhile is waited out by Paramiko's own path, outside
        the held section, so that Ctrl-C still answers while it lasts.
        """
        if not self._lean_out():
            return channel.send(data)
        transport = channel.transport
        ready = False
        # The locks are taken with acquire() and release(), here and in
        # _seal_and_write: a with statement costs CPython 3.11 twice as much, and a
        # small call takes four locks on the way out.
        with HeldInterrupts():
            lock = channel.lock
            lock.acquire()
            try:
                # Conditionals, not min() and max(): the builtins parse their arguments
                # as a general call, which costs more than a packet's arithmetic.
                size = len(data)
                if size > channel.out_max_packet_size - 64:
                    size = channel.out_max_packet_size - 64
                lean = not (channel.closed or channel.eof_sent) \
                    and 0 < size <= channel.out_window_size
                if lean:
                    channel.out_window_size -= size
            finally:
                lock.release()
            if lean:
                payload = _DATA.pack(MSG_CHANNEL_DATA, channel.remote_chanid, size) + (
                    data if size == len(data) else data[:size])
                lock = transport.clear_to_send_lock
                lock.acquire()
                try:
                    ready = transport.active and transport.clear_to_send.is_set()
                    if ready:
                        self._seal_and_write(payload)
                finally:
                    lock.release()
        if not lean:  # outside the held section: it may wait for the window to open
            return channel.send(data)
        if not ready:
            transport._send_user_message(paramiko.Message(payload))
        return size

    def _seal_and_write(self, payload: bytes) -> None:
        """Seal one packet of *payload* with the AEAD cipher and write it whole."""
        lock = self._Packetizer__write_lock
        lock.acquire()
        try:
            bsize = self._Packetizer__block_size_out
            padding = 3 + bsize - ((len(payload) + 4) % bsize)
            header = _HEADER.pack(len(payload) + padding + 1, padding)
            length = header[:4]
            iv = self._Packetizer__iv_out
            sealed = self._Packetizer__block_engine_out.encrypt(
                iv, header[4:] + payload + _ZEROS[:padding], length)
            self._Packetizer__iv_out = next_iv(iv)
            self._Packetizer__sequence_number_out = (
                self._Packetizer__sequence_number_out + 1) & _MASK32
            packet = length + sealed
            # write_all's work, for a packet one send nearly always takes whole; what it
            # leaves (a full socket buffer, a timeout, an error) goes to write_all, which
            # waits, retries or fails as Paramiko does.
            self._Packetizer__keepalive_last = time.time()
            sock = self._Packetizer__socket
            try:
                n = os.write(self._fd, packet) if self._fd >= 0 else sock.send(packet)
            except OSError:
                n = 0
            if n < len(packet):
                self.write_all(packet[n:])
            if payload[0] == MSG_CHANNEL_DATA:
                self.lean_sent += 1
            self._sent(len(packet))
        finally:
            lock.release()

    def close(self) -> None:
        """Close the socket, and the descriptor packets are written to, between two writes.

        A descriptor number is read before the write that uses it, and the
        thread can be switched out in between.  Once a number is closed, the
        system hands it to the next file any thread opens: a new login's
        socket, reconnecting after this connection was lost, would receive the
        stale packet before its own banner, and its server would refuse the
        handshake.  So packets go to a descriptor of the packetizer's own,
        read and closed only under the write lock: Paramiko closes the
        socket's number whenever it likes (``Transport.run`` closes it as it
        ends), which no longer matters.  The packetizer is marked closed
        first, so that a write waiting for room in the socket buffer
        (``write_all``) gives up at its next timeout instead of holding the lock.
        """
        self._Packetizer__closed = True
        with self._Packetizer__write_lock:
            super().close()
            self._fd = -1  # a later packet goes to the closed socket's send, which fails
            if self._release_fd is not None:
                self._release_fd()

    def _after_send(self, kind: int) -> None:
        """A message of type *kind*, other than channel data, went out (for subclasses:
        it may want an answer)."""

    def _sent(self, size: int) -> None:
        """Count a packet towards the next rekey, as ``send_message`` does."""
        self._Packetizer__sent_bytes += size
        self._Packetizer__sent_packets += 1
        if (self._Packetizer__sent_packets >= self.REKEY_PACKETS
                or self._Packetizer__sent_bytes >= self.REKEY_BYTES) \
                and not self._Packetizer__need_rekey:
            self._log(logging.DEBUG, f"Rekeying (hit {self._Packetizer__sent_packets} packets, "
                                     f"{self._Packetizer__sent_bytes} bytes sent)")
            self._Packetizer__received_bytes_overflow = 0
            self._Packetizer__received_packets_overflow = 0
            self._trigger_rekey()

    def _lean_out(self) -> bool:
        """Whether the next packet sent takes the lean path: an AEAD cipher, no
        compression, no packet dumps."""
        return (self._Packetizer__aead_out and self._Packetizer__compress_engine_out is None
                and not self._Packetizer__dump_packets)

    # -- receiving -------------------------------------------------------------

    def read_message(self) -> tuple[int, paramiko.Message]:
        if not self.lean_in():
            if self._tail > self._head:  # bytes read ahead go back to where Paramiko reads first
                self._Packetizer__remainder += bytes(self._rxv[self._head:self._tail])
                self._head = self._tail = 0
            return super().read_message()
        while True:
            got = self._read_one(patient=True)
            if isinstance(got, tuple):
                return got
            if self._Packetizer__need_rekey:
                raise NeedRekeyException()  # Transport.run starts the key exchange

    def lean_in(self) -> bool:
        """Whether the next packet received takes the lean path."""
        if (not self._Packetizer__aead_in or self._Packetizer__compress_engine_in is not None
                or self._Packetizer__dump_packets):
            return False
        if self._Packetizer__remainder:  # read ahead by Paramiko: they come first
            unread = self._Packetizer__remainder + bytes(self._rxv[self._head:self._tail])
            self._rxv[:len(unread)] = unread
            self._head, self._tail, self._Packetizer__remainder = 0, len(unread), b""
        return True

    def _read_one(self, *, patient: bool) -> tuple[int, paramiko.Message] | bool:
        """Read one packet: True if it was channel data, now fed to its channel; else
        the message for ``Transport.run``.

        Impatient (a thread that holds the reader role only for a while), a
        socket timeout before the packet is complete gives False: the bytes
        read so far stay buffered for whoever reads next.
        """
        if self._tail - self._head < 4 and not self._fill(4, first=True, patient=patient):
            return False
        size = _LENGTH.unpack_from(self._rx, self._head)[0]
        if size > PACKET_MAX or size < 16:
            raise SSHException(f"Invalid packet length {size} from the server")
        total = 4 + size + TAG
        if self._tail - self._head < total and not self._fill(total, first=False,
                                                              patient=patient):
            return False
        head, rxv = self._head, self._rxv
        iv = self._Packetizer__iv_in
        plain = self._Packetizer__block_engine_in.decrypt(
            iv, rxv[head + 4:head + total], rxv[head:head + 4])
        following = next_iv(iv)
        seqno = self._Packetizer__sequence_number_in
        self._head = head + total
        if self._head == self._tail:
            self._head = self._tail = 0
        self._Packetizer__iv_in = following
        self._Packetizer__sequence_number_in = (seqno + 1) & _MASK32
        self._received(total)
        end = size - plain[0]  # the payload is plain[1:end], the padding after it
        if self._dispatched(plain, end):
            self.lean_received += 1
            return True
        message = paramiko.Message(plain[2:end])
        message.seqno = seqno
        return plain[1], message

    def _buffered(self) -> bool:
        """Whether a whole packet is already buffered (no socket read needed)."""
        buffered = self._tail - self._head
        return (buffered >= 4
                and buffered >= 4 + _LENGTH.unpack_from(self._rx, self._head)[0] + TAG)

    def _fill(self, need: int, *, first: bool, patient: bool) -> bool:
        """Read until *need* bytes are buffered; False: an impatient read timed out.

        The socket's timeout (Paramiko's 0.1 s) is when keepalives are due
        and a closed transport is noticed, as in ``read_all``.  *first*: no
        byte of the packet has arrived yet, so a rekey asked for may start.
        """
        while self._tail - self._head < need:
            if len(self._rx) - self._tail < RECV_SIZE:
                self._compact()
            try:
                got: int | None = self._recv_into(self._tail)
            except TimeoutError:
                got = None
            except OSError as e:
                if e.errno != errno.EAGAIN and not self._Packetizer__closed:
                    raise
                if self._Packetizer__closed:
                    raise EOFError() from e
                got = None
            if got is None:
                if self._Packetizer__closed:
                    raise EOFError()
                if not patient:
                    return False
                if first and self._tail == self._head and self._Packetizer__need_rekey:
                    raise NeedRekeyException()
                self._check_keepalive()
                continue
            if not got:
                raise EOFError()
            self._tail += got
        return True

    def _compact(self) -> None:
        """Move the unread bytes (less than a packet) to the buffer's start: room for a read."""
        unread = self._tail - self._head
        self._rxv[:unread] = self._rxv[self._head:self._tail]  # a memoryview copy: memmove
        self._head, self._tail = 0, unread

    def _recv_into(self, at: int) -> int:
        """Receive up to :data:`RECV_SIZE` bytes into the buffer at *at*; 0 at EOF.

        A socket reads straight into it; anything else that carries the
        transport (a jump host's channel, a ProxyCommand) has only ``recv``.
        """
        sock = self._Packetizer__socket
        if self.direct:
            return sock.recv_into(self._rxv[at:at + RECV_SIZE])
        chunk = sock.recv(RECV_SIZE)
        self._rxv[at:at + len(chunk)] = chunk
        return len(chunk)

    def _received(self, size: int) -> None:
        """Count a packet towards the next rekey, as ``read_message`` does."""
        self._Packetizer__received_bytes += size
        self._Packetizer__received_packets += 1
        if self._Packetizer__need_rekey:
            self._Packetizer__received_bytes_overflow += size
            self._Packetizer__received_packets_overflow += 1
            if (self._Packetizer__received_packets_overflow >= self.REKEY_PACKETS_OVERFLOW_MAX
                    or self._Packetizer__received_bytes_overflow
                    >= self.REKEY_BYTES_OVERFLOW_MAX):
                raise SSHException("Remote transport is ignoring rekey requests")
        elif (self._Packetizer__received_packets >= self.REKEY_PACKETS
              or self._Packetizer__received_bytes >= self.REKEY_BYTES):
            self._log(logging.DEBUG,
                      f"Rekeying (hit {self._Packetizer__received_packets} packets, "
                      f"{self._Packetizer__received_bytes} bytes received)")
            self._Packetizer__received_bytes_overflow = 0
            self._Packetizer__received_packets_overflow = 0
            self._trigger_rekey()

    def _dispatched(self, plain: bytes, end: int) -> bool:
        """Feed channel data to its channel; False: ``Transport.run`` must handle the
        payload, ``plain[1:end]``.

        Only data for an open channel outside a key exchange is handled
        here, which is all ``Transport.run`` would have done with it.  The
        data goes from the decrypted packet to the channel's buffer with at
        most one copy: for a 32 KiB packet a copy costs about what its
        decryption does.
        """
        kind = plain[1]
        if kind != MSG_CHANNEL_DATA and kind != MSG_CHANNEL_EXTENDED_DATA:
            return False
        transport = self._transport()
        if transport is None or transport._expected_packet or not transport.active:
            return False
        if kind == MSG_CHANNEL_DATA:
            _, chanid, size = _DATA.unpack_from(plain, 1)
            start = 1 + _DATA.size
        else:
            _, chanid, code, size = _EXTENDED.unpack_from(plain, 1)
            start = 1 + _EXTENDED.size
        channel = None
        last = self._last_channel
        if last is not None and last[0] == chanid:
            channel = last[1]()
        if channel is None or channel.closed:
            # Paramiko's lookup is three Python calls under a lock, and the packets of a
            # call's answer all go to one channel: the last one found is kept (weakly).
            channel = transport._channels.get(chanid)
            if channel is not None:
                self._last_channel = (chanid, weakref.ref(channel))
        if channel is None or end < start + size:
            return False
        if kind == MSG_CHANNEL_DATA:
            buffer = channel.in_buffer  # fed as Channel._feed feeds it
        elif code == _STDERR and not channel.combine_stderr:
            buffer = channel.in_stderr_buffer
        else:
            return False
        # A large packet's data stays in the decrypted packet (a view, no copy) for a
        # buffer that keeps views, which copies it once, into the reader's; anything
        # else is sliced (for a small packet that costs less than making a view).
        if size >= _VIEW_FROM and getattr(buffer, "keeps_views", False):
            buffer.feed(memoryview(plain)[start:start + size])
        else:
            buffer.feed(plain[start:start + size])
        return True


__all__ = ["LeanPacketizer", "lean_internals", "next_iv"]
