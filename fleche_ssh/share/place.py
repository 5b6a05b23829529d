"""Where a shared login listens: a directory only this user can use, and a lock per name.

The directory is the first gate.  On POSIX it is
``$XDG_RUNTIME_DIR/fleche-ssh`` when the session has a usable runtime
directory (``/run/user/<uid>``: per user, on tmpfs, emptied at logout), else
``/tmp/fleche-ssh-<uid>``; ``FLECHE_SSH_RUNTIME_DIR`` names another one.
It is created 0700, and one that already exists is used only if it is a
real directory (not a symbolic link), owned by this user and closed to
everyone else: in ``/tmp`` anyone could have made it first, to watch or
replace what is put there.  On Windows it is ``%LOCALAPPDATA%\\fleche-ssh``,
under the user's profile, whose default ACL admits only the user, SYSTEM
and Administrators.

A name is held by an exclusive lock on ``<name>.lock`` for the listener's
whole life.  The kernel drops the lock when the process ends, however it
ends, so a listener killed with SIGKILL leaves a socket that the next
``listen`` replaces at once, and two processes racing for a name learn
which one won without looking at the socket at all.  Lock files are never
removed: removing one while another process waits to open it would let two
processes each lock a different file of the same name.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import AddressInUse, RuntimeDirError

#: Environment variable naming the directory itself (tests, unusual systems).
OVERRIDE = "FLECHE_SSH_RUNTIME_DIR"

#: macOS's ``sun_path`` is 104 bytes with its terminating NUL; Linux's is 108.
#: The smaller one is enforced everywhere, so a setup that works on Linux works on a Mac.
SUN_PATH_MAX = 103

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_POSIX = os.name == "posix"


def _private(path: Path) -> str | None:
    """Why *path* is not a private directory of this user, or None if it is one."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "it does not exist"
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if _POSIX and info.st_uid != os.getuid():
        return f"it belongs to uid {info.st_uid}, not to you (uid {os.getuid()})"
    if _POSIX and info.st_mode & 0o077:
        return f"its mode is {stat.S_IMODE(info.st_mode):04o}, not 0700"
    return None


def directory_path(env: Mapping[str, str] = os.environ) -> Path:
    """The directory the sockets of this user live in, without creating or checking it."""
    if env.get(OVERRIDE):
        return Path(env[OVERRIDE])
    if not _POSIX:
        base = env.get("LOCALAPPDATA")
        if not base:
            raise RuntimeDirError(
                f"LOCALAPPDATA is not set, so fleche-ssh has no private directory for its "
                f"shared logins. Set {OVERRIDE} to a directory only you can read."
            )
        return Path(base) / "fleche-ssh"
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg) and _private(Path(xdg)) is None and os.access(xdg, os.W_OK | os.X_OK):
        return Path(xdg) / "fleche-ssh"
    return Path(f"/tmp/fleche-ssh-{os.getuid()}")


def directory() -> Path:
    """The private directory for this user's sockets, created 0700 if missing.

    Raises:
        RuntimeDirError: it exists but is not this user's alone, or cannot be made.
    """
    path = directory_path()
    try:
        path.mkdir(mode=0o700)  # only the last component: its parents are not ours to make
    except FileExistsError:
        pass
    except OSError as e:
        raise RuntimeDirError(
            f"cannot create {path} for fleche-ssh's shared logins: {e.strerror}. "
            f"Set {OVERRIDE} to a directory only you can use."
        ) from e
    why = _private(path)
    if why is not None:
        raise RuntimeDirError(
            f"{path} is refused for fleche-ssh's shared logins: {why}. A directory others "
            f"can reach could give them your login. Remove it (fleche-ssh recreates it 0700), "
            f"or set {OVERRIDE} to a directory only you can use."
        )
    return path


def file_in(where: Path, name: str, suffix: str, *, socket: bool = False) -> str:
    """The path of *name* + *suffix* in *where*; a socket's must fit in ``sun_path``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a name for a shared login (letters, digits, ._-)")
    path = os.path.join(where, name + suffix)
    size = len(os.fsencode(path))
    if socket and size > SUN_PATH_MAX:
        raise RuntimeDirError(
            f"the socket path {path} is {size} bytes; a UNIX socket path may have at most "
            f"{SUN_PATH_MAX} (macOS). Set {OVERRIDE} to a shorter directory, e.g. "
            f"/tmp/fleche-ssh-{os.getuid()}."
        )
    return path


def open_private(path: str, flags: int) -> int:
    """``os.open`` for a file of ours: created 0600, never through a symbolic link."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0), 0o600)


class Claim:
    """The exclusive hold on one name for as long as a listener lives.

    Raises:
        AddressInUse: another live process holds the name.
    """

    def __init__(self, where: Path, name: str) -> None:
        self.path = file_in(where, name, ".lock")
        self._fd: int | None = open_private(self.path, os.O_RDWR | os.O_CREAT)
        if not _lock(self._fd):
            os.close(self._fd)
            self._fd = None
            raise AddressInUse(
                f"a live fleche-ssh listener already holds {name!r} (its lock {self.path} is "
                f"taken): connect to it instead of listening, or end that process."
            )

    def release(self) -> None:
        """Let the name go; the lock file stays, see the module docstring."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


if sys.platform == "win32":
    import msvcrt

    def _lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:  # the byte is locked by another process
            return False
        return True

    def detached() -> dict[str, Any]:
        """``subprocess.Popen`` arguments for a background process that outlives its starter."""
        return {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
                | subprocess.CREATE_NO_WINDOW}
else:
    import fcntl

    def _lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another open file holds it; other errors are not "in use"
            return False
        return True

    def detached() -> dict[str, Any]:
        """``subprocess.Popen`` arguments for a background process that outlives its starter.

        A session of its own: the terminal's Ctrl-C and hang-up reach the
        starter's process group, not the holder.
        """
        return {"start_new_session": True}
