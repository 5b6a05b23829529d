"""Renegotiating keys (every 512 MiB in Paramiko) neither stalls nor drops the connection.

The real threshold would need half a gigabyte per test, so the tests lower it
on the live transport: the next packet sent then starts a key exchange
against the real sshd, exactly as the 512 MiB mark does.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(60)
PARAMIKO_REKEY_BYTES = 1 << 29
#: A call on a live connection takes well under a second; a stalled one waits 30 s.
PROMPT = 10.0


def pooled_transport(pool, cache):
    target = cache.target()
    return pool.session(target, cache.login(target)).transport


def key_exchanges(caplog) -> int:
    """How many key exchanges Paramiko finished while *caplog* listened.

    Paramiko logs "Switch to new keys" once per exchange, on the server's
    NEWKEYS: the server took part in each one counted.
    """
    return sum(r.name == "paramiko.transport" and r.getMessage() == "Switch to new keys ..."
               for r in caplog.records)


def test_closing_a_cache_while_keys_are_renegotiated_keeps_the_connection(make, pool, caplog):
    cache = make()
    assert cache.contains("f" * 64) is False
    transport = pooled_transport(pool, cache)
    # close() sends EOF, which now starts a key exchange; the server's answer to
    # the EOF (exit status, channel close) arrives while the exchange runs.
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    transport.packetizer.REKEY_BYTES = 1
    cache.close()
    transport.packetizer.REKEY_BYTES = PARAMIKO_REKEY_BYTES

    started = time.monotonic()
    assert cache.contains("f" * 64) is False
    assert time.monotonic() - started < PROMPT
    assert key_exchanges(caplog) >= 1
    assert transport.is_active()
    assert pooled_transport(pool, cache) is transport  # no second login


def test_values_cross_key_exchanges_intact(make, pool, caplog):
    cache = make()
    cache.info()
    transport = pooled_transport(pool, cache)
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    transport.packetizer.REKEY_BYTES = 1 << 20  # several exchanges per value, both ways
    lean_before = (transport.packetizer.lean_sent, transport.packetizer.lean_received)
    try:
        for fill in (1, 2):
            before = key_exchanges(caplog)
            value = np.full(3 << 20, fill, dtype=np.uint8)
            assert np.array_equal(cache.load_value(cache._rpc("save_value", value)), value)
            # 3 MiB each way, a new exchange due after each MiB: several per value.
            assert key_exchanges(caplog) - before >= 2
        # The data took the lean path (AES-GCM, the default), both ways.
        lean_after = (transport.packetizer.lean_sent, transport.packetizer.lean_received)
        assert all(after > before for after, before in zip(lean_after, lean_before, strict=True))
        cache.reconnect()
        assert cache.contains("f" * 64) is False
    finally:
        transport.packetizer.REKEY_BYTES = PARAMIKO_REKEY_BYTES
    assert pooled_transport(pool, cache) is transport
