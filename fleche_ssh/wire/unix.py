"""Local UNIX sockets whose other end must be this user: the checks, in one place to audit.

A socket path alone proves little.  A path in a shared directory can be a
symlink to someone else's socket, or a socket someone else created first
and now listens on, waiting to collect what a client sends it.  So a
client here trusts a socket only when both hold:

* before connecting, ``lstat`` shows a socket (not a symlink, not a file)
  owned by this user;
* after connecting, the kernel's word on who is listening
  (``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` on macOS and the BSDs) is
  this user too.  The path check alone is racy; this one is not.

A socket that does not exist, or whose listener is gone (``ECONNREFUSED``,
a stale socket left by a killed process), gives None: callers treat that
as "nothing there" and carry on without it.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct

from ..errors import RemoteConnectionError


class UntrustedSocket(RemoteConnectionError):
    """A local socket is not this user's: refused before anything is sent over it."""


#: errno values meaning "no listener": the path is missing, or a stale socket.
_NOTHING_THERE = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR})


def check_owned(path: str) -> None:
    """Refuse *path* unless it is a socket (not a symlink) owned by this user."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedSocket(
            f"{path} is a symlink, not a socket: fleche-ssh does not follow links to control "
            f"sockets. Point ControlPath at the socket itself."
        )
    if not stat.S_ISSOCK(info.st_mode):
        raise UntrustedSocket(f"{path} is not a socket. Check ControlPath.")
    if info.st_uid != os.getuid():
        raise UntrustedSocket(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}): refused. "
            f"Someone else's socket could collect what is sent over it; remove it, or point "
            f"ControlPath at a directory only you can write."
        )


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected UNIX socket, as the kernel says."""
    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid, uid, gid}
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", raw)[1]
    if hasattr(socket, "LOCAL_PEERCRED"):  # macOS, BSD: struct xucred {version, uid, ...}
        raw = sock.getsockopt(0, socket.LOCAL_PEERCRED, struct.calcsize("2I") + 16 * 4 + 4)
        return struct.unpack_from("2I", raw)[1]
    raise UntrustedSocket("this system cannot tell who listens on a UNIX socket")


def connect_owned(path: str, timeout: float) -> socket.socket | None:
    """A connection to this user's socket at *path*; None if nothing listens there.

    Raises:
        UntrustedSocket: the socket, or the process listening on it, is not this user's.
    """
    try:
        check_owned(path)
    except FileNotFoundError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        if e.errno in _NOTHING_THERE:
            return None
        raise
    try:
        uid = peer_uid(sock)
    except BaseException:
        sock.close()
        raise
    if uid != os.getuid():
        sock.close()
        raise UntrustedSocket(
            f"the process listening on {path} runs as uid {uid}, not as you (uid "
            f"{os.getuid()}): refused before anything was sent. Remove the socket."
        )
    return sock
