"""Many threads over one remote server: pipelined requests, answers matched in order.

Against the real sshd: eight threads on ``channels = 1`` share one
``fleche remote --serve`` process and each gets its own answers; an
``("err", exc)`` answer fails only its request; a server killed with
requests in flight fails every one of them with the typed error, and
none hangs; 64 MiB values saved and loaded at once on one channel never
deadlock its window; a request that cannot be pickled is refused with
nothing sent; and a small call does not queue behind a large one.  The
choice of channel (:mod:`fleche_ssh.wire.lanes`) is pure logic and is
also checked on its own, and the in-memory server shows the requests
really go out back to back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fleche
import pytest
from fleche.call import Call
from fleche.config import cache_from_config
from fleche.digest import digest
from support.caches import wait_for

from fleche_ssh import ParamikoCache
from fleche_ssh.errors import ProtocolError, RemoteCommandError, RemoteConnectionError
from fleche_ssh.wire import lanes
from fleche_ssh.wire.frames import encode_frame
from fleche_ssh.wire.memory import MemoryRemote, Script
from fleche_ssh.wire.server import RemoteServer

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("fresh_pool")]

THREADS = 8
#: Bound on any thread's work in these tests.
JOIN = 120.0
MIB = 1 << 20


def servers_in(workdir: Path) -> list[int]:
    """The pids of the ``fleche remote --serve`` processes running in *workdir*.

    Other test runs on the machine run servers too; theirs run elsewhere.
    """
    found = subprocess.run(["pgrep", "-f", "fleche remote --serve"], capture_output=True,
                           text=True, timeout=10, check=False)
    pids = []
    for pid in map(int, found.stdout.split()):
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")) == workdir:
                pids.append(pid)
        except OSError:
            continue  # ended since pgrep saw it
    return pids


def in_threads(work: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """``work(i)`` on *count* threads started together: each one's result or exception."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            start.wait(JOIN)
            results[i] = work(i)
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return results


def lane(cache: ParamikoCache, index: int = 0) -> lanes.Lane:
    return cache._conn._pool.lanes[index]


def pid_of(cache: ParamikoCache) -> int:
    """The pid of the server a small call reaches now (``info()`` itself is remembered)."""
    return cache._conn.call("info")["pid"]


# -- one server, many threads ------------------------------------------------------------


def test_eight_threads_share_one_server_and_get_their_own_answers(make, remote_dir):
    cache = make(channels=1)
    pid = pid_of(cache)

    def work(i: int) -> list[bool]:
        checks = []
        for round_ in range(20):
            value = f"thread {i} round {round_}".encode()
            key = cache._rpc("save_value", value)
            checks.append(key == digest(value))
            checks.append(cache.load_value(key) == value)
            checks.append(cache.contains("0" * 64) is False)
        return checks

    results = in_threads(work)
    assert results == [[True] * 60] * THREADS
    assert servers_in(remote_dir) == [pid]  # one remote process served all eight threads
    assert cache._conn.open_channels == 1


def test_fleche_functions_on_eight_threads_over_one_channel(make, remote_dir):
    cache = make(channels=1)
    computed: list[int] = []

    @fleche.fleche
    def cube(n: int) -> int:
        computed.append(n)
        return n**3

    def work(i: int) -> list[int]:
        with fleche.cache(cache):
            return [cube(n) for n in range(i, 48, THREADS)]

    results = in_threads(work)
    assert results == [[n**3 for n in range(i, 48, THREADS)] for i in range(THREADS)]
    assert sorted(computed) == list(range(48))
    with fleche.cache(cache):
        assert [cube(n) for n in range(48)] == [n**3 for n in range(48)]
    assert sorted(computed) == list(range(48))  # every one found again on the remote
    assert len(servers_in(remote_dir)) == 1


def test_an_error_answer_fails_only_its_own_request(make, remote_dir):
    cache = make(channels=1)
    pid = pid_of(cache)

    def work(i: int) -> list[object]:
        out: list[object] = []
        for round_ in range(10):
            if i % 2:
                try:
                    cache.load_value(digest(f"never saved {i} {round_}"))
                    out.append("no error")
                except KeyError as e:
                    out.append(any("raised by the remote cache" in n for n in e.__notes__))
            else:
                value = (i, round_)
                out.append(cache.load_value(cache._rpc("save_value", value)) == value)
        return out

    assert in_threads(work) == [[True] * 10] * THREADS
    assert servers_in(remote_dir) == [pid] and pid_of(cache) == pid


def test_a_request_that_cannot_be_pickled_sends_nothing_while_others_run(make, remote_dir):
    cache = make(channels=1)
    pid = pid_of(cache)

    def work(i: int) -> object:
        if i == 0:
            with pytest.raises(TypeError, match="pickle"):
                cache.save(Call(name="pipeline.lock", arguments={}, result=threading.Lock()))
            return "refused"
        return [cache.contains("0" * 64) for _ in range(20)]

    results = in_threads(work)
    assert results == ["refused"] + [[False] * 20] * (THREADS - 1)
    assert servers_in(remote_dir) == [pid]


# -- the server dies with requests in flight --------------------------------------------------


def test_a_killed_server_fails_every_request_in_flight(make, remote_dir):
    cache = make(channels=1)
    pid = pid_of(cache)
    os.kill(pid, signal.SIGSTOP)  # it reads nothing more: the requests pile up
    try:
        outcome: list[Any] = []
        worker = threading.Thread(
            target=lambda: outcome.extend(in_threads(
                lambda i: cache.contains(f"{i:064x}") if i % 2 else cache.load_value("1" * 64))),
            daemon=True)
        worker.start()
        assert wait_for(lambda: lane(cache).pipeline.in_flight == THREADS)
    finally:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    worker.join(JOIN)
    assert not worker.is_alive()
    assert time.monotonic() - started < 30
    assert len(outcome) == THREADS
    for error in outcome:
        assert type(error) is RemoteCommandError, error
        assert "killed by signal SIGKILL" in str(error)
    assert pid_of(cache) != pid  # the next call starts a new server
    assert len(servers_in(remote_dir)) == 1


# -- large values -------------------------------------------------------------------------


def test_large_values_both_ways_at_once_on_one_channel(make, remote_dir):
    cache = make(channels=1)
    stored = [os.urandom(64 * MIB) for _ in range(2)]
    keys = [cache._rpc("save_value", value) for value in stored]

    def work(i: int) -> list[bool]:
        checks = []
        for round_ in range(2):
            if i % 2:
                checks.append(cache.load_value(keys[(i + round_) % 2]) == stored[(i + round_) % 2])
            else:
                value = os.urandom(64 * MIB)
                checks.append(cache._rpc("save_value", value) == digest(value))
            checks.append(cache.contains("0" * 64) is False)
        return checks

    assert in_threads(work, 4) == [[True] * 4] * 4
    assert len(servers_in(remote_dir)) == 1
    # Progress counted each direction's frames apart, and left the process as it was.
    assert lane(cache).pipeline.channel.process.counter is None


@contextlib.contextmanager
def a_large_load_in_flight(cache: ParamikoCache,
                           answers: list[object]) -> Iterator[tuple[int, bytes]]:
    """A ``load_value`` of 8 MiB sent to a stopped server: in flight until the block ends.

    Yields the server's pid and the value, which is appended to *answers* once loaded.
    """
    value = os.urandom(8 * MIB)
    key = cache._rpc("save_value", value)
    pid = pid_of(cache)
    os.kill(pid, signal.SIGSTOP)  # the large answer cannot come until SIGCONT
    loader = threading.Thread(target=lambda: answers.append(cache.load_value(key)), daemon=True)
    try:
        loader.start()
        assert wait_for(lambda: lane(cache).large == 1)
        yield pid, value
    finally:
        os.kill(pid, signal.SIGCONT)
    loader.join(JOIN)


def test_a_small_call_takes_another_channel_while_a_large_one_is_in_flight(make, remote_dir):
    cache = make(channels=2)
    loaded: list[object] = []
    with a_large_load_in_flight(cache, loaded) as (first, value):
        second = pid_of(cache)  # answered while the load waits: on a second server
        assert second != first and len(servers_in(remote_dir)) == 2
        assert cache.contains("0" * 64) is False
        assert lane(cache).pipeline.in_flight == 1  # nothing queued behind the load
    assert loaded == [value]


def test_a_small_call_waits_rather_than_queue_behind_a_large_one(make, remote_dir):
    cache = make(channels=1)
    answers: list[object] = []
    with a_large_load_in_flight(cache, answers) as (pid, value):
        small = threading.Thread(target=lambda: answers.append(cache.contains("0" * 64)),
                                 daemon=True)
        small.start()
        time.sleep(0.3)
        assert small.is_alive()  # waiting for the channel ...
        assert lane(cache).pipeline.in_flight == 1  # ... without a request behind the load
    small.join(JOIN)
    assert answers == [value, False]  # the load first, then the small call
    assert servers_in(remote_dir) == [pid]


# -- the requests go out back to back ---------------------------------------------------------


@dataclasses.dataclass
class InMemory:
    """A RemoteServer on fleche's own server loop in this process (pure pipeline logic).

    ``failures`` collects what :meth:`call_catching` calls raise.
    """

    remote: MemoryRemote
    cache: ParamikoCache  # the server holds it weakly
    server: RemoteServer
    failures: list[BaseException] = dataclasses.field(default_factory=list)

    def call_catching(self) -> None:
        try:
            self.server.call("contains", "0" * 64)
        except BaseException as e:
            self.failures.append(e)

    def in_flight(self) -> int:
        lanes_ = self.server._pool.lanes
        return lanes_[0].pipeline.in_flight if lanes_ else 0


def in_memory(script: Script, counter: Any = None) -> InMemory:
    local = cache_from_config({"values": {"type": "memory"}, "calls": {"type": "memory"}})
    remote = MemoryRemote(local, script=script, counter=counter)
    cache = ParamikoCache(host="memory", channels=1)
    return InMemory(remote, cache, RemoteServer(cache, opener=remote))


def test_requests_go_out_before_the_first_answer_comes():
    sent: list[int] = []
    world = in_memory(Script(stalled=True),
                      counter=lambda way, n: sent.append(n) if way == "sent" else None)
    remote, server = world.remote, world.server
    frame = sum(map(len, encode_frame(("contains", ("0" * 64,), {}))))
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(server.call("contains", "0" * 64)),
                                daemon=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    try:
        # The stalled server has read nothing, yet all five requests are on their way.
        assert wait_for(lambda: sum(sent) == 5 * frame)
        assert len(remote.processes) == 1
    finally:
        remote.processes[0].resume()
    for thread in threads:
        thread.join(JOIN)
    assert results == [False] * 5
    server.close()
    assert remote.processes[0].join(JOIN)


def test_an_interrupted_send_closes_the_server_and_fails_the_calls_on_it():
    interrupt = threading.Event()

    def counter(way: str, n: int) -> None:
        if way == "sent" and interrupt.is_set():
            interrupt.clear()
            raise KeyboardInterrupt  # Ctrl-C as the frame goes out

    world = in_memory(Script(stalled=True), counter=counter)
    remote, server, outcome = world.remote, world.server, world.failures
    thread = threading.Thread(target=world.call_catching, daemon=True)
    thread.start()
    assert wait_for(lambda: world.in_flight() == 1)
    interrupt.set()
    with pytest.raises(KeyboardInterrupt):
        server.call("expand", "1" * 8)
    thread.join(JOIN)
    (error,) = outcome
    assert type(error) is RemoteConnectionError
    assert "'contains' on memory got no answer: 'expand'" in str(error)
    assert "was interrupted" in str(error)
    assert remote.processes[0].join(JOIN)  # its server was closed
    remote.script = Script()
    assert server.call("contains", "0" * 64) is False  # on a new one
    assert len(remote.processes) == 2
    server.close()


def test_text_in_place_of_a_frame_fails_every_request_in_flight():
    world = in_memory(Script(stdout=b"Welcome to the cluster\n", stalled=True))
    remote, server, outcome = world.remote, world.server, world.failures
    threads = [threading.Thread(target=world.call_catching, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert wait_for(lambda: world.in_flight() == 3)
    remote.processes[0].resume()
    for thread in threads:
        thread.join(JOIN)
    assert [type(e) for e in outcome] == [ProtocolError] * 3
    assert all("Welcome to the cluster" in str(e) for e in outcome)
    assert len({id(e) for e in outcome}) == 3  # each thread raises an error of its own
    server.close()


# -- the choice of channel (pure logic) -------------------------------------------------------


class _Pipe:
    broken = False


def _lane(users: int, large: int = 0, broken: bool = False) -> lanes.Lane:
    pipe = _Pipe()
    pipe.broken = broken
    return lanes.Lane(pipeline=pipe, users=users, large=large)  # type: ignore[arg-type]


@pytest.mark.parametrize(("open_lanes", "may_open", "large", "expected"), [
    ([(2,), (0,)], False, False, 1),          # an idle channel first
    ([(2,), (1,)], True, False, lanes.OPEN),  # then a new one, while allowed
    ([(3,), (1,)], False, False, 1),          # then the least loaded
    ([(1, 1), (3,)], False, False, 1),        # never behind a large call
    ([(1, 1), (3, 1)], False, False, None),   # or wait
    ([(1, 1), (3, 1)], False, True, 0),       # a large call joins the least loaded
    ([(1, 1), (2,)], False, True, 1),         # preferring one with no large call
    ([(0, 0, True), (2,)], False, False, 1),  # a broken channel is never chosen
])
def test_choose(open_lanes, may_open, large, expected):
    built = [_lane(*spec) for spec in open_lanes]
    chosen = lanes.choose(built, may_open=may_open, large=large)
    assert chosen == (built[expected] if isinstance(expected, int) else expected)


def test_a_call_is_large_by_its_frame_or_by_its_answer():
    assert lanes.is_large("load_value", encode_frame(("load_value", ("0" * 64,), {})))
    assert not lanes.is_large("load", encode_frame(("load", ("0" * 64,), {})))
    assert not lanes.is_large("save_value", encode_frame(("save_value", (bytes(MIB - 64),), {})))
    assert lanes.is_large("save_value", encode_frame(("save_value", (bytes(MIB + 1),), {})))


def _frame_of_exactly(size: int) -> tuple[bytes, bytes]:
    """A save_value request whose pickled body is *size* bytes (pickle's overhead is fixed)."""
    overhead = len(encode_frame(("save_value", (bytes(size),), {}))[1]) - size
    frame = encode_frame(("save_value", (bytes(size - overhead),), {}))
    assert len(frame[1]) == size
    return frame


def test_a_request_of_exactly_the_large_size_is_still_small():
    assert not lanes.is_large("save_value", _frame_of_exactly(lanes.LARGE_FRAME))
    assert lanes.is_large("save_value", _frame_of_exactly(lanes.LARGE_FRAME + 1))
