"""The ``fleche-ssh`` command: ``demo`` shows the whole flow, ``check`` diagnoses a host.

``login``, ``logins`` and ``logout`` (:mod:`.logins`) manage the logins kept
in the background for ``control_persist``.

Where things live:

* this module: the command line (:func:`parser`, :func:`main`);
* :mod:`.steps`: the step runner both commands are built on, its output, and
  the steps they share (log in, ask the remote server);
* :mod:`.check`: ``fleche-ssh check``;
* :mod:`fleche_ssh.demo`: ``fleche-ssh demo``, its throwaway world and the
  demo-only SSH server.

Heavy imports (fleche, paramiko) happen inside the commands, so that
``fleche-ssh --version`` and ``--help`` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from . import check, logins
from .steps import say


def demo(args: argparse.Namespace) -> int:
    """``fleche-ssh demo``: a cache behind a throwaway SSH server on this machine."""
    # Imported when run: demo.run imports cli.steps, so a top-level import would be circular.
    from ..demo.run import demo as run_demo

    return run_demo(args)


class _SshOption(argparse.Action):
    """Collect ``-o/-p/-l/-i/-F`` in the order given, as ``ssh_options``."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), option_string, values])


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="fleche-ssh",
        description="Reach a remote fleche cache over SSH with Paramiko.",
    )
    top.add_argument("--version", action="version", version=f"fleche-ssh {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "demo", help="watch a cached function go through a throwaway SSH server on this machine",
        description="Start a throwaway SSH server on 127.0.0.1 and use it as a remote cache.",
    ).set_defaults(func=demo)
    sub = commands.add_parser(
        "check", help="check, step by step, that a host (or a configured cache) works",
        description="Resolve, connect, log in, start the remote fleche server and time it. "
                    "Exits 0 only if every step passed.",
    )
    sub.set_defaults(func=check.check, ssh_options=[])
    sub.add_argument("host", nargs="?", help="host name, user@host or ~/.ssh/config alias")
    sub.add_argument("--cache", dest="config_cache", metavar="NAME",
                     help="check cache NAME of the nearest fleche.toml instead of a HOST")
    sub.add_argument("--python", help="remote python (default: python3)")
    sub.add_argument("--workdir", help="remote directory to start the server in")
    sub.add_argument("--cache-name", help="named cache of the remote fleche.toml")
    sub.add_argument("-v", "--verbose", action="count", default=0,
                     help="log to stderr: -v connections, logins and the remote server's "
                          "stderr; -vv everything, Paramiko's protocol messages included")
    sub.add_argument("--prompt", metavar="HANDLER",
                     help="who answers login questions: auto (the default: this terminal), "
                          "none, or module:function, as the prompt key of the cache")
    logins.add_commands(commands)
    # ssh's own flags that take a value, as the option rows name them.
    from ..config.options import OPTIONS

    flags = [("-o", "KEYWORD=VALUE"), ("-F", "CONFIG_FILE"),
             *(tuple(row.flag.split()) for row in OPTIONS if " " in row.flag)]
    for flag, meta in flags:
        sub.add_argument(flag, dest="ssh_options", action=_SshOption, metavar=meta,
                         help=f"as for ssh {flag}")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    ssh = parser()
    args = ssh.parse_args(argv)
    if args.func is check.check and (args.host is None) == (args.config_cache is None):
        ssh.error("check needs either HOST or --cache NAME")
    if args.func is check.check and args.config_cache and (
        args.ssh_options or any(value is not None for value in check.host_keys(args).values())
    ):
        ssh.error("with --cache, the settings come from fleche.toml: drop the HOST options")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
