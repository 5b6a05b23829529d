"""The connection pool as its users see it: what ``snapshot()`` reports, and pools kept apart.

Against the real sshd: a snapshot counts the channels a cache holds open
(its remote servers), reads idle only once none is open, says how the host
key was verified, and a pool forgets its logins in a forked child.
"""

from __future__ import annotations

import os
import time

import pytest
from support.caches import wait_for

import fleche_ssh
from fleche_ssh.ssh.pool import ConnectionPool, PooledLogin

pytestmark = pytest.mark.timeout(60)


def only(pool) -> PooledLogin:
    (entry,) = pool.snapshot()
    return entry


def test_snapshot_of_an_empty_pool_is_empty():
    assert ConnectionPool().snapshot() == ()


def test_open_channels_show_and_the_login_is_not_idle(make, pool, client_home):
    before = time.time()
    one, two = make(), make(cache_name="readonly")
    assert one.contains("0" * 64) is False
    entry = only(pool)
    assert entry.target == one.target().label == f"root@127.0.0.1:{client_home.sshd.port}"
    assert entry.via is None
    assert before <= entry.connected_since <= time.time()
    assert entry.channels == 1  # the remote server stays up between calls
    assert entry.idle == 0
    assert entry.alive is True
    # The fixture pins the host key in known_hosts, so that is how it was verified.
    assert entry.host_key_verified.startswith(f"known_hosts {client_home.known_hosts}:")

    assert two.info()["read_only"] is True
    assert only(pool).channels == 2  # two caches, two servers, one login
    one.close()
    assert wait_for(lambda: only(pool).channels == 1)
    assert only(pool).idle == 0


def test_idle_counts_from_the_last_channel_closed(make, pool):
    cache = make()
    assert cache.contains("0" * 64) is False
    assert only(pool).idle == 0
    cache.close()
    assert wait_for(lambda: only(pool).channels == 0)
    first = only(pool).idle
    time.sleep(0.3)
    later = only(pool)
    assert later.idle >= first + 0.3
    assert later.idle < 5  # counted from the close, not from the login

    assert cache.contains("0" * 64) is False  # a new server: in use again
    assert only(pool).channels == 1 and only(pool).idle == 0


def test_a_dead_login_shows_until_it_is_replaced(make, pool):
    cache = make()
    cache.info()
    (pooled,) = pool.sessions()
    pooled.transport.close()
    entry = only(pool)
    assert entry.alive is False
    assert entry.channels == 0


def test_close_all_empties_the_snapshot(make, pool):
    cache = make()
    cache.info()
    assert len(pool.snapshot()) == 1
    pool.close_all()
    assert pool.snapshot() == ()

    cache.reconnect()  # its channel went with the transport
    cache.info()
    assert len(pool.snapshot()) == 1
    fleche_ssh.close_all()  # the public name closes the same, default pool
    assert pool.snapshot() == ()


def test_two_pools_log_in_apart(make, pool, sshd):
    cache = make()
    target = cache.target()
    other = ConnectionPool()
    try:
        mine = pool.session(target, cache.login(target))
        theirs = other.session(target, cache.login(target))
        assert mine is not theirs and mine.transport is not theirs.transport
        assert pool.session(target, cache.login(target)) is mine
        assert len(pool) == len(other) == 1
    finally:
        other.close_all()
    assert len(other) == 0 and target in pool


def test_a_forked_child_starts_with_every_pool_empty(make, pool):
    cache = make()
    target = cache.target()
    other = ConnectionPool()
    try:
        other.session(target, cache.login(target))
        cache.info()
        assert len(pool) == len(other) == 1
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os._exit(len(pool) + 10 * len(other))
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(pool) == len(other) == 1  # the parent's logins are untouched
        assert cache.contains("0" * 64) is False
    finally:
        other.close_all()
