"""The frame codec's boundaries: the largest request a header can describe, the shortest
answer that can be a pickle, and what a refused answer quotes.

Pure logic on bytes, as :mod:`fleche_ssh.wire.frames` does no I/O.  The only double is
the pickler (``cloudpickle.dumps``, and ``pickle.dumps`` for plain requests) returning a body
that only claims its length, as a real 4 GiB pickle would not fit in a test's memory.
"""

from __future__ import annotations

import types

import cloudpickle
import pytest

from fleche_ssh.errors import ValueTooLarge
from fleche_ssh.wire import frames


class _Sized:
    """A pickled body of *size* bytes, as far as the codec can tell (it only takes its length)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def _pickling_to(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    monkeypatch.setattr(frames, "cloudpickle", types.SimpleNamespace(
        dumps=lambda obj: _Sized(size), loads=cloudpickle.loads))
    monkeypatch.setattr(frames, "pickle", types.SimpleNamespace(
        dumps=lambda obj, protocol: _Sized(size)))


def test_a_request_of_exactly_4_gib_minus_one_is_sent_with_the_largest_header(monkeypatch):
    _pickling_to(monkeypatch, frames.MAX_FRAME)
    header, body = frames.encode_frame(("save", ("key", "value"), {}))
    assert header == b"\xff\xff\xff\xff" and len(body) == 2**32 - 1


def test_one_byte_more_is_refused_naming_the_method_not_its_arguments(monkeypatch):
    _pickling_to(monkeypatch, frames.MAX_FRAME + 1)
    with pytest.raises(ValueTooLarge) as refused:
        frames.encode_frame(("save", ("a-key-that-must-not-be-quoted",), {}))
    message = str(refused.value)
    assert message.startswith("save: the value pickles to 4,294,967,296 bytes")
    assert "at most 4,294,967,295 bytes (4 GiB)" in message and "nothing was sent" in message
    assert "a-key-that-must-not-be-quoted" not in message


def test_a_header_announcing_three_bytes_is_the_shortest_that_may_be_a_pickle():
    # PROTO <n> STOP is three bytes: a header alone announcing three is waited for,
    # two is refused at once.
    assert frames.body_size(frames.HEADER.pack(3)) == 3
    with pytest.raises(frames.NotAFrame) as refused:
        frames.body_size(frames.HEADER.pack(2))
    assert refused.value.seen == b"\x00\x00\x00\x02"


def test_an_empty_body_is_not_a_frame_and_quotes_its_zero_header():
    with pytest.raises(frames.NotAFrame) as refused:
        frames.decode(b"")
    assert refused.value.seen == b"\x00\x00\x00\x00"


def test_a_body_ending_as_a_pickle_but_not_one_quotes_what_arrived():
    # Ends with STOP, so only pickle itself can tell: its complaint becomes NotAFrame,
    # quoting the header and the bytes as they came.
    body = b"Last login: Mon from 10.0.0.1."
    with pytest.raises(frames.NotAFrame) as refused:
        frames.decode(body)
    assert refused.value.seen == frames.HEADER.pack(len(body)) + body
    assert "Last login" in str(frames.protocol_error(refused.value.seen))


PLAIN_REQUESTS = [
    ("contains", ("f" * 64,), {}),
    ("info", (), {}),
    ("shrink", ("a" * 64, "b" * 64, "a" * 64), {}),  # memoised repeats
    ("save_value", (1, -(2**70), 2.5, None, True, b"\0" * 10, "\u00e9"), {}),
    ("load", ("s" * 70_000,), {}),  # past a pickle frame's 64 KiB
    ("load", (b"b" * 200_000,), {}),
]


@pytest.mark.parametrize("request_", PLAIN_REQUESTS, ids=lambda r: r[0])
def test_a_plain_request_pickles_to_the_bytes_cloudpickle_writes(request_):
    """The stock server reads the same bytes whichever pickler wrote them."""
    header, body = frames.encode_frame(request_)
    assert body == cloudpickle.dumps(request_)
    assert header == frames.HEADER.pack(len(body))


def test_a_request_holding_anything_else_pickles_as_cloudpickle_does():
    def local(n: int) -> int:  # pickled by value: only cloudpickle can
        return n + 1

    for request_ in [("query", (local,), {}), ("load", (("nested", "tuple"),), {}),
                     ("expand", ("k",), {"flag": True}), ("load", (_Key("k"),), {})]:
        assert frames.encode_frame(request_)[1] == cloudpickle.dumps(request_)
    assert cloudpickle.loads(frames.encode_frame(("query", (local,), {}))[1])[1][0](1) == 2


def test_a_function_in_the_keyword_arguments_is_pickled_by_value():
    """``RemoteServer.call`` takes keyword arguments as the stock connection's ``call`` does,
    and writes them as its ``_write_frame`` would: with plain positional arguments beside
    them, a locally defined function still travels by value and works on the other side."""
    def local(n: int) -> int:  # no importable name: the C pickler refuses it
        return n * 3

    request_ = ("query", ("k",), {"transform": local})
    header, body = frames.encode_frame(request_)
    assert body == cloudpickle.dumps(request_)
    assert header == frames.HEADER.pack(len(body))
    method, args, kwargs = frames.decode(body)
    assert (method, args) == ("query", ("k",))
    assert kwargs["transform"](2) == 6


class _Key(str):
    """A ``str`` subclass (as fleche's digests may be): pickled by cloudpickle, as any class."""
