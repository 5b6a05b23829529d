"""The lean packet path (``fleche_ssh.ssh.lean``, ``lean_reader``) against the real sshd.

Under AES-GCM each packet of channel data must take the lean path both
ways, and answers must be read in the caller's own thread; under any other
cipher every packet must take Paramiko's own path.  Either way the values
arrive intact, across key exchanges in the middle of a transfer, and a
Paramiko without the internals the lean path uses keeps its own packetizer.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading

import numpy as np
import paramiko
import pytest

from fleche_ssh.ssh import lean, lean_reader
from fleche_ssh.ssh.lean import LeanPacketizer, lean_internals

pytestmark = pytest.mark.timeout(120)
MIB = 1 << 20
PARAMIKO_REKEY_BYTES = 1 << 29
#: (cipher offered, whether its packets take the lean path)
CIPHERS = [("aes128-gcm@openssh.com", True), ("aes256-gcm@openssh.com", True),
           ("aes128-ctr", False)]


@pytest.fixture(params=[False, True], ids=["paramiko-reads", "caller-reads"])
def caller_reads(request, pool, monkeypatch) -> bool:
    """Both ways of reading: Paramiko's thread, or the waiting caller (the default)."""
    monkeypatch.setattr(pool, "caller_reads", request.param)
    return request.param


def pooled_transport(pool, cache):
    target = cache.target()
    return pool.session(target, cache.login(target)).transport


def counters(packetizer) -> tuple[int, int, int]:
    """(data packets sent lean, received lean, of those read in a caller's thread)."""
    # Only a SharedPacketizer lets callers read (a plain LeanPacketizer has no such count).
    return packetizer.lean_sent, packetizer.lean_received, getattr(packetizer, "caller_read", 0)


def since(packetizer, before: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(a - b for a, b in zip(counters(packetizer), before, strict=True))


@pytest.mark.parametrize(("cipher", "is_lean"), CIPHERS)
def test_values_both_ways_take_the_path_of_the_cipher(make, pool, cipher, is_lean, caller_reads,
                                                     mocker):
    cache = make(ciphers=cipher)
    assert cache.contains("f" * 64) is False
    transport = pooled_transport(pool, cache)
    assert transport.remote_cipher == transport.local_cipher == cipher
    assert isinstance(transport.packetizer, LeanPacketizer)
    assert isinstance(transport.packetizer, lean_reader.SharedPacketizer) is caller_reads
    before = counters(transport.packetizer)
    for size in (1, 5 * MIB):
        value = np.arange(size, dtype=np.uint8)
        assert np.array_equal(cache.load_value(cache._rpc("save_value", value)), value)
    messages = mocker.spy(paramiko.Channel, "send")
    for _ in range(50):
        assert cache.contains("f" * 64) is False
    # Under AES-GCM a small request is sealed straight from its frame, never a Message.
    assert messages.call_count == (0 if is_lean else 50)
    sent, received, by_caller = since(transport.packetizer, before)
    if is_lean:
        # 5 MiB in 32 KiB packets each way, and every small call's request and answer.
        assert sent > 5 * MIB // 32768 and received > 5 * MIB // 32768
        if caller_reads:
            assert by_caller > 50, "answers were handed over by Paramiko's thread"
        else:
            assert by_caller == 0
    else:
        assert (sent, received, by_caller) == (0, 0, 0)


@pytest.mark.parametrize(("cipher", "is_lean"), CIPHERS)
def test_key_exchanges_in_the_middle_of_transfers(make, pool, caplog, cipher, is_lean,
                                                  caller_reads):
    """A rekey every MiB, both ways, while 4 MiB values move: they arrive intact."""
    cache = make(ciphers=cipher)
    cache.info()
    transport = pooled_transport(pool, cache)
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    before = counters(transport.packetizer)
    transport.packetizer.REKEY_BYTES = MIB
    try:
        for fill in (3, 4):
            value = np.full(4 * MIB, fill, dtype=np.uint8)
            assert np.array_equal(cache.load_value(cache._rpc("save_value", value)), value)
    finally:
        transport.packetizer.REKEY_BYTES = PARAMIKO_REKEY_BYTES
    exchanges = sum(r.getMessage() == "Switch to new keys ..." for r in caplog.records)
    assert exchanges >= 4
    sent, received, by_caller = since(transport.packetizer, before)
    assert (sent > 0 and received > 0) is is_lean
    assert (by_caller > 0) is (is_lean and caller_reads)
    assert cache.contains("f" * 64) is False
    assert pooled_transport(pool, cache) is transport


def test_threads_on_several_channels_share_the_reader(make, pool):
    """Callers on two channels of one transport read each other's answers for them."""
    cache = make(channels=2)
    cache.info()
    values = {n: np.full(MIB + n, n, dtype=np.uint8) for n in range(4)}
    keys = {n: cache._rpc("save_value", v) for n, v in values.items()}
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(5):
                assert np.array_equal(cache.load_value(keys[n]), values[n])
                assert cache.contains("f" * 64) is False
        except BaseException as e:  # reported by the main thread
            failures.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert not failures, failures
    assert pooled_transport(pool, cache).packetizer.caller_read > 0


@pytest.mark.parametrize("closer", ["transport-thread", "pool"])
def test_a_packet_written_as_the_socket_closes_never_goes_down_the_next_socket(
        make, pool, monkeypatch, closer):
    """The writing thread is switched out between taking the descriptor and writing to it.

    Meanwhile another thread closes the connection, as ``Transport.run`` does
    as it ends or as the pool does with a lost login, and opens a socket, which
    the system gives the closed number: a login reconnecting after the network
    came back.  The stale packet must not go down that socket, where the new
    server would read it before the banner and refuse the handshake.
    """
    cache = make()
    assert cache.contains("f" * 64) is False
    transport = pooled_transport(pool, cache)
    number = transport.sock.fileno()
    writer, real_write = threading.current_thread(), os.write
    opened: list[socket.socket] = []
    closing: list[threading.Thread] = []

    def close_and_open() -> None:
        if closer == "pool":
            transport.close()
        else:
            transport.sock.close()
        opened.extend(socket.socketpair())

    def switched_out(fd: int, data: bytes) -> int:
        if threading.current_thread() is writer:
            monkeypatch.setattr(lean.os, "write", real_write)
            closing.append(threading.Thread(target=close_and_open, daemon=True))
            closing[0].start()
            closing[0].join(0.5)  # all the other thread needs, unless it waits for this write
        return real_write(fd, data)

    monkeypatch.setattr(lean.os, "write", switched_out)
    transport.send_ignore()
    assert closing, "the packet was not written with os.write"
    closing[0].join(10)
    assert not closing[0].is_alive(), "closing the connection hung"
    try:
        assert number in [end.fileno() for end in opened], "the closed number was not reused"
        assert select.select(opened, [], [], 0.2)[0] == [], "the packet went down the new socket"
    finally:
        for end in opened:
            end.close()


@pytest.fixture
def internals_checked_again():
    lean_internals.cache_clear()
    yield
    lean_internals.cache_clear()


def test_a_paramiko_whose_packetizer_lacks_an_attribute_is_found_out(
        internals_checked_again, monkeypatch, caplog):
    """A Paramiko release that renamed one private attribute of ``Packetizer``."""
    original = paramiko.Packetizer.__init__

    def renamed(self, socket):
        original(self, socket)
        self._Packetizer__dump = self.__dict__.pop("_Packetizer__dump_packets")

    monkeypatch.setattr(paramiko.Packetizer, "__init__", renamed)
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.lean"):
        assert lean_reader.packetizer_class() is None
    assert f"paramiko {paramiko.__version__} lacks dump_packets: packets take Paramiko's " \
        "own path" in caplog.text


def test_a_paramiko_without_packetizer_class_logs_in_with_its_own_packetizer(
        internals_checked_again, make, pool, monkeypatch, caplog):
    """A Paramiko whose ``Transport`` takes no ``packetizer_class`` keyword, as before 3.4."""
    original = paramiko.Transport.__init__

    def older(self, sock, *args, **kwargs):
        if "packetizer_class" in kwargs:
            raise TypeError("__init__() got an unexpected keyword argument 'packetizer_class'")
        original(self, sock, *args, **kwargs)

    monkeypatch.setattr(paramiko.Transport, "__init__", older)
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.lean"):
        cache = make()
        assert cache.contains("f" * 64) is False
    assert "lacks Transport(packetizer_class=)" in caplog.text
    assert type(pooled_transport(pool, cache).packetizer) is paramiko.Packetizer


def test_this_paramiko_has_the_internals():
    """The pinned range and the floor CI tests must both take the lean path."""
    assert lean_internals(), paramiko.__version__
    assert issubclass(lean_reader.SharedPacketizer, LeanPacketizer)


def test_iv_counter_follows_rfc_5647():
    """The fixed 4 bytes stay, the 64-bit counter goes up by one and wraps."""
    assert lean.next_iv(b"\x01\x02\x03\x04" + (5).to_bytes(8, "big")) == \
        b"\x01\x02\x03\x04" + (6).to_bytes(8, "big")
    assert lean.next_iv(b"abcd" + b"\xff" * 8) == b"abcd" + bytes(8)
