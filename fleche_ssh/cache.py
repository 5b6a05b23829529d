"""``ParamikoCache``: the stock ``SshCache``, reached through Paramiko.

``ParamikoCache`` subclasses :class:`fleche.remote.SshCache` and replaces
only its connection object.  Everything a user sees of the stock cache
(every ``BaseCache`` method, the lazy ``info`` handshake with its
version-skew warning, the ``read_only`` short-circuit, ``reconnect()``,
``close()``) is inherited unchanged, because ``SshCache`` routes all of it
through ``self._conn.call(...)``.

The connection, :class:`RemoteServer`, keeps up to ``channels`` exec
channels, each running its own ``python -m fleche remote --serve``, on the
one shared, authenticated transport of :mod:`fleche_ssh.ssh.pool`.  A call
borrows an idle channel (opening one if fewer than ``channels`` are open,
else waiting), so calls from several threads run in parallel where the
stock cache serialises them.

A ``ParamikoCache`` pickles as its configuration: in another process it
connects lazily on first use, which is what lets ``fleche.wrap_executor``
carry it into process-pool workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

from .config.cmdline import parse_ssh_options
from .config.fields import CacheFields
from .config.options import BY_KEY, KEYS
from .config.target import Target, resolve
from .errors import ConfigError
from .progress import resolve_progress
from .prompts import Handler, Prompter, resolve_handler
from .ssh import session as sessions
from .wire.server import RemoteServer

logger = logging.getLogger("fleche_ssh")


@dataclass(frozen=True)
class ParamikoCache(CacheFields):
    """A remote fleche cache over a Paramiko SSH connection.

    Takes every key of the stock ``type = "ssh"`` cache with the same
    meaning (``host``, ``cache_name``, ``python``, ``ssh_options``,
    ``setup_commands``, ``workdir``), plus snake_case spellings of the
    OpenSSH keywords it honours (``port`` for ``Port`` ...), which beat
    ``ssh_options`` and ``~/.ssh/config``, and a few keys of its own
    (``config_file``, ``prompt``, ``auth_timeout``, ``channels``, ``progress``).

    Every key is a row of :mod:`fleche_ssh.config.options`, which gives its
    field (:class:`~fleche_ssh.config.fields.CacheFields`), what a value of
    it may be, and its documentation: the configuration reference lists
    them all.  A callable ``prompt`` is called as
    ``handler(title, instructions, prompts) -> answers``, a callable
    ``progress`` as ``report(direction, bytes_done, total)``.
    """

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name, value in _checked(self):
            set_(self, name, value)
        routes = [k for k in ("proxy_jump", "proxy_command")
                  if getattr(self, k) not in (None, "none")]
        if len(routes) == 2:
            raise ConfigError(
                "proxy_jump and proxy_command both say how to reach the host; keep one of them "
                "(ssh refuses -J together with a ProxyCommand for the same reason)."
            )
        parse_ssh_options(self.ssh_options)
        resolve_handler(self.prompt)
        resolve_progress(self.progress)
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

        A callable ``prompt`` or ``progress`` shows as its ``"module:name"``,
        which is what fleche.toml would say, and never as the object: it may
        hold answers.
        """
        out = self._keys()
        for key in ("prompt", "progress"):
            if callable(out.get(key)):
                out[key] = _name_of(out[key])
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


def _checked(cache: ParamikoCache) -> list[tuple[str, Any]]:
    """Each key's value as the cache keeps it, or :class:`ConfigError` for a wrong type.

    The error names the key; what it expected is the row's ``check``.
    """
    out = []
    for f in fields(cache):
        if not f.init:
            continue
        value = getattr(cache, f.name)
        check = KEYS[f.name].check
        if not check.accepts(value):
            raise ConfigError(f"{f.name} = {value!r:.80}: expected {check.wanted}")
        out.append((f.name, check.store(value)))
    return out


def _rebuild(cls: type[ParamikoCache], config: dict[str, Any]) -> ParamikoCache:
    return cls(**config)


def _name_of(handler: Any) -> str:
    """``module:qualname`` of a function, or of the class of any other callable."""
    named = handler if hasattr(handler, "__qualname__") else type(handler)
    return f"{getattr(named, '__module__', None)}:{named.__qualname__}"
