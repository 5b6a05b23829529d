"""The frame codec's boundaries: the largest request a header can describe, the shortest
answer that can be a pickle, and what a refused answer quotes.

Pure logic on bytes, as :mod:`fleche_ssh.wire.frames` does no I/O.  The only double is
``cloudpickle.dumps`` returning a body that only claims its length, as a real 4 GiB pickle
would not fit in a test's memory.
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
