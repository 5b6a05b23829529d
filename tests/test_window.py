"""The receive window grows to the link, and only to the link.

The policy (:class:`fleche_ssh.wire.window.ReceiveWindow`) is pure logic,
driven here by a simulated link with a chosen round trip and bandwidth: it
must grow where the window bounds the transfer and stay put where the link
or the reader does.  Then the real thing: a large value through a relay
adding 50 ms to every round trip grows the channel's window and arrives
intact; on loopback the window stays at its starting size.
"""

from __future__ import annotations

import collections
import logging
import os

import paramiko
import pytest
from paramiko.buffered_pipe import BufferedPipe
from support.keys import hash_known_host, known_hosts_entry
from support.relay import DelayRelay

from fleche_ssh.wire.paramiko_process import (
    LEAST_SHARE,
    WINDOW_SIZE,
    ParamikoProcess,
    window_control,
)
from fleche_ssh.wire.window import CAP, FLOOR, ReceiveWindow

MIB = 1 << 20


def simulate(window: ReceiveWindow, *, rtt: float, bandwidth: float, seconds: float,
             start: float = 0.0, reader: float | None = None, step: float = 0.001) -> float:
    """Drive *window* with a link of *rtt* and *bandwidth* (bytes/s); the bytes/s it carried.

    A request goes out at *start* and reaches the server half a round trip
    later; from then on the server sends whatever its credit and the
    bandwidth allow each step.  The reader consumes what has arrived, at
    most *reader* bytes/s (None: every byte the moment it arrives), and its
    grants reach the server half a round trip later.
    """
    backlog = 0
    window.sent(start)
    credit, delivered = window.size, 0
    data: collections.deque[tuple[float, int]] = collections.deque()
    grants: collections.deque[tuple[float, int]] = collections.deque()
    for tick in range(int(seconds / step)):
        now = start + tick * step
        while grants and grants[0][0] <= now:
            credit += grants.popleft()[1]
        sent = min(credit, int(bandwidth * step)) if now >= start + rtt / 2 else 0
        credit -= sent
        if sent:
            data.append((now + rtt / 2, sent))
        while data and data[0][0] <= now:
            n = data.popleft()[1]
            window.arrived(n, now)
            backlog += n
        n = backlog if reader is None else min(backlog, int(reader * step))
        if n:
            backlog -= n
            delivered += n
            if grant := window.consumed(n, now):
                grants.append((now + rtt / 2, grant))
    return delivered / seconds


@pytest.mark.parametrize(("rtt", "bandwidth"), [(0.0005, 300e6), (0.01, 150e6), (0.05, 12.5e6)])
def test_the_window_stays_put_where_it_does_not_bound_the_transfer(rtt, bandwidth):
    window = ReceiveWindow()
    carried = simulate(window, rtt=rtt, bandwidth=bandwidth, seconds=2.0)
    assert window.size == FLOOR
    assert carried > 0.95 * bandwidth


@pytest.mark.parametrize("rtt", [0.05, 0.1])
def test_on_a_long_fat_link_the_window_grows_to_the_bandwidth_delay_product(rtt):
    bandwidth = 150e6  # 7.5 MB in flight at 50 ms, 15 MB at 100 ms: more than 4 MiB
    window = ReceiveWindow()
    simulate(window, rtt=rtt, bandwidth=bandwidth, seconds=4.0)
    assert window.round_trip == pytest.approx(rtt, abs=0.003)
    assert bandwidth * rtt < window.size <= 4 * bandwidth * rtt
    # Once grown, the next transfer fills the link from its start.
    assert simulate(window, rtt=rtt, bandwidth=bandwidth, seconds=2.0, start=10.0) \
        > 0.9 * bandwidth


def test_a_reader_slower_than_the_link_keeps_the_window():
    # The window allows 84 MB/s at 50 ms; the reader takes 60 MB/s: it is the bottleneck.
    window = ReceiveWindow()
    simulate(window, rtt=0.05, bandwidth=1e9, seconds=3.0, reader=60e6)
    assert window.size == FLOOR


def test_the_window_never_grows_past_its_cap():
    window = ReceiveWindow(cap=16 * MIB)
    simulate(window, rtt=0.1, bandwidth=2e9, seconds=3.0)
    assert window.size == 16 * MIB


def test_consumed_bytes_go_back_once_a_tenth_of_the_window_is_read():
    window = ReceiveWindow()
    assert window.consumed(FLOOR // 10, 0.0) == 0
    assert window.consumed(1, 0.001) == FLOOR // 10 + 1


def test_a_request_sent_after_an_earlier_answer_began_arriving_is_no_round_trip():
    # Pipelined calls: a request goes out (at 1.0) while bytes of an earlier
    # answer, read at 0.9, are still being counted.  Matched with them, the
    # "round trip" would be negative, and a window that judges the link by a
    # negative round trip never finds it is what bounds a transfer.
    window = ReceiveWindow()
    window.sent(0.0)
    window.arrived(100, 0.05)
    window.sent(1.0)
    window.arrived(100, 0.9)
    assert window.round_trip == pytest.approx(0.05)


def test_default_bounds():
    assert WINDOW_SIZE == FLOOR == 4 * MIB and CAP == 64 * MIB
    assert window_control(), "this Paramiko lacks what the growing window relies on"


class _OtherPipe:
    """A channel buffer of another type than ``BufferedPipe``, doing the same work."""

    def __init__(self) -> None:
        self._pipe = BufferedPipe()

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __len__(self) -> int:
        return len(self._pipe)


@pytest.fixture
def internals_missing(monkeypatch):
    """A Paramiko whose channels buffer what arrives in another type than ``BufferedPipe``."""
    original = paramiko.Channel.__init__

    def other_buffer(self, chanid):
        original(self, chanid)
        self.in_buffer = _OtherPipe()

    monkeypatch.setattr(paramiko.Channel, "__init__", other_buffer)
    window_control.cache_clear()
    yield
    window_control.cache_clear()


def test_without_the_internals_it_says_so_in_the_debug_log(internals_missing, caplog):
    with caplog.at_level(logging.DEBUG, "fleche_ssh.window"):
        assert window_control() is False
    assert f"paramiko {paramiko.__version__} lacks in_buffer: BufferedPipe: channels keep " \
        "Paramiko's fixed 4194304-byte window" in caplog.text


# -- against the real sshd ----------------------------------------------------------------


@pytest.fixture
def relayed(client_home, sshd):
    """ssh options reaching ``testhost`` through a relay adding 25 ms each way."""
    with DelayRelay(sshd.port, 0.025) as relay:
        entry = hash_known_host(known_hosts_entry("127.0.0.1", relay.port))
        with client_home.known_hosts.open("a") as known_hosts:
            known_hosts.writelines(f"{entry} {pub}\n" for pub in sshd.host_public_keys.values())
        yield ["-p", str(relay.port)]


def _process(cache) -> ParamikoProcess:
    (process,) = cache._conn.idle_processes()
    assert isinstance(process, ParamikoProcess)
    return process


@pytest.mark.timeout(120)
def test_a_large_load_at_distance_grows_the_window_and_arrives_intact(make, relayed):
    cache = make(ssh_options=relayed)
    value = os.urandom(64 * MIB)
    digest = cache._rpc("save_value", value)
    assert cache.load_value(digest) == value
    window = _process(cache).window
    assert window is not None
    assert window.round_trip is not None and window.round_trip >= 0.05
    assert window.size > FLOOR, f"the window did not grow: {window}"
    assert window.size <= CAP


def test_without_the_internals_a_channel_keeps_paramikos_own_window(make, internals_missing):
    cache = make()
    value = os.urandom(16 * MIB)
    assert cache.load_value(cache._rpc("save_value", value)) == value
    process = _process(cache)
    assert process.window is None
    assert process._channel.in_window_size == WINDOW_SIZE


def test_on_loopback_the_window_stays_at_its_starting_size(make):
    cache = make()
    value = os.urandom(64 * MIB)
    digest = cache._rpc("save_value", value)
    for _ in range(2):
        assert cache.load_value(digest) == value
    window = _process(cache).window
    assert window is not None and window.round_trip is not None
    assert window.size == FLOOR, f"the window grew on loopback: {window}"


def test_channels_opened_beside_others_share_the_starting_window(make, pool):
    # sshd queues what the windows of one connection allow together: four channels
    # of 4 MiB each loading at once cost it as one 16 MiB window does.
    caches = [make() for _ in range(6)]
    windows = []
    for cache in caches:
        cache.info()
        windows.append(_process(cache)._channel.in_window_size)
    (transport,) = {_process(c)._channel.get_transport() for c in caches}
    assert transport is pool.get(caches[0].target()).transport
    assert windows == [max(WINDOW_SIZE // n, LEAST_SHARE) for n in range(1, 7)]
    assert windows[0] == WINDOW_SIZE and windows[-1] == LEAST_SHARE
    # Each still loads intact, and its window is where its flow control starts.
    value = os.urandom(8 * MIB)
    digest = caches[-1]._rpc("save_value", value)
    assert caches[-1].load_value(digest) == value
    window = _process(caches[-1]).window
    assert window is not None and window.floor == LEAST_SHARE


@pytest.mark.timeout(120)
def test_a_new_channel_of_the_session_opens_at_the_window_the_link_grew_to(make, relayed, pool):
    first = make(ssh_options=relayed)
    value = os.urandom(64 * MIB)
    assert first.load_value(first._rpc("save_value", value)) == value
    grown = _process(first).window
    assert grown is not None and grown.size > FLOOR, f"the window did not grow: {grown}"
    session = pool.get(first.target())
    assert session is not None and session.grown_window == grown.size
    # A second cache on the same login: its channel is opened with the grown window
    # (beside the first cache's channel, at most half the cap).
    second = make(ssh_options=relayed)
    second.info()
    process = _process(second)
    assert process._channel.get_transport() is session.transport
    assert process._channel.in_window_size == min(grown.size, CAP // 2) > FLOOR
    assert process.window is not None and process.window.floor == min(grown.size, CAP // 2)
    # With two channels open, a third shares the cap with them: at most a third of it.
    third = make(ssh_options=relayed)
    third.info()
    assert _process(third)._channel.in_window_size == min(grown.size, CAP // 3)
    # Another destination (loopback, without the relay) is another link: the default.
    direct = make()
    direct.info()
    fresh = _process(direct)
    assert fresh._channel.get_transport() is not session.transport
    assert fresh._channel.in_window_size == WINDOW_SIZE
    assert pool.get(direct.target()).grown_window == 0
