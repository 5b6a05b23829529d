"""How the demo server runs an exec request's command: directly where it can, on any OS.

The cache only ever sends commands that
:func:`fleche_ssh.wire.command.server_command` built: ``PYTHON -m fleche
remote --serve [--cache NAME]``, after ``cd WORKDIR && exec`` when there is
a workdir.  Such a command is run without a shell, as
``Popen(argv, cwd=WORKDIR)``, so ``fleche-ssh demo`` needs no POSIX shell.
A command is taken as one of these only if ``server_command`` builds
exactly the same text back from what was read out of it: then every word
was quoted as ``server_command`` quotes it, and running the words directly
does what the shell would (a leading ``~`` or ``~/`` is the home
directory, as the shell expands it).

Anything else (setup commands, a test's ``echo hi; exit 3``) runs as sshd
would run it, through ``/bin/sh -c``, where there is one.

Each child gets a process group of its own where the OS has them (POSIX),
so that stopping it also stops whatever it started in the background;
on Windows a new process group, and only the child itself is stopped.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..wire.command import server_command

logger = logging.getLogger(__name__)

SHELL = "/bin/sh"
#: The exit status sent for a child that had to be killed: 128 + SIGKILL, as a shell says it.
KILLED = 128 + 9

#: What makes a child the first of a process group of its own.
_OWN_GROUP: Mapping[str, Any] = {"start_new_session": True}
if sys.platform == "win32":
    _OWN_GROUP = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}

_SERVE = ("-m", "fleche", "remote", "--serve")


@dataclass(frozen=True)
class Direct:
    """A command that can run without a shell: its words, and the directory to run them in."""

    argv: tuple[str, ...]
    cwd: str | None = None


def _home(word: str) -> str:
    return os.path.expanduser(word) if word == "~" or word.startswith("~/") else word


def parse(command: str) -> Direct | None:
    """*command* as argv and cwd, if ``server_command`` built it; else None (it needs a shell)."""
    try:
        words = shlex.split(command)
    except ValueError:  # an unclosed quote: a shell's business
        return None
    workdir = None
    if words[:1] == ["cd"] and words[2:4] == ["&&", "exec"]:
        workdir, words = words[1], words[4:]
    if len(words) < 5 or tuple(words[1:5]) != _SERVE:
        return None
    options = words[5:]
    if options and (len(options) != 2 or options[0] != "--cache"):
        return None
    cache_name = options[1] if options else None
    if server_command(words[0], cache_name, (), workdir) != command:
        return None
    return Direct(tuple(_home(word) for word in words),
                  None if workdir is None else _home(workdir))


def _popen(argv: list[Any], cwd: str | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0, close_fds=True, **_OWN_GROUP)


def start(command: bytes) -> subprocess.Popen[bytes]:
    """Start *command* with its stdin, stdout and stderr on pipes, in a group of its own.

    A direct start that fails (no such program or directory) is handed to
    the shell too, where there is one, so that the client gets the shell's
    own message and exit status, as from sshd.
    """
    direct = parse(command.decode("utf-8", "surrogateescape"))
    if direct is not None:
        try:
            return _popen(list(direct.argv), direct.cwd)
        except OSError as error:
            if not os.path.exists(SHELL):
                raise
            logger.debug("could not start %r directly (%s); trying %s", direct.argv, error, SHELL)
    if not os.path.exists(SHELL):
        raise OSError(errno.ENOENT, f"{command!r} needs a POSIX shell, and there is none", SHELL)
    return _popen([SHELL, "-c", command])


def stop(child: subprocess.Popen[bytes], *, kill: bool) -> None:
    """Ask the child's group to end (SIGTERM), or force it (SIGKILL); on Windows, the child."""
    if sys.platform == "win32":
        with contextlib.suppress(OSError):
            (child.kill if kill else child.terminate)()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL if kill else signal.SIGTERM)
