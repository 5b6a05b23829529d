"""Logins kept by a background process (``control_persist``), for any of this user's processes.

With ``control_persist`` set, a channel that found no OpenSSH master and no
login offered by its owner goes to a background holder
(``python -m fleche_ssh.share.holder``) listening at a name derived from
the destination: the resolved Target and its jump chain, hashed with the
protocol version, so another fleche-ssh version never meets this one's
holder and starts its own.  If none listens, one is started with
``subprocess`` in a session of its own (never ``fork()``: the caller may
be a threaded notebook) and waited for, within a bound.  Eight processes
starting at once start eight holders, of which one listens and seven exit
at once; all eight then use that one, and the login it makes asks its
questions of the client whose call caused it.

Any process of this user can use such a login, as with ssh-agent and
ControlMaster: the local endpoint's uid checks are the gate, and no
capability secret is asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._version import __version__
from ..config.target import Target
from . import place, protocol
from .client import Connect, SharedProcess, open_shared
from .protocol import EXCHANGE_TIMEOUT, ShareError, VersionMismatch

if TYPE_CHECKING:
    from ..cache import ParamikoCache

#: Bound on a background holder starting to listen.
START_TIMEOUT = 20.0
_POLL = 0.05
#: No capability secret: any process of this user may use a persisted login.
_NO_SECRET = b""
T = TypeVar("T")


def canonical(target: Target) -> Target:
    """*target* as the holder keys it: how long to persist is not part of the destination."""
    jump = canonical(target.jump) if target.jump is not None else None
    return dataclasses.replace(target, control_persist=None, control_master="auto",
                               origins=(), jump=jump)


def name_for(target: Target) -> str:
    """The listener name of *target*'s background holder."""
    data = protocol.target_to_data(canonical(target))
    text = json.dumps([protocol.VERSION, __version__, data], sort_keys=True)
    return f"login-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def persistent_process(cache: ParamikoCache, target: Target, command: str,
                       connect: Connect) -> SharedProcess | None:
    """A channel on the background holder of *target*, started if need be; None if not asked for."""
    if target.control_persist is None or target.control_master == "no":
        return None
    login = cache.login(target)
    return through_holder(target, target.control_persist, lambda name: open_shared(
        name, _NO_SECRET, canonical(target), command, login, connect))


def through_holder(target: Target, idle: float, attempt: Callable[[str], T | None]) -> T:
    """``attempt(name)`` on *target*'s background holder, starting the holder if none listens.

    *attempt* gives None when nothing listens at the name; after starting a
    holder it is tried again until it gets one, within :data:`START_TIMEOUT`.
    """
    name = name_for(target)
    got = attempt(name)
    if got is not None:
        return got
    start(name, idle)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(_POLL)
        got = attempt(name)
        if got is not None:
            return got
    raise ShareError(
        f"the background fleche-ssh process for {target.label} did not start within "
        f"{START_TIMEOUT:g} s; its log is {place.file_in(place.directory(), name, '.log')}. "
        f"Set control_persist = \"no\" to log in in this process instead."
    )


def start(name: str, idle: float) -> None:
    """Start a background holder for *name*; it exits at once if another holds the name."""
    argv = [sys.executable, "-m", "fleche_ssh.share.holder", name,
            "inf" if math.isinf(idle) else f"{idle:g}"]
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, close_fds=True, **place.detached())


def request(name: str, kind: str, connect: Connect) -> dict[str, Any] | None:
    """Ask the holder at *name* for ``logins`` or ``logout``; None if nothing listens there.

    A holder that drops the connection before answering is one that was
    exiting (its listener still queued connections): nothing there either.
    VersionMismatch, a refusal, is raised.
    """
    peer = f"the background fleche-ssh process {name}"
    sock = connect(name, EXCHANGE_TIMEOUT)
    if sock is None:
        return None
    with sock:
        try:
            nonce = protocol.check_hello(protocol.receive(sock, EXCHANGE_TIMEOUT, peer), peer)
            protocol.send(sock, {"t": kind, "version": protocol.VERSION,
                                 "proof": protocol.proof(_NO_SECRET, nonce)})
            return protocol.expect(protocol.receive(sock, EXCHANGE_TIMEOUT, peer), kind, peer)
        except VersionMismatch:
            raise
        except (ShareError, OSError):
            return None  # it was exiting: its connection was accepted, never served


def names() -> list[str]:
    """The names of this user's background holders that may be listening."""
    found = {path.stem for path in place.directory().iterdir()
             if path.name.startswith("login-") and path.suffix in (".sock", ".port")}
    return sorted(found)
