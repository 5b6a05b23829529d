"""Using a login another process of this user holds: the client of :mod:`.holder`.

:func:`open_shared` asks a holder for one exec channel, and returns it as
a :class:`SharedProcess`: a :class:`~fleche_ssh.wire.sockets.SocketProcess`
whose stdin and stdout are the raw data connection, so the exec channel
above it reads and writes exactly as over a live OpenSSH master.  Its
stderr and how it ended come framed on the control connection, read by the
channel's own stderr thread; nothing else reads that connection once the
channel is open, so no thread of ours is added.

While the holder logs in, the control connection carries its questions to
this process's own handler, answered on the calling thread as for a login
of our own.  Before the channel opens, every host key of the login (each
jump host's, then the destination's) is checked against *this* process's
known_hosts and StrictHostKeyChecking: a stricter process never rides a
login a laxer one accepted.

:func:`shared_process` is step 2 of the lookup order of
:mod:`fleche_ssh.wire.sources`: a cache handed over by a process that
offered its login (an :class:`Offer`, carried in the pickled cache) goes
through that process.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paramiko

from ..config.target import Target
from ..errors import HostKeyError, PromptUnavailable
from ..prompts import none
from ..ssh import hostkeys
from ..ssh.session import Login
from ..wire.sockets import SocketProcess
from . import protocol
from .protocol import EXCHANGE_TIMEOUT, Closed, OwnerGone, ShareError, VersionMismatch

if TYPE_CHECKING:
    from ..cache import ParamikoCache

logger = logging.getLogger("fleche_ssh.share")

#: Connects to a holder's listener name within a timeout; None if nothing listens there.
Connect = Callable[[str, float], "socket.socket | None"]


@dataclass(frozen=True)
class Offer:
    """What a pickled cache carries so that its new process can use its owner's login.

    The secret is a capability: whoever holds it may open channels on the
    owner's login, so it shows in no repr and no log.  It is only good
    while the owner runs, since only the owner's memory holds it.
    """

    #: The listener's name for :func:`fleche_ssh.share.local.connect`.
    name: str
    owner_pid: int
    secret: bytes = field(repr=False)


class SharedProcess(SocketProcess):
    """A remote command run on another process's login: raw stdio, framed stderr and exit."""

    def __init__(self, control: socket.socket, data: socket.socket, *, command: str,
                 peer: str) -> None:
        super().__init__(data, data, control, command=command)
        self._peer = peer
        #: Where the holder listens: its socket's path, or ``127.0.0.1:PORT``.
        self.address = _address(control)
        self._ended = threading.Event()
        #: The holder's ``exit`` message, or what stands for it when the holder went away.
        self._exit: dict[str, Any] = {}

    def recv_stderr(self, size: int) -> bytes:
        """The next stderr chunk off the control connection; b"" once the command ended."""
        while not self._ended.is_set():
            try:
                message = protocol.receive(self._stderr, None, self._peer)
            except ShareError:
                self._exit = {"lost": f"{self._peer} went away"}
                self._ended.set()
                break
            if message["t"] == "stderr":
                return base64.b64decode(message.get("data", ""))
            if message["t"] == "exit":
                self._exit = message
                self._ended.set()
        return b""

    def _told(self, key: str, kind: type) -> Any:
        value = self._exit.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    def exit_status(self, wait: float) -> int | None:
        """The status the holder relayed, waiting up to *wait* s for it."""
        self._ended.wait(wait)
        return self._told("status", int)

    def exit_signal(self) -> str | None:
        return self._told("signal", str)

    def connection_alive(self) -> bool:
        """Whether the login under the channel still works, as far as the holder said.

        The holder sends how the command ended as soon as its channel
        closes, saying whether its own connection still works; a holder that
        went away (killed, or exited because its login died) counts as a
        lost connection too.  So a loss on the holder's side is a
        :class:`~fleche_ssh.errors.ConnectionLost` here, as a loss of our
        own login would be, and a read lost with it is sent again.
        """
        return not self._ended.is_set() or self._exit.get("alive") is True

    def known_lost(self) -> bool:
        """Whether the holder already said this channel's login is gone: a flag, no I/O.

        The channel's stderr thread reads the holder's word as it comes, so
        an idle channel whose login died is dropped before the next call,
        which then goes to a live login instead of failing on a dead one.
        """
        return self._ended.is_set() and not self.connection_alive()

    def lost_reason(self) -> str | None:
        return self._told("lost", str) or None


def _address(sock: socket.socket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        return "an unnamed socket"
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "an unnamed socket"


def open_shared(address: str, secret: bytes, target: Target, command: str, login: Login,
                connect: Connect) -> SharedProcess | None:
    """An exec channel running *command* on the login held at *address*; None if none listens.

    Raises:
        VersionMismatch: the holder speaks another version of the protocol.
        HostKeyError: this process's known_hosts does not accept the login's host key.
        RemoteConnectionError: the holder could not log in or open the channel (its own
            error type and message), or went away.
    """
    peer = f"the fleche-ssh process sharing its login at {address}"
    control = _greet(connect, address, secret, peer, _request("open", target, command, login))
    if control is None:
        return None
    try:
        token = _converse(control, target, login, peer)
        data = _greet(connect, address, secret, peer, {"t": "data", "channel": token})
        if data is None:
            raise ShareError(f"{peer} stopped listening while a channel was opened")
    except BaseException:
        control.close()
        raise
    control.settimeout(None)
    data.settimeout(None)
    protocol.tune_data(data)
    return SharedProcess(control, data, command=command, peer=peer)


def hold_login(address: str, secret: bytes, target: Target, login: Login,
               connect: Connect) -> bool:
    """Have the holder at *address* log in to *target* now; False if nothing listens there.

    ``fleche-ssh login HOST`` in the morning: the questions are asked here,
    and the login stays with the holder.
    """
    peer = f"the fleche-ssh process at {address}"
    control = _greet(connect, address, secret, peer, _request("login", target, "", login))
    if control is None:
        return False
    with control:
        _converse(control, target, login, peer)
    return True


def _request(kind: str, target: Target, command: str, login: Login) -> dict[str, Any]:
    return {"t": kind, "target": protocol.target_to_data(target), "command": command,
            "auth_timeout": login.auth_timeout, "can_ask": login.can_ask}


def _greet(connect: Connect, address: str, secret: bytes, peer: str,
           request: dict[str, Any]) -> socket.socket | None:
    """A connection to the holder, past its hello, with *request* sent and proven.

    None when nothing listens at *address*, and also when the connection
    is closed before the hello: a killed or exiting holder's socket accepts
    for a moment after its process stopped serving it.
    """
    sock = connect(address, EXCHANGE_TIMEOUT)
    if sock is None:
        return None
    try:
        hello = protocol.receive(sock, EXCHANGE_TIMEOUT, peer)
    except Closed:
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    try:
        nonce = protocol.check_hello(hello, peer)
        protocol.send(sock, {**request, "version": protocol.VERSION,
                             "proof": protocol.proof(secret, nonce)})
    except OSError as e:
        sock.close()
        raise ShareError(f"the connection to {peer} failed: {e}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def _converse(sock: socket.socket, target: Target, login: Login, peer: str) -> str:
    """Answer the holder's questions until it opens the channel; the channel's token.

    Bounded by the login's own time (a person typing a code) plus one
    exchange for connecting.
    """
    deadline = time.monotonic() + login.auth_timeout + EXCHANGE_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ShareError(f"{peer} did not open a channel to {target.label} within "
                             f"{login.auth_timeout + EXCHANGE_TIMEOUT:g} s")
        message = protocol.receive(sock, left, peer)
        kind = message["t"]
        if kind == "ask":
            _answer(sock, login, message)
        elif kind == "hostkeys":
            _check_keys(sock, target, login, message.get("keys"), peer)
        elif kind == "opened":
            return str(message.get("channel"))
        else:
            protocol.expect(message, "opened", peer)


def _answer(sock: socket.socket, login: Login, message: dict[str, Any]) -> None:
    """Ask this process's handler the holder's question; a refusal goes back, then raises."""
    prompts = [(str(text), bool(echo)) for text, echo in message.get("prompts", [])]
    title, instructions = str(message.get("title", "")), str(message.get("instructions", ""))
    try:
        if not login.can_ask:
            none(title, instructions, prompts)
        answers = login.prompter.ask(title, instructions, prompts)
    except BaseException as e:
        reason = str(e) if isinstance(e, PromptUnavailable) else "the client could not answer"
        protocol.send(sock, {"t": "cannot", "message": reason})
        raise
    protocol.send(sock, {"t": "answers", "answers": answers})


def _check_keys(sock: socket.socket, target: Target, login: Login, keys: object,
                peer: str) -> None:
    """Accept the login only if this process's known_hosts accepts every hop's host key."""
    hops = [*target.chain(), target]
    if not isinstance(keys, list) or len(keys) != len(hops):
        raise ShareError(f"{peer} sent host keys that do not match the route to {target.label}")
    ask = login.prompter.confirm if login.can_ask else None
    try:
        for hop, (keytype, blob) in zip(hops, keys, strict=True):
            key = paramiko.PKey.from_type_string(str(keytype), base64.b64decode(str(blob)))
            hostkeys.verify(hop, key, ask)
    except (HostKeyError, ValueError, paramiko.SSHException) as e:
        protocol.send(sock, {"t": "refuse"})
        if isinstance(e, HostKeyError):
            e.add_note(f"(checked by this process before using the login that {peer} holds; "
                       f"that process accepted the key under its own settings)")
            raise
        raise ShareError(f"{peer} sent a host key this process cannot read: {e}") from e
    protocol.send(sock, {"t": "trust"})


# -- step 2 of the lookup order ------------------------------------------------------------


def shared_process(cache: ParamikoCache, target: Target, command: str,
                   connect: Connect) -> SharedProcess | None:
    """A channel on the login the cache's owner offered it, if it was handed one.

    None when there is no offer, this process is the owner, sharing is off
    (``control_master = "no"``), or the owner speaks another protocol
    version (logged: this process then logs in itself).

    Raises:
        OwnerGone: the owner has exited, taking its login along.
    """
    offer: Offer | None = getattr(cache, "_share", None)
    if offer is None or offer.owner_pid == os.getpid() or target.control_master == "no":
        return None
    try:
        process = open_shared(offer.name, offer.secret, target, command,
                              cache.login(target), connect)
    except VersionMismatch as e:
        logger.info("%s; logging in to %s itself", e, target.label)
        return None
    if process is None:
        raise OwnerGone(
            f"The process that handed this one its cache (pid {offer.owner_pid}) has exited, "
            f"and the login to {target.label} it shared went with it. Keep that process "
            f'running until its workers are done, or set control_persist = "10m" (or longer) '
            f"to keep the login in a background process that outlives it."
        )
    return process


__all__ = ["Offer", "SharedProcess", "hold_login", "open_shared", "shared_process"]
