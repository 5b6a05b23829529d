"""What a process using a shared login and the process holding it say to each other.

The holder of a login (:mod:`.holder`) and a client (:mod:`.client`) talk
over local connections that :mod:`.local` has already proven to be this
user's.  Every message is a 4-byte big-endian length and a JSON object
whose ``"t"`` names its kind.  JSON, never pickle: unpickling runs code,
and a local peer is trusted to be this user, not to be this program at
this version.  Control messages are small, so a length over
:data:`MAX_MESSAGE` means the other end is not speaking this protocol.

One channel is two local connections, both opened by the client:

* the *control* connection carries the request, the questions of a login
  and their answers, the host keys to check, then the remote command's
  stderr and how it ended, all framed;
* the *data* connection carries the remote command's stdin and stdout as
  raw bytes: after its one greeting, the cache's own frames travel
  through it untouched, so a large value costs the holder one copy and no
  parsing.

Two connections rather than one muxed stream, because stdout and stderr
then never wait for each other (an unread stderr line must not stall a
256 MiB answer, nor the reverse), and one connection per channel, so a
busy channel never stalls another.

A connection starts with the holder's :func:`hello`: the protocol
version and a fresh nonce.  The client proves it was handed the cache by
answering with ``HMAC-SHA256(secret, nonce)``: the secret itself never
crosses, so even a peer that is somehow not the holder learns nothing it
could replay.  A version other than :data:`VERSION` raises
:class:`VersionMismatch`, on which the client logs in itself.

Errors cross as ``{"t": "error", "type": name, "message": text}`` and are
raised again on the client as the same :class:`RemoteConnectionError`
subclass (:func:`error_from`), with the holder's message.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import struct
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .. import errors
from ..config.target import Target
from ..errors import RemoteConnectionError
from ..wire.unix import UntrustedSocket

#: Bumped whenever a message changes meaning; both ends must agree.
VERSION = 1
#: Largest control message; real ones are a few hundred bytes.
MAX_MESSAGE = 1 << 20
#: Bound on each exchange that involves no human (hello, greeting, channel open).
EXCHANGE_TIMEOUT = 30.0

#: Socket buffer asked for a data connection: a large value then crosses in few
#: wake-ups of the relaying thread, as for the stdio of an OpenSSH master.
DATA_BUFFER = 4 << 20

_LENGTH = struct.Struct(">I")

Message = dict[str, Any]


class ShareError(RemoteConnectionError):
    """The process sharing a login broke the protocol, or went away mid-request."""


class Closed(ShareError):
    """The other end closed or reset the connection: its process ended, or was ending.

    Told apart from other failures because a listener's socket outlives its
    killed or exiting process by a moment: a connection it accepted then
    is closed unanswered, which means that nothing listens there any more.
    """


class VersionMismatch(ShareError):
    """The holder speaks another version of this protocol (another fleche-ssh, another venv)."""


class OwnerGone(RemoteConnectionError):
    """The process that handed this one its cache, and shared its login, has exited."""


#: Errors that keep their type across the local connection; anything else arrives as
#: a plain RemoteConnectionError with the holder's message.
_TYPES: dict[str, type[RemoteConnectionError]] = {
    cls.__name__: cls for cls in (
        RemoteConnectionError, errors.HostNotFound, errors.ConnectionRefused,
        errors.ConnectTimeout, errors.HostKeyError, errors.UnknownHostKey,
        errors.ChangedHostKey, errors.AuthenticationError, errors.PromptUnavailable,
        errors.UnsupportedByParamiko, errors.RemoteCommandError, errors.ProtocolError,
        UntrustedSocket, ShareError, VersionMismatch, OwnerGone,
    )
}


def send(sock: socket.socket, message: Mapping[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(_LENGTH.pack(len(body)) + body)


def receive(sock: socket.socket, timeout: float | None, peer: str) -> Message:
    """The next message, waiting up to *timeout* s (None: as long as the socket allows).

    Raises:
        ShareError: EOF, a timeout, or bytes that are not a message of this protocol.
    """
    sock.settimeout(timeout)
    try:
        (size,) = _LENGTH.unpack(_exactly(sock, 4, peer))
        if size > MAX_MESSAGE:
            raise ShareError(f"{peer} sent a {size}-byte message: it does not speak the "
                             f"fleche-ssh sharing protocol")
        message = json.loads(_exactly(sock, size, peer))
    except TimeoutError:
        raise ShareError(f"{peer} did not answer within {timeout:g} s") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ShareError(f"{peer} sent a message that is not JSON ({e})") from None
    except OSError as e:
        kind = Closed if isinstance(e, ConnectionError) else ShareError
        raise kind(f"the connection to {peer} failed: {e}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ShareError(f"{peer} sent a message without a kind")
    return message


def _exactly(sock: socket.socket, size: int, peer: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise Closed(f"{peer} closed the connection")
        data += chunk
    return bytes(data)


def tune_data(sock: socket.socket) -> None:
    """Large buffers on a data connection (where the system allows them)."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, DATA_BUFFER)


def expect(message: Message, kind: str, peer: str) -> Message:
    """*message* if it is of *kind*; an error message is raised as its own type."""
    if message["t"] == "error":
        raise error_from(message)
    if message["t"] != kind:
        raise ShareError(f"{peer} sent {message['t']!r} where {kind!r} was due")
    return message


# -- the greeting and its proof ------------------------------------------------------


def _target_fields() -> str:
    """A digest of the names of Target's fields: a Target sent must mean the same at both ends."""
    names = ",".join(sorted(f.name for f in fields(Target)))
    return hashlib.sha256(names.encode()).hexdigest()[:16]


def hello() -> tuple[Message, bytes]:
    """The holder's first message, and the nonce the client's proof must cover."""
    nonce = secrets.token_bytes(32)
    return {"t": "hello", "version": VERSION, "fields": _target_fields(),
            "nonce": nonce.hex()}, nonce


def check_hello(message: Message, peer: str) -> bytes:
    """The nonce of a holder's hello, or :class:`VersionMismatch`.

    Two fleche-ssh versions may speak one protocol version yet know other
    options (a new row is a new Target field), so the fields are compared too.
    """
    message = expect(message, "hello", peer)
    if message.get("version") != VERSION or message.get("fields") != _target_fields():
        raise VersionMismatch(
            f"{peer} speaks sharing protocol {message.get('version')!r} with other options, "
            f"this process protocol {VERSION} (another fleche-ssh version, or another "
            f"environment)"
        )
    try:
        return bytes.fromhex(message["nonce"])
    except (KeyError, TypeError, ValueError):
        raise ShareError(f"{peer} sent a hello without a nonce") from None


def proof(secret: bytes, nonce: bytes) -> str:
    """What shows the holder that a client holds *secret*, without sending it."""
    return hmac.new(secret, b"fleche-ssh share " + nonce, hashlib.sha256).hexdigest()


def proves(secret: bytes, nonce: bytes, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(proof(secret, nonce), given)


# -- errors ---------------------------------------------------------------------------


def error(e: BaseException) -> Message:
    """*e* as a message; its type's name is kept when the client knows it."""
    name = next((cls.__name__ for cls in type(e).__mro__ if cls.__name__ in _TYPES),
                "RemoteConnectionError")
    return {"t": "error", "type": name, "message": str(e)}


def error_from(message: Message) -> RemoteConnectionError:
    cls = _TYPES.get(str(message.get("type")), RemoteConnectionError)
    return cls(str(message.get("message", "the process sharing the login gave no reason")))


# -- the Target, as data --------------------------------------------------------------


def target_to_data(target: Target) -> dict[str, Any]:
    """*target*'s fields as JSON data; the jump host nested as a target of its own."""
    out: dict[str, Any] = {}
    for f in fields(target):
        value = getattr(target, f.name)
        if isinstance(value, Target):
            value = target_to_data(value)
        elif f.name == "origins":
            value = [list(pair) for pair in value]
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def target_from_data(data: object, peer: str) -> Target:
    """The Target *data* describes, field for field; anything else is a :class:`ShareError`.

    Only fields of Target are taken, and each with the type its default or
    the sender's value had: a tuple comes back as a tuple, a jump host as a
    Target, so the holder's pool keys it exactly as the client's would.
    """
    if not isinstance(data, dict):
        raise ShareError(f"{peer} sent a target that is not an object")
    known = {f.name for f in fields(Target)}
    unknown = set(data) - known
    if unknown:
        raise ShareError(f"{peer} sent target fields this process does not know: "
                         f"{', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name == "jump":
            value = None if value is None else target_from_data(value, peer)
        elif name == "origins":
            value = tuple(tuple(pair) for pair in value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    try:
        return Target(**values)
    except TypeError as e:
        raise ShareError(f"{peer} sent a target this process cannot rebuild: {e}") from None
