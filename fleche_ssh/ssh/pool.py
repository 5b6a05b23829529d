"""The process's SSH logins: one authenticated transport per destination.

Authenticating can mean typing a one-time code, so it should happen once
per destination per process: every cache that resolves to the same
:class:`~fleche_ssh.config.target.Target` shares one
:class:`~fleche_ssh.ssh.session.Session` and opens its own channels on
it.  Only a dead transport is replaced, and replacing it authenticates
again.  A jump host is a destination like any other, reached through the
same pool, so two targets behind one jump host share its login too.

:class:`ConnectionPool` owns everything that must live as long as the
logins do: the sessions and one lock per destination (two threads asking
for the same host wait for one login instead of making two), the keys
decrypted so far (a passphrase is asked once per process), and the
objects whose channels ride on the pooled transports.  A forked child
inherits the parent's transports without the threads that drive them;
the pool forgets them there, and tells those objects to forget their
channels, so the child logs in on its own.

:data:`POOL` is the one instance the caches use; :meth:`ConnectionPool.snapshot`
says what it holds.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..config.target import Target
from .auth import KeyCache
from .connect import connect
from .session import Login, Session

logger = logging.getLogger("fleche_ssh.session")


class ForkAware(Protocol):
    """What the pool needs of an object holding channels on its transports."""

    def forget_after_fork(self) -> None:
        """Drop channels inherited from the parent, without closing them."""


@dataclass(frozen=True)
class PooledLogin:
    """One destination the pool holds a login for, as :meth:`ConnectionPool.snapshot` saw it."""

    #: The destination, as ``user@host:port``.
    target: str
    #: The jump host it is reached through, as ``user@host:port``, if any.
    via: str | None
    #: Wall-clock time (``time.time()``) the login completed.
    connected_since: float
    #: Channels open on the transport now (remote servers, jump channels).
    channels: int
    #: Seconds since a channel last opened or closed; 0 while any is open.
    idle: float
    #: How the host key was verified (known_hosts line, or the policy that let it in).
    host_key_verified: str
    #: Whether the transport still runs (a dead one is replaced on next use).
    alive: bool


class ConnectionPool:
    """Sessions per destination, the key cache, and the reset after a fork."""

    def __init__(self, *, caller_reads: bool = True) -> None:
        #: Whether a caller waiting for its answer reads the packets itself
        #: (:mod:`.lean_reader`); false: Paramiko's thread reads them all.  Read
        #: at each new connection (the tests and the benchmark run both).
        self.caller_reads = caller_reads
        self._sessions: dict[Target, Session] = {}
        self._locks: dict[Target, threading.Lock] = {}
        self._lock = threading.Lock()
        self._keys = KeyCache()
        self._tracked: weakref.WeakSet[ForkAware] = weakref.WeakSet()
        #: What serves these logins to the processes this one hands caches to
        #: (:mod:`fleche_ssh.share.owner`): None until a cache is first pickled.
        self._offers: Any = None
        if hasattr(os, "register_at_fork"):
            # Weakly: a pool made for a test must not live as long as the process.
            this = weakref.ref(self)

            def forget() -> None:
                pool = this()
                if pool is not None:
                    pool._forget_after_fork()

            os.register_at_fork(after_in_child=forget)

    def session(self, target: Target, login: Login) -> Session:
        """The live session for *target*, connecting and authenticating if there is none."""
        with self._lock:
            lock = self._locks.setdefault(target, threading.Lock())
        with lock:
            session = self._sessions.get(target)
            if session is not None and session.alive():
                return session
            if session is not None:
                logger.info("connection to %s was lost; connecting again", target.label)
                session.close()
            via = self.session(target.jump, login) if target.jump is not None else None
            session = connect(target, login, self._keys, via=via,
                              caller_reads=self.caller_reads)
            with self._lock:
                self._sessions[target] = session
            return session

    def get(self, target: Target) -> Session | None:
        """The pooled session for *target*, alive or not, without connecting."""
        with self._lock:
            return self._sessions.get(target)

    def sessions(self) -> list[Session]:
        """Every pooled session, alive or not."""
        with self._lock:
            return list(self._sessions.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, target: object) -> bool:
        with self._lock:
            return target in self._sessions

    def snapshot(self) -> tuple[PooledLogin, ...]:
        """What the pool holds, one entry per destination; nothing is sent to any server."""
        out = []
        for session in self.sessions():
            channels, idle = session.usage()
            out.append(PooledLogin(
                target=session.target.label,
                via=session.target.jump.label if session.target.jump is not None else None,
                connected_since=session.connected_at,
                channels=channels, idle=idle, host_key_verified=session.host_key_verified,
                alive=session.alive(),
            ))
        return tuple(out)

    def offers(self, start: Callable[[ConnectionPool], Any] | None = None) -> Any:
        """The server of this pool's offers; *start* makes it if there is none yet.

        Held here, not beside its module, so that one object owns everything
        a fork must forget (the child's offers would be its parent's).
        """
        with self._lock:
            if self._offers is None and start is not None:
                self._offers = start(self)
            return self._offers

    def stop_offers(self) -> Any:
        """Forget the server of this pool's offers; it is returned, for the caller to stop."""
        with self._lock:
            offers, self._offers = self._offers, None
            return offers

    def track(self, holder: ForkAware) -> None:
        """Tell *holder* to forget its channels in a forked child (held weakly)."""
        with self._lock:
            self._tracked.add(holder)

    def close_all(self) -> None:
        """Close every pooled transport (the pool refills on the next operation).

        Decrypted keys are kept: logging in again asks for no passphrase.
        """
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()

    def forget_keys(self) -> None:
        """Forget the decrypted identity files: the next login asks for passphrases again."""
        self._keys.clear()

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's sessions without closing them.

        Their transports belong to the parent, whose threads do not exist
        here; closing them would send on the parent's socket.  Locks are
        renewed, as a thread of the parent may have held one at the fork.
        """
        self._sessions = {}
        self._locks = {}
        self._lock = threading.Lock()
        self._offers = None  # the parent's holder and socket: left to the parent
        self._keys.after_fork()
        for holder in list(self._tracked):
            holder.forget_after_fork()


#: The pool every cache of this process uses.
POOL = ConnectionPool()


def close_all() -> None:
    """Close every pooled SSH connection of this process; the next operation reconnects.

    Decrypted keys are kept, so reconnecting asks for no passphrase again
    (a one-time code, if the server wants one, is asked again).
    """
    POOL.close_all()


atexit.register(close_all)


__all__ = ["POOL", "ConnectionPool", "PooledLogin", "close_all"]
