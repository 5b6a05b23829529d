"""Offering this process's logins to the processes it hands a cache to.

A notebook that logs in with a one-time code and then runs a process pool
over its cache must not make every worker log in again: each code works
once, and a worker has nobody to ask.  So a cache, when it is pickled
(which is how ``fleche.wrap_executor`` carries it to workers, whatever the
start method), carries an :class:`~.client.Offer`: the address of a
:class:`~.holder.Holder` serving this process's own
:data:`~fleche_ssh.ssh.pool.POOL`, and a random capability secret.  A
worker unpickling it opens its channels through that holder (step 2 of
:mod:`fleche_ssh.wire.sources`).

Nothing runs until a cache is pickled: the first offer starts the holder
(a daemon thread on a listener of :mod:`.local` with a random name), so a
process that never hands a cache over pays nothing.  Logins made for a
worker are answered by the handler of the cache that made the offer (the
notebook's input box, the terminal, the callable), never by the worker:
a cache pickled before its process logged in still asks its one code
where a person can answer it.  The secret is good only while this process
runs, since only its memory holds it; when the process ends, the listener
is closed and its socket removed.  ``control_master = "no"`` (key,
``-o ControlMaster=no`` or ssh_config) makes no offer.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..ssh.pool import POOL, ConnectionPool
from ..ssh.session import Login
from . import protocol
from .client import Offer
from .holder import Grant, Holder, Listener

if TYPE_CHECKING:
    from ..cache import ParamikoCache

logger = logging.getLogger("fleche_ssh.share")


@dataclass
class _Serving:
    """The holder this process runs for its offers, and the grant of each secret."""

    listener: Listener
    name: str
    pid: int
    grants: dict[bytes, Grant] = field(default_factory=dict, repr=False)
    holder: Holder | None = None

    def authorise(self, nonce: bytes, given: object) -> Grant | None:
        for secret, grant in list(self.grants.items()):
            if protocol.proves(secret, nonce, given):
                return grant
        return None


def offer(cache: ParamikoCache) -> Offer | None:
    """The offer a pickled *cache* carries: this process's login, or the one it was offered.

    A cache that came with an offer passes that one on (a worker handing
    the cache further shares its owner's login, not one of its own).  None
    when sharing is off for the cache's host, or a background holder keeps
    its login (``control_persist``), which the workers then use directly.
    """
    existing: Offer | None = getattr(cache, "_share", None)
    if existing is not None:
        return existing
    try:
        target = cache.target()
        if target.control_master == "no" or target.control_persist is not None:
            return None  # no sharing, or the background holder shares the login already
    except (ConfigError, OSError) as e:
        logger.debug("not offering the login of %s: %s", cache.host, e)
        return None
    grant = Grant(login=functools.partial(Login.of, cache.prompt, cache.auth_timeout))
    secret = secrets.token_bytes(32)
    serving: _Serving = POOL.offers(_start)
    serving.grants[secret] = grant
    made = Offer(name=serving.name, owner_pid=serving.pid, secret=secret)
    object.__setattr__(cache, "_share", made)
    return made


def _start(pool: ConnectionPool) -> _Serving:
    """A holder serving *pool*, on a listener of a random name (under the pool's lock)."""
    from . import local

    name = f"pool-{secrets.token_hex(8)}"
    listener = local.listen(name)
    serving = _Serving(listener=listener, name=name, pid=os.getpid())
    serving.holder = Holder(pool, serving.authorise)
    serving.holder.serve(listener)
    logger.debug("sharing this process's logins with the processes it hands caches to, at %s",
                 listener.address)
    return serving


def stop() -> None:
    """Stop serving offers and remove the socket; offers made so far stop working."""
    serving: _Serving | None = POOL.stop_offers()
    if serving is not None and serving.pid == os.getpid():
        if serving.holder is not None:
            serving.holder.close()
        serving.listener.close()


atexit.register(stop)
