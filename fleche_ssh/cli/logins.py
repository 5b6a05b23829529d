"""``fleche-ssh login``, ``logins`` and ``logout``: the logins background processes keep.

``login HOST`` logs in now, asking in this terminal, and leaves the login
with a background holder (:mod:`fleche_ssh.share.persist`), so that the
notebooks and scripts of the day that set ``control_persist`` ask nothing.
``logins`` lists what each holder keeps, from its pool's ``snapshot()``;
``logout`` ends one holder, or all.  Nothing secret is shown: the holders
keep no answer, and the listing holds names, times and counts only.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import TYPE_CHECKING

from .steps import say

if TYPE_CHECKING:
    from ..cache import ParamikoCache

#: Seconds ``fleche-ssh login`` keeps a login unused when the host sets no ControlPersist.
DEFAULT_KEEP = 8 * 3600.0


def _cache(args: argparse.Namespace) -> ParamikoCache:
    from ..cache import ParamikoCache

    keys = {"prompt": args.prompt} if getattr(args, "prompt", None) else {}
    return ParamikoCache(host=args.host, ssh_options=tuple(args.ssh_options), **keys)


def login(args: argparse.Namespace) -> int:
    from ..config.parsers import persist as read_keep
    from ..share import local, persist
    from ..share.client import hold_login

    cache = _cache(args)
    target = cache.target()
    chosen: float | None = target.control_persist
    if args.keep:
        chosen = read_keep(str(args.keep))
    idle = DEFAULT_KEEP if chosen is None else chosen
    login = cache.login(target)
    persist.through_holder(target, idle, lambda name: hold_login(
        name, b"", persist.canonical(target), login, local.connect) or None)
    shown = "until fleche-ssh logout" if math.isinf(idle) else f"until unused for {idle:g} s"
    say(f"logged in to {target.label}; kept in the background {shown}.")
    say('Caches with control_persist set (e.g. control_persist = "10m") now ask nothing.')
    return 0


def logins(args: argparse.Namespace) -> int:
    from ..share import local, persist

    found = 0
    for name in persist.names():
        reply = persist.request(name, "logins", local.connect)
        if reply is None:
            continue
        keep = reply.get("keep")
        for held in reply.get("logins", []):
            found += 1
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(held["connected_since"]))
            left = ("-" if keep is None or math.isinf(keep) or held["channels"]
                    else f"{max(0.0, keep - held['idle']):.0f} s")
            via = f" via {held['via']}" if held.get("via") else ""
            say(f"{held['target']}{via}  since {since}  channels {held['channels']}  "
                f"idle {held['idle']:.0f} s  expires in {left}  "
                f"{'alive' if held['alive'] else 'lost'}  (pid {reply['pid']})")
    if not found:
        say("no login is kept in the background")
    return 0


def logout(args: argparse.Namespace) -> int:
    from ..share import local, persist

    names = [persist.name_for(_cache(args).target())] if args.host else persist.names()
    ended = sum(persist.request(name, "logout", local.connect) is not None for name in names)
    say(f"ended {ended} background login holder(s)")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The three subcommands, on the ``fleche-ssh`` parser."""
    sub = commands.add_parser("login", help="log in to HOST now and keep the login in the "
                              "background for your other processes")
    sub.add_argument("host")
    sub.add_argument("--keep", metavar="DURATION",
                     help="how long to keep it unused (10m, 8h, yes: until logout); default "
                          "the host's ControlPersist, else 8h")
    sub.add_argument("--prompt", metavar="HANDLER", help="who answers (default: this terminal)")
    sub.set_defaults(func=login, ssh_options=[])
    commands.add_parser("logins", help="list the logins kept in the background").set_defaults(
        func=logins)
    sub = commands.add_parser("logout", help="end the background login of HOST, or all")
    sub.add_argument("host", nargs="?")
    sub.set_defaults(func=logout, ssh_options=[])
