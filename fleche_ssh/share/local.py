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
import errno
import hashlib
import hmac
import os
import secrets
import socket
import stat
import time
from pathlib import Path

from ..errors import AddressInUse as AddressInUse  # raised by listen(), through place.Claim
from ..errors import ConfigError, ConnectTimeout, RuntimeDirError, UntrustedPeer
from ..wire.unix import UntrustedSocket as UntrustedSocket  # raised by connect()
from ..wire.unix import connect_owned, peer_uid
from . import place

__all__ = ["Listener", "backend", "connect", "listen"]

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
            f"a client of {self.address} was refused and closed: {why}. Nothing of the login "
            f"was sent to it. If no program of yours caused this, another program is probing "
            f"your shared login: check who can reach {os.path.dirname(self._file)}."
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


# -- loopback ------------------------------------------------------------------------------

#: The client's first bytes: the protocol and its version, then its 32-byte challenge.
HELLO = b"fleche-ssh local 1\n"
_NONCE = _MAC = 32


def _secret(where: Path) -> tuple[str, bytes]:
    """The path and value of this user's loopback secret, made on first use."""
    path = os.path.join(where, "loopback.secret")
    if not os.path.lexists(path):
        draft = f"{path}.{secrets.token_hex(8)}"
        fd = place.open_private(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, secrets.token_bytes(32))
        finally:
            os.close(fd)
        try:
            os.link(draft, path)  # never replaces: a secret made meanwhile by another wins
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    try:
        fd = place.open_private(path, os.O_RDONLY)
    except OSError as e:
        why: str | None = "it is a symbolic link" if e.errno == errno.ELOOP else e.strerror
    else:
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            value = f.read(33)
        why = _unfit_secret(info, value)
    if why is not None:
        raise RuntimeDirError(
            f"the secret {path} is refused: {why}. Remove it; fleche-ssh makes a new one "
            f"(listeners started before then must be restarted)."
        )
    return path, value


def _unfit_secret(info: os.stat_result, value: bytes) -> str | None:
    """Why a secret file is not to be used, or None.  On Windows the profile's ACL guards it."""
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if os.name == "posix" and info.st_uid != os.getuid():
        return f"it belongs to uid {info.st_uid}, not to you (uid {os.getuid()})"
    if os.name == "posix" and info.st_mode & 0o077:
        return f"its mode is {stat.S_IMODE(info.st_mode):04o}, not 0600"
    if len(value) != 32:
        return f"it holds {len(value)} bytes, not 32"
    return None


def proof(secret: bytes, role: bytes, name: str, port: int, first: bytes, second: bytes) -> bytes:
    """The HMAC one end sends: its role, the name and the listener's port bind it to this use."""
    message = b"\0".join([HELLO, role, name.encode(), str(port).encode(), first, second])
    return hmac.new(secret, message, hashlib.sha256).digest()


def _read(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Exactly *size* bytes by *deadline*; fewer only if the other end closed."""
    data = b""
    while len(data) < size:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


class LoopbackListener(Listener):
    def __init__(self, sock: socket.socket, port_file: str, claim: place.Claim, name: str,
                 secret: bytes) -> None:
        self.port = sock.getsockname()[1]
        super().__init__(sock, f"127.0.0.1:{self.port}", port_file, claim)
        self._name = name
        self._secret = secret

    def authenticate(self, sock: socket.socket, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            hello = _read(sock, len(HELLO) + _NONCE, deadline)
            if hello[: len(HELLO)] != HELLO or len(hello) != len(HELLO) + _NONCE:
                raise self._refuse(sock, "it did not start as a fleche-ssh client does")
            theirs, ours = hello[len(HELLO):], secrets.token_bytes(_NONCE)
            sock.sendall(ours + proof(self._secret, b"listener", self._name, self.port,
                                      theirs, ours))
            answer = _read(sock, _MAC, deadline)
        except OSError as e:  # TimeoutError among them
            raise self._refuse(sock, f"the exchange failed ({e})") from e
        expected = proof(self._secret, b"client", self._name, self.port, ours, theirs)
        if not hmac.compare_digest(answer, expected):
            raise self._refuse(sock, "it did not prove it holds your secret")
        sock.settimeout(None)


def _listen_loopback(name: str) -> Listener:
    where = place.directory()
    port_file = place.file_in(where, name, ".port")
    claim = place.Claim(where, name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        _, secret = _secret(where)
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: no other socket may share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        listener = LoopbackListener(sock, port_file, claim, name, secret)
        draft = f"{port_file}.new"
        fd = place.open_private(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            f.write(f"{listener.port}\n")
        os.replace(draft, port_file)  # clients never read half a port
    except BaseException:
        sock.close()
        claim.release()
        raise
    return listener


def _connect_loopback(name: str, timeout: float) -> socket.socket | None:
    deadline = time.monotonic() + timeout
    where = place.directory()
    port_file = place.file_in(where, name, ".port")
    try:
        fd = place.open_private(port_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:
        text = f.read(16).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise RuntimeDirError(f"{port_file} does not hold a port ({text!r}): remove it.")
    port = int(text)
    secret_file, secret = _secret(where)
    late = ConnectTimeout(
        f"the listener on 127.0.0.1:{port} (from {port_file}) did not answer within "
        f"{timeout:g}s. Its process may be stuck: end it, or try again."
    )
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout)
    except ConnectionRefusedError:
        return None  # a listener that ended: the next listen() replaces its port file
    except TimeoutError as e:
        raise late from e
    refused = UntrustedPeer(
        f"the process listening on 127.0.0.1:{port} (from {port_file}) did not prove it holds "
        f"your secret {secret_file}: refused, nothing was sent to it but a random challenge. "
        f"It may be another program on the port of a listener that ended: remove {port_file}."
    )
    try:
        ours = secrets.token_bytes(_NONCE)
        sock.sendall(HELLO + ours)
        reply = _read(sock, _NONCE + _MAC, deadline)
        theirs = reply[:_NONCE]
        expected = proof(secret, b"listener", name, port, ours, theirs)
        if len(reply) != _NONCE + _MAC or not hmac.compare_digest(reply[_NONCE:], expected):
            raise refused
        sock.sendall(proof(secret, b"client", name, port, theirs, ours))
    except TimeoutError as e:
        sock.close()
        raise late from e
    except OSError as e:
        sock.close()
        raise refused from e
    except BaseException:
        sock.close()
        raise
    return sock


_BACKENDS = {"unix": (_listen_unix, _connect_unix),
             "loopback": (_listen_loopback, _connect_loopback)}
