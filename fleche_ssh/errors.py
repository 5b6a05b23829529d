"""Every error fleche-ssh raises, in one place.

Connection trouble derives from :class:`fleche.remote.RemoteConnectionError`,
so code written against the stock ``type = "ssh"`` cache keeps catching it.
Each message says what failed, names the host, key, file or line involved,
and ends with what to do about it.  Secrets never appear in a message: the
classes only ever receive host names, paths, fingerprints and method names.
"""

from __future__ import annotations

from fleche.caches import Rejected
from fleche.remote import RemoteConnectionError

__all__ = [
    "AddressInUse",
    "AuthenticationError",
    "ChangedHostKey",
    "ConfigError",
    "ConnectTimeout",
    "ConnectionLost",
    "ConnectionRefused",
    "HostKeyError",
    "HostNotFound",
    "LoginLost",
    "PromptUnavailable",
    "ProtocolError",
    "RemoteCommandError",
    "RemoteConnectionError",
    "RuntimeDirError",
    "UnknownHostKey",
    "UnsupportedByParamiko",
    "UntrustedPeer",
    "ValueTooLarge",
]


class ConfigError(ValueError):
    """A ``fleche.toml`` key, an ``ssh_options`` entry or an ssh_config line is invalid.

    A ``ValueError`` rather than a connection error: nothing was attempted,
    the configuration has to change first.
    """


class HostNotFound(RemoteConnectionError):
    """The host name does not resolve."""


class ConnectionRefused(RemoteConnectionError):
    """Nothing listens on the host's SSH port, or the network refused the connection."""


class ConnectTimeout(RemoteConnectionError):
    """A step of connecting did not finish within its time bound."""


class HostKeyError(RemoteConnectionError):
    """The server's host key could not be verified."""


class UnknownHostKey(HostKeyError):
    """The host is not in any known_hosts file and the policy refuses unknown hosts."""


class ChangedHostKey(HostKeyError):
    """known_hosts holds a different key for this host: refused whatever the policy."""


class AuthenticationError(RemoteConnectionError):
    """The server accepted none of the credentials offered."""


class PromptUnavailable(AuthenticationError):
    """The server asked a question and there is nobody to answer it."""


class LoginLost(PromptUnavailable):
    """The login was lost (a network drop, a laptop asleep) and logging in again needs an answer.

    A :class:`PromptUnavailable`, since that is what stops it: a process
    that cannot ask (``prompt = "none"``, ``batch_mode``, a batch job or a
    pool worker) could only keep working on the login it had.  The message
    names the host, why the login went, and how to keep one that such a
    process can use.
    """


class UnsupportedByParamiko(RemoteConnectionError):
    """The server requires something Paramiko cannot do (GSSAPI, ``ssh-rsa`` signatures)."""


class RemoteCommandError(RemoteConnectionError):
    """The remote command exited or failed to start (python or fleche missing, setup failed)."""


class ConnectionLost(RemoteConnectionError):
    """The connection under a call went away (network, sleep, keepalives unanswered).

    Not the remote server ending (:class:`RemoteCommandError`), nor the
    remote cache raising: only this one is retried, and only for calls that
    read (:attr:`fleche_ssh.wire.server.RemoteServer.RETRIED`).
    """


class ProtocolError(RemoteConnectionError):
    """Bytes on the channel are not fleche frames (often a start-up file writing to stdout)."""


class RuntimeDirError(RemoteConnectionError):
    """The directory for fleche-ssh's local sockets is unsafe or unusable: nothing was done."""


class AddressInUse(RemoteConnectionError):
    """A live listener of this user already holds the name: connect to it instead."""


class UntrustedPeer(RemoteConnectionError):
    """The process at the other end of a local connection did not prove it is this user."""


class ValueTooLarge(Rejected, ValueError):
    """A value pickles to more than one fleche frame can carry (4 GiB); nothing was sent.

    A :class:`fleche.caches.Rejected`, so a ``@fleche`` function whose result
    is too large still returns it, uncached, as for any cache that refuses a
    value.
    """
