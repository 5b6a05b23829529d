"""The frame logic and the channel pool, through the in-process remote instead of sshd.

:class:`~fleche_ssh.wire.memory.MemoryRemote` runs fleche's own server loop
(:func:`fleche.remote.serve`) on a thread, over socketpairs, against an
in-memory fleche cache, so everything above the remote-process seam (frames,
:class:`~fleche_ssh.wire.channel.ExecChannel`, the pool of
:class:`~fleche_ssh.wire.server.RemoteServer`, the error messages) runs as
it does against sshd.  The real-sshd tests (test_faults, test_errors,
test_channels ...) check the same behaviour end to end; these reach the
cases sshd makes slow or racy: a server stalled mid-call, a death at an
exact byte count, threads queueing for a channel.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import pytest
from fleche.call import Call
from fleche.config import cache_from_config
from fleche.digest import digest
from fleche.remote import RemoteConnectionError

from fleche_ssh import ParamikoCache
from fleche_ssh.errors import (
    ConnectionLost,
    LoginLost,
    PromptUnavailable,
    ProtocolError,
    RemoteCommandError,
    ValueTooLarge,
)
from fleche_ssh.wire import frames
from fleche_ssh.wire.channel import ExecChannel
from fleche_ssh.wire.memory import MemoryRemote, Script
from fleche_ssh.wire.server import RemoteServer

pytestmark = pytest.mark.timeout(60)

#: Bound on any single failing operation.
PROMPT = 10.0
#: Larger than the pump's 1 MiB chunk and not a multiple of it.
LARGE = (24 << 20) + 12345
ANNOUNCED = "fleche server starting in /srv/project"
ABSENT = "0" * 64


def local_cache() -> Any:
    return cache_from_config({"values": {"type": "memory"}, "calls": {"type": "memory"}})


Build = Callable[..., tuple[ParamikoCache, MemoryRemote]]


@pytest.fixture
def memory() -> Iterator[Build]:
    """``memory(**keys)``: a ParamikoCache whose remote servers are MemoryProcesses.

    Afterwards every cache is closed, and every server thread must have ended.
    """
    made: list[tuple[ParamikoCache, MemoryRemote]] = []

    def build(*, local: Any = None, script: Script | None = None, **keys: Any
              ) -> tuple[ParamikoCache, MemoryRemote]:
        remote = MemoryRemote(local if local is not None else local_cache(),
                              script=script or Script())
        cache = ParamikoCache(**{"host": "memory", "python": "python3", **keys})
        object.__setattr__(cache, "_conn", RemoteServer(cache, opener=remote))
        made.append((cache, remote))
        return cache, remote

    yield build
    for cache, remote in made:
        cache.close()
        for process in remote.processes:
            process.resume()
        assert all(process.join(PROMPT) for process in remote.processes), "a server hung"


def failure(error_type: type[BaseException], operation: Callable[[], object]) -> BaseException:
    """The error *operation* raises, exactly of *error_type*, and within PROMPT."""
    started = time.monotonic()
    with pytest.raises(error_type) as caught:
        operation()
    assert time.monotonic() - started < PROMPT
    assert type(caught.value) is error_type
    return caught.value


# -- the codec alone ----------------------------------------------------------------------


def test_a_frame_round_trips_through_the_codec():
    request = ("save", (Call(name="wire.codec", arguments={"n": 1}, result=b"x" * 1000),), {})
    header, body = frames.encode_frame(request)
    assert frames.body_size(header) == frames.body_size(header + body) == len(body)
    method, (call,), kwargs = frames.decode(body)
    assert (method, call.result, kwargs) == ("save", b"x" * 1000, {})
    assert frames.decode(memoryview(bytearray(body))) == frames.decode(body)  # in place


@pytest.mark.parametrize(
    "stray",
    [b"\x00\x00\x00\x02",  # no pickle is 2 bytes long: known from the header alone
     b"Welcome to the cluster!\n",  # text: a "length" of a gigabyte, but no PROTO
     b"\x00\x00\x01\x00\x7f\x05",  # not PROTO
     b"\x00\x00\x01\x00\x80\x01"],  # protocol 1
    ids=["too-short", "text", "no-proto", "old-protocol"],
)
def test_stray_bytes_are_told_from_a_frame_before_its_length_is_trusted(stray):
    with pytest.raises(frames.NotAFrame) as refused:
        frames.body_size(stray)
    assert refused.value.seen == stray[: frames.QUOTED]


def test_a_length_is_not_judged_on_the_header_alone():
    # Four bytes of text are a plausible length; the pickle's start decides, once it is in.
    assert frames.body_size(b"Welc") == int.from_bytes(b"Welc", "big")
    with pytest.raises(frames.NotAFrame):
        frames.body_size(b"Welcom")


def test_a_body_that_does_not_end_a_pickle_is_not_a_frame():
    _, body = frames.encode_frame(("contains", (ABSENT,), {}))
    with pytest.raises(frames.NotAFrame) as shifted:
        frames.decode(body[:-1])
    assert shifted.value.seen == frames.HEADER.pack(len(body) - 1) + body[: frames.QUOTED]
    broken = body[:2] + b"\xff" + body[3:]  # an unknown opcode: pickle's own complaint
    with pytest.raises(frames.NotAFrame):
        frames.decode(broken)
    message = str(frames.protocol_error(b"Welcome"))
    assert "not a fleche frame to stdout: b'Welcome'" in message and ".bashrc" in message


def test_a_request_over_4_gib_is_refused_by_the_codec(monkeypatch):
    class Huge:
        def __len__(self) -> int:
            return frames.MAX_FRAME + 1

    monkeypatch.setattr(frames, "cloudpickle",
                        types.SimpleNamespace(dumps=lambda obj: Huge(), loads=cloudpickle.loads))
    monkeypatch.setattr(frames, "pickle", types.SimpleNamespace(dumps=lambda obj, protocol: Huge()))
    with pytest.raises(ValueTooLarge, match="nothing was sent") as refused:
        frames.encode_frame(("save", (), {}))
    assert f"{frames.MAX_FRAME + 1:,} bytes" in str(refused.value)


# -- frames over the memory remote --------------------------------------------------------


def test_values_round_trip_small_and_large(memory):
    cache, remote = memory()
    value = os.urandom(LARGE)
    key = cache.save(Call(name="wire.large", arguments={"n": 1}, result=value))
    assert cache.contains(key) is True
    assert cache.load(key).name == "wire.large"
    assert cache.load_value(digest(value)) == value
    assert cache.contains(ABSENT) is False
    assert len(remote.processes) == 1  # one server answered all of it, in step


@pytest.mark.parametrize(
    "stdout",
    [b"Welcome to memory!\n\nYour quota: 9.5 of 10 GB used\n",
     b"\x00\x00\x01\x00\x80\x00",  # a header and a pickle's first byte, then nothing
     b"\x00\x00\x00\x08\x80\x05"],  # a whole pickle start: the frame ends inside the real one
    ids=["login-banner", "truncated-frame", "shifted-frame"],
)
def test_stdout_that_is_not_a_frame_is_quoted(memory, stdout):
    cache, remote = memory(script=Script(stdout=stdout))
    for _ in range(2):  # and again: the next call is not thrown off by the first
        message = str(failure(ProtocolError, cache.info))
        assert "not a fleche frame to stdout" in message
        assert repr(stdout[:6])[:-1] in message  # the first bytes, as seen
        assert ".bashrc" in message
    assert len(remote.processes) == 2  # a channel out of step is not used again


def _needs(module: str) -> object:
    return importlib.import_module(module)


@dataclasses.dataclass
class OnlyRemote:
    """Pickles fine; unpickles only where module ``only_remote`` exists (not here)."""

    n: int = 3

    def __reduce__(self) -> tuple[Any, ...]:
        return _needs, ("only_remote",)

    def __deepcopy__(self, memo: dict[int, object]) -> OnlyRemote:
        return self  # the in-memory storage copies what it stores


def test_an_answer_this_side_cannot_unpickle_leaves_the_channel_usable(memory):
    local = local_cache()
    key = local.values.save(OnlyRemote())
    cache, remote = memory(local=local)
    pid = cache.info()["pid"]
    with pytest.raises(ModuleNotFoundError, match="only_remote") as missing:
        cache.load_value(key)
    (note,) = missing.value.__notes__
    assert "the remote cache on memory answered 'load_value'" in note
    assert cache.info()["pid"] == pid and cache.contains(ABSENT) is False
    assert len(remote.processes) == 1  # the same server, still in step


# -- how the remote ended: the same errors and messages as through sshd -------------------


def test_a_missing_remote_python(memory):
    said = "sh: 1: exec: /nonexistent/python3: not found"
    cache, _ = memory(python="/nonexistent/python3",
                      script=Script(stderr=(said,), exit_status=127))
    message = str(failure(RemoteCommandError, cache.info))
    assert message.startswith("The remote command was not found (exit status 127). Check python=")
    assert "remote command: /nonexistent/python3 -m fleche remote --serve" in message
    assert f"remote stderr (last 1 lines):\n{said}" in message


def test_a_remote_python_without_fleche(memory):
    cache, _ = memory(script=Script(stderr=("/usr/bin/python3: No module named fleche",),
                                    exit_status=1))
    message = str(failure(RemoteCommandError, cache.info))
    assert "fleche is not installed for the remote python (exit status 1)" in message
    assert "No module named fleche" in message and "pip install fleche" in message


def test_a_failing_setup_command(memory):
    cache, _ = memory(workdir="/srv/project", setup_commands=["module load nothing"],
                      script=Script(stderr=("module: nothing: not found",), exit_status=1))
    message = str(failure(RemoteCommandError, cache.info))
    assert "exited with status 1 before the server started" in message
    assert "setup command or the cd into workdir failed" in message
    assert ("remote command: cd /srv/project && module load nothing && exec python3 -m fleche "
            "remote --serve") in message


def check_killed(error: BaseException, name: str = "KILL") -> None:
    message = str(error)
    assert message.startswith(f"The remote fleche server was killed by signal SIG{name}.")
    assert "out-of-memory killer" in message
    assert f"remote stderr (last 1 lines):\n{ANNOUNCED}" in message
    assert "remote command: cd /srv/project && exec python3 -m fleche" in message


@pytest.mark.parametrize("name", ["KILL", "TERM"])
def test_server_killed_between_calls(memory, name):
    cache, remote = memory(workdir="/srv/project", script=Script(stderr=(ANNOUNCED,)))
    cache.info()
    remote.processes[0].die(name)
    check_killed(failure(RemoteCommandError, lambda: cache.contains(ABSENT)), name)
    cache.reconnect()
    assert cache.contains(ABSENT) is False
    assert len(remote.processes) == 2  # the next operation started a new server


def kill_after(remote: MemoryRemote, direction: str, threshold: int) -> list[int]:
    """Counts *direction* bytes on the next process opened; kills it past *threshold*."""
    moved = [0]

    def count(way: str, n: int) -> None:
        if way == direction:
            moved[0] += n
            if moved[0] >= threshold:
                remote.processes[-1].die()

    remote.counter = count
    return moved


def test_server_killed_while_receiving_a_large_save(memory):
    local = local_cache()
    cache, remote = memory(local=local, workdir="/srv/project", script=Script(stderr=(ANNOUNCED,)))
    value = os.urandom(LARGE)
    moved = kill_after(remote, "sent", 4 << 20)
    call = Call(name="wire.upload", arguments={}, result=value)
    check_killed(failure(RemoteCommandError, lambda: cache.save(call)))
    assert moved[0] < LARGE
    assert not local.values.contains(digest(value))  # nothing partial stored
    remote.counter = None
    cache.reconnect()
    key = cache.save(call)
    assert cache.load_value(digest(value)) == value and cache.contains(key)


def test_server_killed_while_sending_a_large_load_value(memory):
    local = local_cache()
    value = os.urandom(LARGE)
    key = local.values.save(value)
    cache, remote = memory(local=local, workdir="/srv/project", script=Script(stderr=(ANNOUNCED,)))
    moved = kill_after(remote, "received", 4 << 20)
    check_killed(failure(RemoteCommandError, lambda: cache.load_value(key)))
    assert moved[0] < LARGE
    remote.counter = None
    cache.reconnect()
    assert cache.load_value(key) == value


def test_server_that_crashes_shows_its_traceback(memory):
    cache, remote = memory()
    cache.info()
    process = remote.processes[0]
    process.say("Traceback (most recent call last):")
    process.say("MemoryError")
    process.exit(1)
    message = str(failure(RemoteCommandError, lambda: cache.contains(ABSENT)))
    assert message.startswith("The remote fleche server exited with status 1. Read its stderr")
    assert "Traceback (most recent call last):\nMemoryError" in message


def check_lost(error: BaseException, during: str) -> None:
    assert f"connection was lost during {during!r}" in str(error)
    assert ("The next call connects again, logging in again if it must; a save or an evict "
            "is never repeated by itself.") in str(error)


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fleche_ssh"
            and r.levelno == logging.INFO and "retrying" in r.getMessage()]


def in_flight(call: Callable[[], object]) -> Callable[[], dict[str, object]]:
    """Start *call* on a thread; the returned function waits for it and gives its outcome."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except RemoteConnectionError as e:
            outcome["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(0.2)
    assert worker.is_alive()  # stalled, as on a remote stuck on a dead file system

    def result() -> dict[str, object]:
        worker.join(PROMPT)
        assert not worker.is_alive(), "the call hung after its connection was lost"
        return outcome

    return result


@pytest.mark.parametrize("write", [False, True], ids=["contains", "save"])
def test_connection_lost_between_calls(memory, caplog, write):
    local = local_cache()
    cache, remote = memory(local=local)
    cache.info()
    remote.processes[0].lose()
    with caplog.at_level(logging.INFO):
        # The next call, of whatever kind, finds the channel dead and connects again.
        if write:
            key = cache.save(Call(name="wire.after-loss", arguments={}, result=1))
            assert local.contains(key)
        else:
            assert cache.contains(ABSENT) is False
    assert len(remote.processes) == 2
    assert retries(caplog) == []  # nothing failed, so nothing was repeated


def test_a_dead_idle_channel_is_closed_outside_the_pool_lock(memory):
    """Closing waits a moment for the stderr thread; the other calls must not wait behind it."""
    cache, remote = memory(channels=2)
    cache.info()
    lane = conn(cache)._pool.lanes[0]
    others_could_borrow: list[bool] = []
    close = lane.pipeline.close

    def close_watched(wait: float) -> None:
        probe = threading.Thread(target=lambda: conn(cache).open_channels, daemon=True)
        probe.start()
        probe.join(PROMPT / 4)
        others_could_borrow.append(not probe.is_alive())
        close(wait)

    lane.pipeline.close = close_watched  # type: ignore[method-assign]
    remote.processes[0].lose()
    assert cache.contains(ABSENT) is False
    assert others_could_borrow == [True]
    assert len(remote.processes) == 2


def test_connection_given_up_by_keepalives(memory):
    verdict = "memory did not answer 3 keepalives 15 s apart; the connection was closed"
    cache, remote = memory()
    cache.info()
    remote.processes[0].stall()
    done = in_flight(lambda: cache.evict(ABSENT))
    remote.processes[0].lose(verdict)
    error = done()["error"]
    assert type(error) is ConnectionLost
    assert str(error).startswith(f"{verdict}; 'evict' failed. The next call connects again")


@pytest.mark.parametrize("method", sorted(RemoteServer.RETRIED))
def test_a_read_lost_in_flight_is_retried_once(memory, caplog, method):
    local = local_cache()
    key = local.save(Call(name="wire.read", arguments={}, result=3))
    cache, remote = memory(local=local)
    cache.info()
    remote.processes[0].stall()
    calls: dict[str, Callable[[], object]] = {
        "contains": lambda: cache.contains(key),
        "load": lambda: cache.load(key).result,
        "load_value": lambda: cache.load_value(digest(3)),
        "info": lambda: cache.info()["cache_name"],
        "expand": lambda: cache.expand(key[:8]),
        "query": lambda: [c.result for c in cache.query(name="wire.read")],
    }
    expected = {"contains": True, "load": 3, "load_value": 3, "info": None, "expand": key,
                "query": [3]}
    with caplog.at_level(logging.INFO):
        done = in_flight(calls[method])
        remote.processes[0].lose()
        outcome = done()
    assert outcome == {"value": expected[method]}
    assert len(remote.processes) == 2
    assert retries(caplog) == [
        f"connection to memory lost during {method!r}; retrying it once on a new connection"]


def test_a_write_lost_in_flight_is_not_retried(memory, caplog):
    local = local_cache()
    cache, remote = memory(local=local)
    cache.info()
    remote.processes[0].stall()
    value = os.urandom(LARGE)
    with caplog.at_level(logging.INFO):
        done = in_flight(lambda: cache.save(Call(name="wire.lost-save", arguments={},
                                                 result=value)))
        remote.processes[0].lose()
        error = done()["error"]
    assert type(error) is ConnectionLost
    check_lost(error, "save")
    assert len(remote.processes) == 1  # not sent again
    assert retries(caplog) == []
    assert not local.values.contains(digest(value))  # nothing partial stored


def test_a_retry_that_loses_its_connection_too_is_not_retried_again(memory):
    cache, remote = memory()
    cache.info()
    remote.processes[0].stall()
    remote.script = Script(stalled=True)
    done = in_flight(lambda: cache.contains(ABSENT))
    remote.processes[0].lose()
    assert remote.wait_for(2)
    remote.processes[1].lose()
    check_lost(done()["error"], "contains")
    assert len(remote.processes) == 2


def test_an_error_from_the_remote_cache_is_not_retried(memory, caplog):
    cache, remote = memory()
    with caplog.at_level(logging.INFO), pytest.raises(KeyError):
        cache.load_value(ABSENT)
    assert len(remote.processes) == 1 and retries(caplog) == []


def test_the_retried_calls_are_the_reads_of_fleches_inventory():
    from fleche.remote import _CLIENT_METHODS

    assert RemoteServer.RETRIED.issubset({*_CLIENT_METHODS, "info"})
    assert not [name for name in RemoteServer.RETRIED
                if name in _CLIENT_METHODS and _CLIENT_METHODS[name].write]
    assert RemoteServer.RETRIED.isdisjoint({"save", "save_value", "prepare", "evict"})


def asks_for_a_code(command: str) -> Any:
    error = PromptUnavailable("The connection asked 'Verification code:', but nobody can answer "
                              "here. Set prompt = ...")
    error.add_note("no OpenSSH master listens at /tmp/cm")
    raise error


def test_a_lost_login_that_needs_an_answer(memory):
    cache, remote = memory()
    cache.info()
    remote.processes[0].lose("memory stopped answering")
    cache._conn._opener = asks_for_a_code
    error = failure(LoginLost, lambda: cache.contains(ABSENT))
    message = str(error)
    assert message.startswith("The login to memory was lost (memory stopped answering) and "
                              "cannot be made again without an answer.")
    assert "'Verification code:'" in message
    assert "OpenSSH master" in message and "control_persist" in message
    assert isinstance(error, PromptUnavailable)
    assert error.__notes__ == ["no OpenSSH master listens at /tmp/cm"]  # kept from the cause


def test_a_first_login_that_needs_an_answer_is_not_a_lost_one(memory):
    cache, _ = memory()
    cache._conn._opener = asks_for_a_code
    failure(PromptUnavailable, lambda: cache.contains(ABSENT))


def test_connecting_again_after_a_loss_says_so(memory):
    cache, remote = memory()
    cache.info()
    remote.processes[0].lose()
    remote.refuse = 1
    error = failure(RemoteConnectionError, lambda: cache.contains(ABSENT))
    assert error.__notes__ == [
        "The connection to memory was lost (the connection closed); connecting again failed."]


def test_closing_a_stalled_server_is_bounded(memory):
    cache, remote = memory()
    cache.info()
    process = remote.processes[0]
    channel = cache._conn._pool.lanes[0].pipeline.channel
    process.stall()
    started = time.monotonic()
    channel.close(0.2)  # EOF, no exit status within 0.2 s: dropped
    assert time.monotonic() - started < 2.0
    assert process.exit_status(0) is None
    assert process.join(PROMPT)  # it lost its stdio, and ended


# -- the channel pool ---------------------------------------------------------------------


def conn(cache: ParamikoCache) -> RemoteServer:
    """The cache's channel pool (fleche's ``SshCache`` keeps its connection as ``_conn``)."""
    return cache._conn


def answered_once(cache: ParamikoCache, remote: MemoryRemote) -> None:
    """Let the first server of a stalled cache answer once, then stall it again.

    Until one server has answered, a cache starts no second one
    (:meth:`RemoteServer._borrow`); from then on threads open channels together.
    """
    answered = threading.Thread(target=cache.info, daemon=True)
    answered.start()
    assert remote.wait_for(1)
    remote.processes[0].resume()
    answered.join(PROMPT)
    assert not answered.is_alive()
    remote.processes[0].stall()


def test_a_fresh_cache_starts_one_server_until_it_has_answered(memory):
    """Servers starting together race to create an sql storage's tables: one goes first.

    Once it has answered, the others start together (:func:`answered_once`'s callers).
    """
    cache, remote = memory(channels=4, script=Script(stalled=True))
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(cache.contains(ABSENT)),
                                daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert remote.wait_for(1)
    time.sleep(0.3)
    assert len(remote.processes) == 1 and conn(cache).open_channels == 1
    deadline = time.monotonic() + PROMPT
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        for process in remote.processes:  # those started since the first answer too
            process.resume()
        time.sleep(0.05)
    assert results == [False] * 4


def test_a_channel_is_given_back_and_borrowed_again(memory):
    cache, remote = memory()
    for _ in range(5):
        assert cache.contains(ABSENT) is False
    assert len(remote.processes) == 1
    assert conn(cache).open_channels == 1 and conn(cache).idle_channels == 1


def test_threads_beyond_channels_wait_for_one(memory):
    cache, remote = memory(channels=2, script=Script(stalled=True))
    server = cache._conn
    answered_once(cache, remote)
    results: list[object] = []

    def call() -> None:
        results.append(server.call("contains", ABSENT))

    threads = [threading.Thread(target=call, daemon=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    assert remote.wait_for(2)
    time.sleep(0.3)
    assert len(remote.processes) == 2 and conn(cache).open_channels == 2  # no third server
    assert all(thread.is_alive() for thread in threads)
    for process in remote.processes:
        process.resume()
    for thread in threads:
        thread.join(PROMPT)
    assert results == [False] * 5
    assert len(remote.processes) == 2 and conn(cache).idle_channels == 2


def test_a_failed_open_frees_its_slot(memory):
    cache, remote = memory(channels=1)
    remote.refuse = 1
    message = str(failure(RemoteConnectionError, lambda: cache.contains(ABSENT)))
    assert "MaxSessions" in message
    assert conn(cache).open_channels == 0
    assert cache.contains(ABSENT) is False  # the one slot is free again: no wait
    assert len(remote.processes) == 1


def test_a_channel_borrowed_before_close_is_not_given_back(memory):
    cache, remote = memory(channels=1)
    cache.info()
    old = remote.processes[0]
    old.stall()
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(cache.contains(ABSENT)), daemon=True)
    worker.start()
    time.sleep(0.2)
    cache.close()  # a new generation: the borrowed channel no longer counts
    assert cache.contains(ABSENT) is False  # served by a new server, without waiting
    assert len(remote.processes) == 2
    old.resume()
    worker.join(PROMPT)
    assert outcome == [False]  # the call in flight still got its answer
    assert old.exit_status(PROMPT) == 0 and old.join()  # and then its server was closed
    assert conn(cache).open_channels == 1 and conn(cache).idle_channels == 1


def test_close_ends_every_idle_server(memory):
    cache, remote = memory(channels=3, script=Script(stalled=True))
    server = cache._conn
    answered_once(cache, remote)
    threads = [threading.Thread(target=server.call, args=("contains", ABSENT), daemon=True)
               for _ in range(3)]
    for thread in threads:
        thread.start()
    assert remote.wait_for(3)
    for process in remote.processes:
        process.resume()
    for thread in threads:
        thread.join(PROMPT)
    assert conn(cache).idle_channels == 3
    cache.close()
    assert [p.exit_status(0) for p in remote.processes] == [0, 0, 0]  # EOF, then exit 0
    assert conn(cache).open_channels == 0 and conn(cache).idle_channels == 0


def test_a_value_that_cannot_be_pickled_sends_nothing(memory):
    cache, remote = memory()
    cache.info()
    process = remote.processes[0]
    read_before = process.stdin.moved
    with pytest.raises(TypeError, match="pickle"):
        cache.save(Call(name="wire.lock", arguments={}, result=threading.Lock()))
    assert process.stdin.moved == read_before
    assert conn(cache).open_channels == 1 and conn(cache).idle_channels == 1  # nothing was borrowed
    assert cache.contains(ABSENT) is False and len(remote.processes) == 1


# -- the byte counter ---------------------------------------------------------------------


def test_the_counter_sees_every_byte_of_every_frame():
    local = local_cache()
    value = os.urandom(LARGE)
    key = local.values.save(value)
    events: list[tuple[str, int]] = []
    remote = MemoryRemote(local, counter=lambda way, n: events.append((way, n)))
    process = remote("python3 -m fleche remote --serve")
    channel = ExecChannel(process, host="memory")
    try:
        for request, answer in [(("contains", (ABSENT,), {}), False),
                                (("load_value", (key,), {}), value),
                                (("save_value", (value,), {}), key)]:
            first, written = len(events), process.stdout.moved
            header, body = frame = frames.encode_frame(request)
            channel.send_frame(frame)
            assert channel.recv_frame() == ("ok", answer)
            moved = events[first:]
            assert all(n > 0 for _, n in moved)
            ways = [way for way, _ in moved]
            assert ways == sorted(ways, reverse=True)  # all of the request, then the answer
            assert sum(n for way, n in moved if way == "sent") == len(header) + len(body)
            # ... and all of the answer: the frame the server wrote, to the byte.
            assert sum(n for way, n in moved if way == "received") == (
                process.stdout.moved - written)
        assert sum(n for way, n in events if way == "sent") == process.stdin.moved
    finally:
        channel.close()
    assert process.exit_status(0) == 0 and process.join()
