"""Renegotiating keys (every 512 MiB in Paramiko) neither stalls nor drops the connection.

The real threshold would need half a gigabyte per test, so the tests lower it
on the live transport: the next packet sent then starts a key exchange
against the real sshd, exactly as the 512 MiB mark does.
"""

from __future__ import annotations

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


def test_closing_a_cache_while_keys_are_renegotiated_keeps_the_connection(make, pool):
    cache = make()
    assert cache.contains("f" * 64) is False
    transport = pooled_transport(pool, cache)
    # close() sends EOF, which now starts a key exchange; the server's answer to
    # the EOF (exit status, channel close) arrives while the exchange runs.
    transport.packetizer.REKEY_BYTES = 1
    cache.close()
    transport.packetizer.REKEY_BYTES = PARAMIKO_REKEY_BYTES

    started = time.monotonic()
    assert cache.contains("f" * 64) is False
    assert time.monotonic() - started < PROMPT
    assert transport.is_active()
    assert pooled_transport(pool, cache) is transport  # no second login


def test_values_cross_key_exchanges_intact(make, pool):
    cache = make()
    cache.info()
    transport = pooled_transport(pool, cache)
    transport.packetizer.REKEY_BYTES = 1 << 20  # several exchanges per value, both ways
    try:
        for fill in (1, 2):
            value = np.full(3 << 20, fill, dtype=np.uint8)
            assert np.array_equal(cache.load_value(cache._rpc("save_value", value)), value)
        cache.reconnect()
        assert cache.contains("f" * 64) is False
    finally:
        transport.packetizer.REKEY_BYTES = PARAMIKO_REKEY_BYTES
    assert pooled_transport(pool, cache) is transport
