"""The remote command that starts fleche's server, built as the stock ``SshCache`` builds it.

Every way of reaching the remote host (our own transport, a shared login,
an OpenSSH master) runs this same command line, so it is built once, here.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def server_command(python: str, cache_name: str | None, setup_commands: Sequence[str],
                   workdir: str | None) -> str:
    """The remote shell command, built as the stock ``SshCache`` builds it.

    ``cd <workdir> && <setup commands> && exec <python> -m fleche remote
    --serve [--cache NAME]``: the setup commands verbatim, everything else
    shell-quoted so that no value runs as a command.  A leading ``~/`` stays
    unquoted so the remote shell expands it to the remote home.
    """
    argv = [python, "-m", "fleche", "remote", "--serve"]
    if cache_name is not None:
        argv += ["--cache", cache_name]
    server = " ".join(_quote(a) for a in argv)
    prefix = ([f"cd {_quote(workdir)}"] if workdir is not None else []) + list(setup_commands)
    if not prefix:
        return server
    return " && ".join((*prefix, f"exec {server}"))


def _quote(value: str) -> str:
    if value == "~":
        return value
    if value.startswith("~/"):
        return "~/" + shlex.quote(value[2:])
    return shlex.quote(value)
