"""Resolve a host into one immutable connection spec, as ``ssh`` would.

Three sources set options, strongest first: the explicit snake_case keys
of the cache (``port=``, ``identity_file=`` ...), then ``ssh_options`` (the
command line of the stock ``type = "ssh"`` entry), then the ssh_config
files.  Within and across them the first value obtained wins, exactly as
in OpenSSH, so all three are fed through the same evaluation: explicit
keys and ``ssh_options`` are turned into text settings ahead of the files,
and every value, whatever its source, is parsed, defaulted and expanded
as its row of :mod:`fleche_ssh.config.options` says.

Paths expand ``~`` from ``$HOME`` (OpenSSH reads the home directory from
the password database instead); tests and unusual setups rely on that to
point fleche-ssh at a throwaway home.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .canonical import GetAddrInfo, canonicalize
from .cmdline import parse_ssh_options
from .fields import TargetFields
from .ignored import log_ignored
from .options import BY_KEY, BY_KEYWORD, OPTIONS
from .rows import COMMAND, WORDS, Option
from .sshconfig import Resolution, resolve_config
from .tokens import (
    COMMAND_TOKENS,
    CONNECTION_HASH_WITH_JUMP,
    PATH_TOKENS,
    Computed,
    Context,
    Written,
    canonical_hostname,
    expand,
    expand_hostname,
    password_user,
)
from .words import join_words, split_words

SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
#: Longest jump chain followed before it is taken for a loop.
MAX_JUMPS = 16


@dataclass(frozen=True)
class Target(TargetFields):
    """Everything needed to reach one SSH server, fully resolved.

    Frozen and hashable, so that it can key the process-wide transport pool:
    two caches whose targets are equal share one authenticated connection.
    Its fields (:class:`~fleche_ssh.config.fields.TargetFields`) are the
    option rows' ``target_field``: ``jump`` is the previous hop, for a host
    behind ``ProxyJump``, which has its own jump, and so on.
    """

    #: What the user wrote; not part of equality, so spellings of one destination share a login.
    alias: str = field(compare=False)
    #: (keyword, where it was set) pairs: which file line, key or option gave each value.
    #: Not compared: the same destination set two ways must share one pooled login.
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use: ``host``, or ``[host]:port`` off port 22.

        With a ``HostKeyAlias``, the alias alone, without a port, as ssh
        looks it up and records it.
        """
        if self.host_key_alias is not None:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def label(self) -> str:
        """``user@host:port`` as shown in messages."""
        return f"{self.user}@{self.hostname}:{self.port}"

    def chain(self) -> list[Target]:
        """The jump hosts in the order they are connected, first hop first."""
        return [*self.jump.chain(), self.jump] if self.jump is not None else []

    def describe(self) -> list[tuple[str, str]]:
        """``ssh -G``-style (keyword, value) pairs for the keywords fleche-ssh uses."""
        rows = [("host", self.alias)]
        for option in OPTIONS:
            value = getattr(self, option.target_field)
            if value is None or value == ():
                continue
            if isinstance(value, Target):
                value = ",".join(hop.label for hop in self.chain())
            elif isinstance(value, bool):
                value = "yes" if value else "no"
            elif isinstance(value, tuple):
                value = " ".join(value)
            elif isinstance(value, float):
                value = f"{value:g}"  # 15, as ssh -G prints it, not 15.0
            rows.append((option.keyword.lower(), str(value)))
        return rows


def _as_text(option: Option, value: Any) -> list[str]:
    """Turn an explicit key's Python value into ssh_config text, quoted as a file would be.

    A list gives one setting per item (``identity_file``), or one setting
    holding every item for a keyword that takes several words on one line
    (``known_hosts_file``).  A command (``proxy_command``) is kept as written.
    """
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if option.values is COMMAND:
        return [str(value)]  # a command is kept as written, as on a config line
    items = value if isinstance(value, (list, tuple)) else [value]
    words = [os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in items]
    if option.values is WORDS:
        return [join_words(words)]
    return [join_words([w]) for w in words]


def _single(resolution: Resolution, keyword: str) -> str | None:
    """The checked value of a one-word keyword obtained so far, as text."""
    texts = resolution.values.get(keyword)
    if not texts:
        return None
    return str(BY_KEYWORD[keyword].read(texts[0], resolution.sources.get(keyword, "")))


def _hostname(original: str, resolution: Resolution) -> str:
    """``HostName`` with its ``%h`` (the name as given) expanded, or the name as given."""
    text = _single(resolution, "hostname")
    if text is None:
        return original
    return expand_hostname(text, original, resolution.sources.get("hostname", ""))


def _tokens(original: str, resolution: Resolution, local_user: str,
            host: str) -> dict[str, str]:
    """OpenSSH's ``%`` tokens from what is known so far, ``%h`` being *host*."""
    port = _single(resolution, "port") or "22"
    ruser = _single(resolution, "user") or local_user
    alias = split_words(resolution.first("hostkeyalias") or "")
    local_host = socket.gethostname()
    jump = _jump_host(_single(resolution, "proxyjump"), resolution.sources.get("proxyjump", ""))
    connection = f"{local_host}{host}{port}{ruser}"
    return {
        "%": "%", "h": host, "n": original, "p": port, "r": ruser, "u": local_user,
        "d": os.path.expanduser("~"), "l": local_host, "L": local_host.split(".")[0],
        "i": str(os.getuid()) if hasattr(os, "getuid") else "0", "j": jump,
        "C": hashlib.sha1(connection.encode()).hexdigest(),
        # OpenSSH 9.6 and later hash the jump host into %C too.
        CONNECTION_HASH_WITH_JUMP: hashlib.sha1(f"{connection}{jump}".encode()).hexdigest(),
        "k": alias[0].lower() if alias else original,
    }


def _jump_host(spec: str | None, where: str) -> str:
    """``%j``: the host of the last ProxyJump hop, as ssh takes it; empty without one.

    Computed before the hops are resolved, so a malformed hop is refused here first, and
    the error names *where* the ProxyJump was set.
    """
    if not spec or spec.lower() == "none":
        return ""
    try:
        hop = _split_hop(spec.split(",")[-1].strip())[0]
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return hop.rpartition("@")[2]


def resolve(
    host: str,
    *,
    ssh_options: Sequence[str] = (),
    config_file: str | os.PathLike[str] | None = None,
    explicit: Mapping[str, Any] | None = None,
    getaddrinfo: GetAddrInfo = socket.getaddrinfo,
    _seen: tuple[str, ...] = (),
) -> Target:
    """Resolve *host* (an alias, a name or ``user@name``) into a :class:`Target`.

    Jump hosts are resolved too, each through the same config file with its
    own settings, as ``ssh -J`` resolves them.  *getaddrinfo* answers the
    lookups of ``CanonicalizeHostname``, as :func:`socket.getaddrinfo` does.

    Raises:
        ConfigError: an option value is invalid, naming where it was set, or
            the jump hosts form a loop.
    """
    if not host or host.startswith("-") or any(_unsafe(c) for c in host):
        raise ConfigError(
            f"host {host!r} is not a valid SSH destination: blanks, control characters and "
            f"the shell characters {_SHELL_CHARACTERS} are refused, as ssh refuses them."
        )
    login_user, _, alias = host.rpartition("@")
    if not alias:
        raise ConfigError(f"host {host!r} has no host name after '@'")
    command_line = parse_ssh_options(ssh_options)
    local_user = password_user()

    preset = Resolution()
    for option, value in _explicit_settings(dict(explicit or {})):
        for text in _as_text(option, value):
            preset.set(option.keyword, text, f"key {option.key}")
    for keyword, text in command_line.settings:
        preset.set(keyword, text, "ssh_options")
    if login_user:
        preset.set("User", join_words([login_user]), f"host {host!r}")

    config = config_file or command_line.config_file
    if config is not None and os.fspath(config) == "none":
        files = []  # ``ssh -F none``: no config file at all
    elif config is not None:
        given = os.fspath(config)
        path = Path(os.path.expanduser(given))
        # Not is_file(): ``-F /dev/null`` is the usual way to ignore ~/.ssh/config.
        if not given or not path.exists() or path.is_dir():
            where = "config_file" if config_file else "ssh_options -F"
            raise ConfigError(f"{where}: ssh config file {given!r} does not exist or is not a "
                              f"file")
        files = [(path, Path(os.path.expanduser("~/.ssh")))]
    else:
        files = [
            (Path(os.path.expanduser("~/.ssh/config")), Path(os.path.expanduser("~/.ssh"))),
            (SYSTEM_CONFIG, SYSTEM_CONFIG.parent),
        ]

    def hostname(so_far: Resolution) -> str:
        return _hostname(alias, so_far)

    def match_exec(command: str, so_far: Resolution, match_host: str, where: str) -> str:
        return expand(command, _tokens(alias, so_far, local_user, match_host), where,
                      "Match exec", PATH_TOKENS)

    def settle(name: str, so_far: Resolution) -> str:
        return canonicalize(name, so_far, getaddrinfo)

    resolution = resolve_config(alias, user=login_user or None, local_user=local_user,
                                files=files, preset=preset, hostname=hostname,
                                expand=match_exec, canonicalize=settle)
    log_ignored(alias, resolution)
    target = _build(alias, resolution, local_user)
    jumps = target.proxy_command is None and _single(resolution, "proxyjump")
    if not jumps or jumps.lower() == "none":
        return target
    # As ssh, which runs ``ssh -W`` with the jump spec inside its ProxyCommand.
    jumps = expand(jumps, _tokens(alias, resolution, local_user, target.hostname),
                   resolution.sources.get("proxyjump", ""), "ProxyJump", COMMAND_TOKENS)
    where = resolution.sources.get("proxyjump", "")
    try:
        jump = _resolve_jump(jumps, config, (*_seen, host), getaddrinfo)
    except ConfigError as e:
        if where in str(e):
            raise
        raise ConfigError(f"{where}: ProxyJump {jumps!r}: {e}") from None
    return replace(target, jump=jump)


#: Refused in a destination, as OpenSSH 9.6+ refuses them on its command line: %h and
#: %r put the name into ProxyCommand and Match exec, which a shell runs.
_SHELL_CHARACTERS = "'`\"$\\;&<>|(){}"


def _unsafe(c: str) -> bool:
    return c in _SHELL_CHARACTERS or c.isspace() or ord(c) < 32 or ord(c) == 127


def _resolve_jump(spec: str, config: str | os.PathLike[str] | None,
                  seen: tuple[str, ...], getaddrinfo: GetAddrInfo) -> Target:
    """The last hop of a ``ProxyJump`` list, reached through the hops before it."""
    *before, last = [hop.strip() for hop in spec.split(",")]
    if not last:
        raise ConfigError(f"ProxyJump {spec!r}: empty jump host")
    if last in seen or len(seen) > MAX_JUMPS:
        chain = " -> ".join((*seen, last))
        raise ConfigError(
            f"ProxyJump loop: {chain}. Check the ProxyJump lines of these hosts; "
            f"`ProxyJump none` on a host stops it from inheriting one."
        )
    host, port = _split_hop(last)
    explicit: dict[str, Any] = {"port": port}
    if before:
        explicit["proxy_jump"] = ",".join(before)
    return resolve(host, config_file=config, explicit=explicit, getaddrinfo=getaddrinfo,
                   _seen=seen)


def _split_hop(hop: str) -> tuple[str, int | None]:
    """``[user@]host[:port]`` or ``ssh://[user@]host[:port]`` into (``[user@]host``, port).

    An IPv6 address takes a port in brackets, ``[2001:db8::1]:2222``, as for ssh.
    """
    spec = hop.removeprefix("ssh://")
    user, at, rest = spec.rpartition("@")
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"ProxyJump: {hop!r} is not [user@]host[:port]")
        port = after[1:]
    elif rest.count(":") == 1:
        host, _, port = rest.partition(":")
    else:
        host, port = rest, ""
    try:
        number = int(port) if port else None
    except ValueError:
        raise ConfigError(f"ProxyJump: {hop!r} has an invalid port") from None
    return f"{user}{at}{host}", number


# ProxyJump names Targets of their own, which resolve() builds: see _resolve_jump.
_JUMP = BY_KEY["proxy_jump"]


def _build(alias: str, resolution: Resolution, local_user: str) -> Target:
    """The Target of *resolution*, each field as its row says; the jump hosts come after."""
    hostname = canonical_hostname(_hostname(alias, resolution))
    tokens = _tokens(alias, resolution, local_user, hostname)
    fields = {option.target_field: _value(option, resolution, tokens) for option in OPTIONS
              if option is not _JUMP}
    return Target(alias=alias, origins=tuple(sorted(resolution.sources.items())), **fields)



def _value(option: Option, resolution: Resolution, tokens: Mapping[str, str]) -> Any:
    """One option's Target value: its default if unset, else parsed and finished."""
    key = option.keyword.lower()
    context = Context(tokens, resolution.sources.get(key, ""), option.keyword)
    texts = resolution.values.get(key)
    if not texts:
        if isinstance(option.default, Computed):
            return option.default.compute(context)
        if isinstance(option.default, Written):
            return option.finish(option.default.value, context)
        return option.default
    if option.values.collects:
        parsed = tuple(option.read(text, context.where) for text in texts)
    else:
        parsed = option.read(texts[0], context.where)
    return option.finish(parsed, context)


def _explicit_settings(values: dict[str, Any]) -> Iterable[tuple[Option, Any]]:
    """Pair the snake_case cache keys that are set (not ``None``) with their options."""
    for key, value in values.items():
        if value is not None:
            yield BY_KEY[key], value
