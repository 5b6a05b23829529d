"""fleche's frames, as bytes: encode a request, recognise an answer, decode it.

The wire format is fleche's own: a 4-byte big-endian length, then a
cloudpickle body.  Nothing here does I/O, so the same codec serves every
way of reaching the remote server, and it can be tested on bytes alone.

A request is pickled before any channel is touched, so a value that cannot
be sent (unpicklable, or over the 4 GiB a frame can describe) fails with
nothing sent.  An answer is checked before it is trusted: a pickle starts
with ``PROTO <n>`` and ends with ``STOP``, and bytes that do not (text a
start-up file printed, a frame shifted by stray bytes) are reported as
:class:`NotAFrame`, to become a :class:`~fleche_ssh.errors.ProtocolError`
quoting them, instead of hanging on a bogus length or failing deep inside
``pickle``.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import cloudpickle

from ..errors import ProtocolError, ValueTooLarge

HEADER = struct.Struct(">I")
#: Largest body the 4-byte length header can describe.
MAX_FRAME = (1 << 32) - 1
#: Bytes of an answer needed to tell whether it is a frame: the header and the pickle's
#: first two bytes.
SNIFF = HEADER.size + 2
#: Bytes of a damaged answer quoted in the error.
QUOTED = 64
#: A body is a pickle of protocol 2 or later: PROTO <protocol> ... STOP.
_PROTO, _STOP = pickle.PROTO[0], pickle.STOP[0]
_PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)
#: No pickle is shorter: PROTO, its protocol, STOP.
_SHORTEST = 3

#: One request, pickled: the 4-byte header and the body.
Frame = tuple[bytes, bytes]


#: Types the C pickler writes without asking cloudpickle's ``reducer_override`` (it
#: asks only for other types), so that a request of these alone pickles to the same
#: bytes from :func:`pickle.dumps` as from ``cloudpickle.dumps``, at a seventh of the
#: cost: cloudpickle builds a Python ``Pickler`` and a ``BytesIO`` for every call.
_PLAIN = frozenset({str, bytes, int, float, bool, type(None)})
_PROTOCOL = cloudpickle.DEFAULT_PROTOCOL


def encode_frame(request: tuple[str, tuple[Any, ...], dict[str, Any]]) -> Frame:
    """Pickle a ``(method, args, kwargs)`` request, refusing one no header can describe.

    A request of plain values (a key, most calls) takes the C pickler at
    cloudpickle's protocol; anything else, cloudpickle, which can pickle
    functions and classes by value.
    """
    _, args, kwargs = request
    plain = not kwargs
    for arg in args:  # a loop, not all() over a generator: two Python frames fewer
        if type(arg) not in _PLAIN:
            plain = False
            break
    body = pickle.dumps(request, protocol=_PROTOCOL) if plain else cloudpickle.dumps(request)
    if len(body) > MAX_FRAME:
        raise ValueTooLarge(
            f"{request[0]}: the value pickles to {len(body):,} bytes, and fleche's wire format "
            f"carries at most {MAX_FRAME:,} bytes (4 GiB) per request, so nothing was sent. "
            f"Save it in parts smaller than 4 GiB."
        )
    return HEADER.pack(len(body)), body


class NotAFrame(Exception):
    """The bytes on stdout are not a fleche frame; :attr:`seen` holds the first of them.

    The reader adds whatever else has already arrived before quoting them in
    a :func:`protocol_error`: the more of a stray line the user sees, the
    easier it is to find what printed it.
    """

    def __init__(self, seen: bytes) -> None:
        super().__init__(seen)
        self.seen = seen


class Undecodable(Exception):
    """A whole answer arrived, but this interpreter cannot rebuild what it holds.

    Typically a class or module the remote has and this side lacks.  The
    channel is still in step (the frame was read to its end), unlike after
    a :class:`~fleche_ssh.errors.ProtocolError`.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error

    def explained(self, during: str, host: str) -> Exception:
        """The original error, with a note saying where the object came from.

        Its type stays what unpickling raised (``ModuleNotFoundError`` ...),
        as loading the same value from a local cache would raise.
        """
        self.error.add_note(
            f"fleche-ssh: the remote cache on {host} answered {during!r} with an object this "
            f"Python cannot unpickle: it needs a module or class the remote side has and this "
            f"side lacks (or has in another version). Install the same packages here."
        )
        return self.error


def body_size(head: bytes) -> int:
    """The body length an answer announces, checked against as much of it as has arrived.

    Its first ``HEADER.size`` bytes give the length; once :data:`SNIFF` bytes
    are in (as they are after one read, but for a tiny first packet), the
    pickle's first two bytes are checked too, before the length is trusted:
    text on stdout reads as a length of a gigabyte or more, and waiting for
    that many bytes would hang (and allocating them could exhaust memory).

    Raises:
        NotAFrame: no pickle is that short, or the body does not start as one.
    """
    (size,) = HEADER.unpack_from(head)
    if size < _SHORTEST or (len(head) >= SNIFF
                            and (head[4] != _PROTO or head[5] not in _PROTOCOLS)):
        raise NotAFrame(head[:QUOTED])
    return size


def decode(body: bytes | bytearray | memoryview) -> Any:
    """Unpickle a whole body, in place.

    Raises:
        NotAFrame: the body does not end as a pickle does (a few stray bytes
            before a frame shift it: the "body" then ends inside the real
            frame), or is not a pickle at all.
        Undecodable: it is a pickle, but of something this side cannot rebuild.
    """
    if not body or body[-1] != _STOP:
        raise NotAFrame(_quoted(body))
    try:
        return cloudpickle.loads(body)
    except pickle.UnpicklingError as e:
        raise NotAFrame(_quoted(body)) from e
    except Exception as e:
        raise Undecodable(e) from e


def _quoted(body: bytes | bytearray | memoryview) -> bytes:
    """The header and first bytes of a body, as they arrived."""
    return HEADER.pack(len(body)) + bytes(body[:QUOTED])


def protocol_error(seen: bytes) -> ProtocolError:
    """The error for *seen* on stdout in place of a frame: what it is and how to stop it."""
    return ProtocolError(
        f"The remote side wrote something that is not a fleche frame to stdout: "
        f"{seen!r}. Usually a shell start-up file (.bashrc) or a setup command "
        f"prints text; send that output to stderr or remove it."
    )
