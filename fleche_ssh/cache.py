"""``ParamikoCache``: the stock ``SshCache``, reached through Paramiko.

``ParamikoCache`` subclasses :class:`fleche.remote.SshCache` and replaces
only its connection object.  Everything a user sees of the stock cache
(every ``BaseCache`` method, the lazy ``info`` handshake with its
version-skew warning, the ``read_only`` short-circuit, ``reconnect()``,
``close()``) is inherited unchanged, because ``SshCache`` routes all of it
through ``self._conn.call(...)``.

The connection, :class:`RemoteServer`, keeps up to ``channels`` exec
channels, each running its own ``python -m fleche remote --serve``, on the
one shared, authenticated transport of :mod:`fleche_ssh.session`.  A call
borrows an idle channel (opening one if fewer than ``channels`` are open,
else waiting), so calls from several threads run in parallel where the
stock cache serialises them.

A ``ParamikoCache`` pickles as its configuration: in another process it
connects lazily on first use, which is what lets ``fleche.wrap_executor``
carry it into process-pool workers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from fleche.remote import SshCache

from .config.options import BY_KEY, parse_ssh_options
from .config.target import Target, resolve
from .errors import ConfigError
from .prompts import Handler, Prompter, resolve_handler
from .ssh import session as sessions
from .wire.server import RemoteServer

logger = logging.getLogger("fleche_ssh")

#: Seconds a human has for the whole login, one-time code included.
DEFAULT_AUTH_TIMEOUT = 300.0


#: Keys that take one path or several.
_PATH_LISTS = ("identity_file", "known_hosts_file", "global_known_hosts_file",
               "certificate_file")

Check = tuple[Callable[[Any], bool], str]


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _path(v: Any) -> bool:
    return isinstance(v, (str, os.PathLike))


def _optional(check: Check) -> Check:
    accepts, wanted = check
    return (lambda v: v is None or accepts(v)), wanted


def _list_of(accepts: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and all(accepts(x) for x in v)


# What each key may hold.  fleche.toml can put any TOML value in any key, and a
# wrong type would otherwise surface as a TypeError deep inside connecting, or,
# for setup_commands = "one string", as one command per character.
_SCALAR: Check = (lambda v: isinstance(v, (str, int, float, os.PathLike)),
                  "a single value (text, number or yes/no)")
_KEY_TYPES: dict[str, Check] = {
    "host": (_text, "a host name or ssh_config alias (text)"),
    "python": (_text, "the remote interpreter's path or command name (text)"),
    "cache_name": _optional((_text, "a cache name (text)")),
    "workdir": _optional((_path, "a remote directory (text)")),
    "config_file": _optional((_path, "an ssh_config file path (text)")),
    "ssh_options": (_list_of(_text), "a list of strings, as on the ssh command line"),
    "setup_commands": (_list_of(_text), "a list of shell commands, one string each"),
    "prompt": ((lambda v: v is None or isinstance(v, str) or callable(v)),
               "'auto', 'none', 'module:function' or a callable"),
    "auth_timeout": ((lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                      and 0 < v < math.inf), "a number of seconds > 0"),
    "channels": ((lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                 "a whole number >= 1"),
    **{key: _optional((lambda v: _path(v) or _list_of(_path)(v), "a path or a list of paths"))
       for key in _PATH_LISTS},
}


def _check_types(cache: ParamikoCache) -> None:
    """Refuse a key whose value has the wrong type, naming the key."""
    for f in fields(cache):
        if not f.init:
            continue
        value = getattr(cache, f.name)
        accepts, wanted = _KEY_TYPES.get(f.name, _optional(_SCALAR))
        if not accepts(value):
            raise ConfigError(f"{f.name} = {value!r:.80}: expected {wanted}")


@dataclass(frozen=True)
class ParamikoCache(SshCache):
    """A remote fleche cache over a Paramiko SSH connection.

    Takes every key of the stock ``type = "ssh"`` cache with the same
    meaning (``host``, ``cache_name``, ``python``, ``ssh_options``,
    ``setup_commands``, ``workdir``), plus snake_case spellings of the
    OpenSSH keywords it honours, which beat ``ssh_options`` and
    ``~/.ssh/config``, and a few keys of its own.

    The OpenSSH keys ``hostname``, ``port``, ``user``, ``identity_file``,
    ``identities_only``, ``identity_agent``, ``known_hosts_file``,
    ``global_known_hosts_file``, ``strict_host_key_checking``,
    ``hash_known_hosts``, ``connect_timeout``, ``batch_mode``, ``proxy_jump``,
    ``proxy_command``, ``certificate_file``, ``server_alive_interval``,
    ``server_alive_count_max`` and ``compression`` mean what the keywords
    ``HostName``, ``Port``, ``User``, ``IdentityFile`` ... mean to ``ssh``
    (see the configuration reference).  The others:

    Args:
        config_file: ssh_config file to read instead of ``~/.ssh/config``
            (as ``ssh -F``).
        prompt: who answers questions: ``"auto"`` (terminal or notebook),
            ``"none"``, ``"module:function"`` or a callable
            ``handler(title, instructions, prompts) -> answers``.
        auth_timeout: seconds allowed for authenticating, typing included.
        channels: how many remote server processes (and so parallel calls)
            this cache may use at once.
    """

    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    # Path-list keys take one path or several; __post_init__ makes them tuples.
    identity_file: str | Sequence[str] | None = None
    identities_only: bool | None = None
    identity_agent: str | None = None
    known_hosts_file: str | Sequence[str] | None = None
    global_known_hosts_file: str | Sequence[str] | None = None
    strict_host_key_checking: str | None = None
    hash_known_hosts: bool | None = None
    connect_timeout: float | None = None
    batch_mode: bool | None = None
    proxy_jump: str | None = None
    proxy_command: str | None = None
    certificate_file: str | Sequence[str] | None = None
    server_alive_interval: float | None = None
    server_alive_count_max: int | None = None
    compression: bool | None = None
    config_file: str | None = None
    # Left out of repr: a handler (a partial, an object) may hold the answers it gives.
    prompt: Any = field(default="auto", repr=False)
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    channels: int = 1

    def __post_init__(self) -> None:
        _check_types(self)
        set_ = object.__setattr__
        set_(self, "ssh_options", tuple(self.ssh_options))
        set_(self, "setup_commands", tuple(self.setup_commands))
        for key in ("workdir", "config_file"):
            if getattr(self, key) is not None:
                set_(self, key, os.fspath(getattr(self, key)))
        for key in _PATH_LISTS:
            value = getattr(self, key)
            if _path(value):
                set_(self, key, (os.fspath(value),))
            elif value is not None:
                set_(self, key, tuple(os.fspath(v) for v in value))
        routes = [k for k in ("proxy_jump", "proxy_command")
                  if getattr(self, k) not in (None, "none")]
        if len(routes) == 2:
            raise ConfigError(
                "proxy_jump and proxy_command both say how to reach the host; keep one of them "
                "(ssh refuses -J together with a ProxyCommand for the same reason)."
            )
        parse_ssh_options(self.ssh_options)
        resolve_handler(self.prompt)
        set_(self, "_conn", RemoteServer(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._keys()))

    def _keys(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def config(self) -> dict[str, Any]:
        """The keys this cache was built with, those that differ from their defaults.

        A callable ``prompt`` shows as its ``"module:name"``, which is what
        fleche.toml would say, and never as the object: it may hold answers.
        """
        out = self._keys()
        if callable(out.get("prompt")):
            out["prompt"] = _name_of(out["prompt"])
        return out

    def target(self) -> Target:
        """Resolve this cache's host through ssh_config, ``ssh_options`` and its keys."""
        explicit = {key: getattr(self, key) for key in BY_KEY}
        return resolve(self.host, ssh_options=self.ssh_options, config_file=self.config_file,
                       explicit=explicit)

    def login(self, target: Target) -> sessions.Login:
        handler: Handler = resolve_handler("none" if target.batch_mode else self.prompt)
        return sessions.Login(
            prompter=Prompter(handler), auth_timeout=self.auth_timeout,
            can_ask=not target.batch_mode and self.prompt != "none",
        )


def _rebuild(cls: type[ParamikoCache], config: dict[str, Any]) -> ParamikoCache:
    return cls(**config)


def _name_of(handler: Any) -> str:
    """``module:qualname`` of a function, or of the class of any other callable."""
    named = handler if hasattr(handler, "__qualname__") else type(handler)
    return f"{getattr(named, '__module__', None)}:{named.__qualname__}"
