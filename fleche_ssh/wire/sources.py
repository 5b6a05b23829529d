"""Where a remote server's process comes from: the one lookup order.

For each channel, in this order:

1. a live OpenSSH master at one of the target's ``ControlPath`` forms: the
   user's own ``ssh`` logged in already, so nothing is asked and nothing
   logs in;
2. a fleche-ssh login shared with this process: a cache handed over by a
   process that offered its login (a pool worker's, carried in the
   pickle; :mod:`fleche_ssh.share`) runs its channels through that
   process, which asks nothing here; with ``control_persist``, the
   background process holding the destination's login (started if none
   runs);
3. this process's own login, from the connection pool (which logs in,
   asking once per destination, if it holds none).

A control socket that is missing or stale means "no master", quietly, as
for ``ssh``; one that is not this user's is refused with an error, never
used and never silently skipped.  Whatever ``ControlMaster`` says does not
matter here, as with ``ssh``, which uses a live master whatever its own
setting.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from ..errors import RemoteConnectionError
from ..share import local
from ..share.client import shared_process
from ..share.persist import persistent_process
from ..share.protocol import OwnerGone
from ..ssh.pool import POOL
from .openssh_master import Master, MasterProcess, find_master
from .paramiko_process import ParamikoProcess
from .process import RemoteProcess

if TYPE_CHECKING:
    from ..cache import ParamikoCache
    from ..config.target import Target

logger = logging.getLogger("fleche_ssh")


def live_master(target: Target) -> Master | None:
    """The live OpenSSH master of *target*'s ControlPath, if one listens there."""
    if sys.platform == "win32":  # OpenSSH for Windows has no ControlMaster
        if target.control_paths:
            logger.debug("ControlPath ignored: OpenSSH on Windows has no ControlMaster")
        return None
    for path in target.control_paths:
        master = find_master(path)
        if master is not None:
            return master
    return None


def _shared(cache: ParamikoCache, target: Target,
            command: str) -> tuple[RemoteProcess, str] | None:
    """A channel on a login another process shares with this one, and whose login it is.

    The login the cache's owner offered comes first (a pool worker's
    case); then, with ``control_persist``, the background holder of the
    destination, which also takes over when the owner has exited.
    """
    offer = getattr(cache, "_share", None)
    if offer is not None:
        try:
            process = shared_process(cache, target, command, local.connect)
        except OwnerGone:
            if target.control_persist is None:
                raise
            process = None
        if process is not None:
            return process, (f"the login shared by its owner process (pid {offer.owner_pid}) "
                             f"at {process.address}")
    kept = persistent_process(cache, target, command, local.connect)
    return None if kept is None else (
        kept, f"the background holder at {kept.address} (control_persist)")


def _source(cache: ParamikoCache, target: Target, command: str) -> tuple[RemoteProcess, str]:
    """*command* started through the first source of the lookup order that has one, and which."""
    master = live_master(target)
    if master is not None:
        return (MasterProcess(master, command),
                f"the OpenSSH master (pid {master.pid}) at {master.path}")
    shared = _shared(cache, target, command)
    if shared is not None:
        return shared
    try:
        session = POOL.session(target, cache.login(target))
    except RemoteConnectionError as e:
        if target.control_paths:
            e.add_note(f"fleche-ssh logged in itself because no OpenSSH master listens at "
                       f"{' or '.join(target.control_paths)}; start one with `ssh -M` (or "
                       f"`ssh {target.alias}` with ControlMaster auto) to reuse its login.")
        raise
    return ParamikoProcess.open(session, command), f"this process's own login (pid {os.getpid()})"


def open_process(cache: ParamikoCache, command: str) -> RemoteProcess:
    """Start *command* for *cache*, through the first source of the lookup order that has one.

    The process remembers which source it came from (``fleche-ssh check``
    shows it), and the log says it as each channel opens: the first thing
    to know when a login is asked for again, or not asked for.
    """
    target = cache.target()
    process, source = _source(cache, target, command)
    process.source = source
    logger.info("starting remote cache on %s through %s: %s", target.label, source, command)
    return process
