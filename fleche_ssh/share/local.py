"""The local endpoint of a shared login: listen on a name, connect to it, prove who is at each end.

Whoever reaches a shared login can run commands on the cluster as its
owner, so nothing is sent over a local connection until the other end is
shown to be this user, in both directions: a listener refuses a client of
another user, and a client refuses a listener of another user (a squatter
waiting to collect the answers to a one-time-code prompt).

Two backends, one interface:

``unix`` (POSIX)
    A UNIX socket ``<name>.sock`` in the private directory of
    :mod:`.place`, made 0600 by binding under ``umask 0177`` (never a
    chmod after the fact).  Both ends ask the kernel who is at the other
    end (``SO_PEERCRED``, ``LOCAL_PEERCRED``) through
    :mod:`fleche_ssh.wire.unix`; a client also checks the socket file's
    owner before connecting.  No byte is exchanged before the uid matches.

``loopback`` (Windows, which has no ``AF_UNIX`` in CPython)
    TCP on 127.0.0.1, its port in ``<name>.port``; a random 256-bit secret
    in ``loopback.secret``, both in the private directory.  Each end proves
    it knows the secret by an HMAC over the other's fresh challenge; the
    listener proves first, so a squatter on a port a dead listener used
    collects only the client's random challenge.  The MACs cover the name
    and the listener's port, so no proof can be replayed or relayed to
    another listener.  The secret itself never crosses the connection.
    ``FLECHE_SSH_LOCAL_BACKEND=loopback`` selects it on POSIX, which is how
    the suite tests it.

A name is held by :class:`.place.Claim` for the listener's life: a second
``listen`` gets :class:`AddressInUse` at once, and the socket or port file
of a killed listener is replaced at once.  Every wait is bounded by the
caller's timeout.
"""

from __future__ import annotations

import contextlib
import os
import socket

from ..errors import AddressInUse, ConfigError, UntrustedPeer
from ..wire.unix import UntrustedSocket, connect_owned, peer_uid
from . import place

__all__ = ["AddressInUse", "Listener", "UntrustedPeer", "UntrustedSocket", "connect", "listen"]

#: Environment variable choosing the backend: ``unix`` or ``loopback``.
BACKEND = "FLECHE_SSH_LOCAL_BACKEND"


def backend() -> str:
    """The backend this process uses: ``FLECHE_SSH_LOCAL_BACKEND``, else the platform's."""
    chosen = os.environ.get(BACKEND) or ("unix" if hasattr(socket, "AF_UNIX") else "loopback")
    if chosen not in _BACKENDS:
        raise ConfigError(f"{BACKEND}={chosen!r}: expected 'unix' or 'loopback'.")
    return chosen


def listen(name: str) -> Listener:
    """Listen on *name*, holding it until :meth:`Listener.close` or the end of this process.

    Raises:
        AddressInUse: a live listener of this user already holds *name*.
        RuntimeDirError: the private directory (or a file in it) is unsafe.
    """
    return _BACKENDS[backend()][0](name)


def connect(name: str, timeout: float) -> socket.socket | None:
    """A connection to this user's listener on *name*, proven to be this user's; None if none.

    None means nothing listens: no socket or port file, or one left by a
    listener that ended.  The socket returned is blocking, without a timeout.

    Raises:
        UntrustedSocket: the socket, or the process listening on it, is another user's.
        UntrustedPeer: the loopback listener did not prove it holds this user's secret.
        RuntimeDirError: the private directory (or a file in it) is unsafe.
    """
    sock = _BACKENDS[backend()][1](name, timeout)
    if sock is not None:
        sock.settimeout(None)
    return sock


class Listener:
    """A listening socket holding a name; :meth:`accept` then :meth:`authenticate` each client."""

    def __init__(self, sock: socket.socket, address: str, file: str, claim: place.Claim) -> None:
        self.address = address  #: the socket's path, or ``127.0.0.1:PORT``
        self._sock = sock
        self._file = file  # removed on close: the socket, or the port file
        self._claim = claim

    def accept(self, timeout: float | None = None) -> socket.socket:
        """The next client, connected and blocking, not yet authenticated.

        Raises:
            TimeoutError: no client came within *timeout* seconds.
        """
        self._sock.settimeout(timeout)
        conn, _ = self._sock.accept()
        conn.settimeout(None)
        return conn

    def authenticate(self, sock: socket.socket, timeout: float) -> None:
        """Return if *sock*'s client is this user, else close *sock* and raise UntrustedPeer."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop listening, remove the socket or port file, and let the name go."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file)
        self._sock.close()
        self._claim.release()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address}>"

    def _refuse(self, sock: socket.socket, why: str) -> UntrustedPeer:
        sock.close()
        return UntrustedPeer(
            f"a client of {self.address} was refused: {why}. Nothing of the login was sent to "
            f"it. If this repeats, another user's program is probing your shared login."
        )


# -- unix ----------------------------------------------------------------------------------


class UnixListener(Listener):
    def authenticate(self, sock: socket.socket, timeout: float) -> None:
        uid = peer_uid(sock)  # the kernel's word, fixed at connect(): no bytes, no wait
        if uid != os.getuid():
            raise self._refuse(sock, f"it runs as uid {uid}, not as you (uid {os.getuid()})")


def _listen_unix(name: str) -> Listener:
    where = place.directory()
    path = place.file_in(where, name, ".sock", socket=True)
    claim = place.Claim(where, name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a killed listener's socket: we hold the name now
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(64)
    except BaseException:
        sock.close()
        claim.release()
        raise
    return UnixListener(sock, path, path, claim)


def _connect_unix(name: str, timeout: float) -> socket.socket | None:
    return connect_owned(place.file_in(place.directory(), name, ".sock", socket=True), timeout)


_BACKENDS = {"unix": (_listen_unix, _connect_unix)}
