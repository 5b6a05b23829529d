"""Resolve a host into one immutable connection spec, as ``ssh`` would.

Three sources set options, strongest first: the explicit snake_case keys
of the cache (``port=``, ``identity_file=`` ...), then ``ssh_options`` (the
command line of the stock ``type = "ssh"`` entry), then the ssh_config
files.  Within and across them the first value obtained wins, exactly as
in OpenSSH, so all three are fed through the same evaluation: explicit
keys and ``ssh_options`` are turned into text settings ahead of the files,
and every value, whatever its source, is parsed by the one table in
:mod:`fleche_ssh.options`.

Paths expand ``~`` from ``$HOME`` (OpenSSH reads the home directory from
the password database instead); tests and unusual setups rely on that to
point fleche-ssh at a throwaway home.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .options import (
    BY_KEYWORD,
    OPTIONS,
    Option,
    explicit_settings,
    log_ignored,
    parse_ssh_options,
    parse_value,
)
from .sshconfig import Resolution, canonical_hostname, join_words, resolve_config, split_words

SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
# OpenSSH's default identities in OpenSSH's order, less the kinds Paramiko
# cannot load (security keys, XMSS, DSA): the key ssh offers first is offered first.
DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")

_TOKEN = re.compile(r"%(.)")
#: ServerAliveInterval / ServerAliveCountMax when not configured: see liveness.py.
DEFAULT_ALIVE_INTERVAL = 15.0
DEFAULT_ALIVE_COUNT_MAX = 3
#: Longest jump chain followed before it is taken for a loop.
MAX_JUMPS = 16


@dataclass(frozen=True)
class Target:
    """Everything needed to reach one SSH server, fully resolved.

    Frozen and hashable, so that it can key the process-wide transport pool:
    two caches whose targets are equal share one authenticated connection.
    """

    #: What the user wrote; not part of equality, so spellings of one destination share a login.
    alias: str = field(compare=False)
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    identity_agent: str | None
    known_hosts_files: tuple[str, ...]
    global_known_hosts_files: tuple[str, ...]
    strict_host_key_checking: str
    hash_known_hosts: bool
    connect_timeout: float | None
    batch_mode: bool
    #: The previous hop, for a host behind ``ProxyJump``; it has its own jump, and so on.
    jump: Target | None = None
    proxy_command: str | None = None
    certificate_files: tuple[str, ...] = ()
    server_alive_interval: float = DEFAULT_ALIVE_INTERVAL
    server_alive_count_max: int = DEFAULT_ALIVE_COUNT_MAX
    compression: bool = False
    #: (keyword, where it was set) pairs: which file line, key or option gave each value.
    #: Not compared: the same destination set two ways must share one pooled login.
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use: ``host``, or ``[host]:port`` off port 22."""
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
            value = getattr(self, _FIELD.get(option.key, option.key))
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


# Target fields whose names differ from the cache key that sets them.
_FIELD = {
    "proxy_jump": "jump",
    "certificate_file": "certificate_files",
    "identity_file": "identity_files",
    "known_hosts_file": "known_hosts_files",
    "global_known_hosts_file": "global_known_hosts_files",
}


def _as_text(option: Option, value: Any) -> list[str]:
    """Turn an explicit key's Python value into ssh_config text, quoted as a file would be.

    A list gives one setting per item (``identity_file``), or one setting
    holding every item for a keyword that takes several words on one line
    (``known_hosts_file``).
    """
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    items = value if isinstance(value, (list, tuple)) else [value]
    words = [os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in items]
    if option.split:
        return [join_words(words)]
    return [join_words([w]) for w in words]


# The tokens each kind of value accepts (ssh_config(5), TOKENS); ssh refuses any other.
_HOSTNAME_TOKENS = "%h"
_COMMAND_TOKENS = "%hnpr"  # ProxyCommand, ProxyJump
_PATH_TOKENS = "%CdhikLlnpru"  # IdentityFile, CertificateFile, UserKnownHostsFile, ...
_ENV = re.compile(r"\$\{([^}]*)\}")


def _expand(text: str, tokens: Mapping[str, str], where: str, keyword: str,
            accepted: str) -> str:
    """Replace the ``%`` tokens of *text*, refusing those *keyword* does not accept."""
    def replace(found: re.Match[str]) -> str:
        letter = found.group(1)
        if letter not in accepted:
            raise ConfigError(
                f"{where}: {keyword}: unknown token %{letter} in {text!r}; {keyword} accepts "
                f"{' '.join('%' + c for c in accepted)}"
            )
        return tokens[letter]

    return _TOKEN.sub(replace, text)


def _expand_env(text: str, where: str, keyword: str) -> str:
    """``${NAME}`` from the environment, as ssh does in paths (a bare ``$NAME`` stays as is)."""
    def replace(found: re.Match[str]) -> str:
        value = os.environ.get(found.group(1))
        if value is None:
            raise ConfigError(
                f"{where}: {keyword}: environment variable {found.group(1)} is not set "
                f"(in {text!r})"
            )
        return value

    return _ENV.sub(replace, text)


def _expand_path(text: str, tokens: Mapping[str, str], where: str, keyword: str) -> str:
    """A path as ssh expands it: ``~`` first, then ``${NAME}``, then ``%`` tokens."""
    expanded = _expand_env(os.path.expanduser(text), where, keyword)
    return _expand(expanded, tokens, where, keyword, _PATH_TOKENS)


def _single(resolution: Resolution, keyword: str) -> str | None:
    """The checked value of a one-word keyword obtained so far, as text."""
    texts = resolution.values.get(keyword)
    if not texts:
        return None
    return str(parse_value(BY_KEYWORD[keyword], texts[0], resolution.sources.get(keyword, "")))


def _hostname(original: str, resolution: Resolution) -> str:
    """``HostName`` with its ``%h`` (the name as given) expanded, or the name as given."""
    text = _single(resolution, "hostname")
    if text is None:
        return original
    where = resolution.sources.get("hostname", "")
    return _expand(text, {"h": original, "%": "%"}, where, "HostName", _HOSTNAME_TOKENS)


def _tokens(original: str, resolution: Resolution, local_user: str,
            host: str) -> dict[str, str]:
    """OpenSSH's ``%`` tokens from what is known so far, ``%h`` being *host*."""
    port = _single(resolution, "port") or "22"
    ruser = _single(resolution, "user") or local_user
    alias = split_words(resolution.first("hostkeyalias") or "")
    local_host = socket.gethostname()
    connection_hash = hashlib.sha1(f"{local_host}{host}{port}{ruser}".encode()).hexdigest()
    return {
        "%": "%", "h": host, "n": original, "p": port, "r": ruser, "u": local_user,
        "d": os.path.expanduser("~"), "l": local_host, "L": local_host.split(".")[0],
        "i": str(os.getuid()) if hasattr(os, "getuid") else "0", "C": connection_hash,
        "k": alias[0].lower() if alias else original,
    }


def resolve(
    host: str,
    *,
    ssh_options: Sequence[str] = (),
    config_file: str | os.PathLike[str] | None = None,
    explicit: Mapping[str, Any] | None = None,
    _seen: tuple[str, ...] = (),
) -> Target:
    """Resolve *host* (an alias, a name or ``user@name``) into a :class:`Target`.

    Jump hosts are resolved too, each through the same config file with its
    own settings, as ``ssh -J`` resolves them.

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
    local_user = getpass.getuser()

    preset = Resolution()
    for option, value in explicit_settings(dict(explicit or {})):
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
        path = Path(os.path.expanduser(os.fspath(config)))
        # Not is_file(): ``-F /dev/null`` is the usual way to ignore ~/.ssh/config.
        if not path.exists() or path.is_dir():
            raise ConfigError(f"ssh config file {str(path)!r} does not exist or is not a file")
        files = [(path, Path(os.path.expanduser("~/.ssh")))]
    else:
        files = [
            (Path(os.path.expanduser("~/.ssh/config")), Path(os.path.expanduser("~/.ssh"))),
            (SYSTEM_CONFIG, SYSTEM_CONFIG.parent),
        ]

    def hostname(so_far: Resolution) -> str:
        return _hostname(alias, so_far)

    def expand(command: str, so_far: Resolution, match_host: str) -> str:
        return _expand(command, _tokens(alias, so_far, local_user, match_host), "Match exec",
                       "Match exec", _PATH_TOKENS)

    resolution = resolve_config(alias, user=login_user or None, files=files, preset=preset,
                                hostname=hostname, expand=expand)
    log_ignored(alias, resolution)
    target = _build(alias, resolution, local_user)
    jumps = target.proxy_command is None and _single(resolution, "proxyjump")
    if not jumps or jumps.lower() == "none":
        return target
    # As ssh, which runs ``ssh -W`` with the jump spec inside its ProxyCommand.
    jumps = _expand(jumps, _tokens(alias, resolution, local_user, target.hostname),
                    resolution.sources.get("proxyjump", ""), "ProxyJump", _COMMAND_TOKENS)
    return replace(target, jump=_resolve_jump(jumps, config, (*_seen, host)))


#: Refused in a destination, as OpenSSH 9.6+ refuses them on its command line: %h and
#: %r put the name into ProxyCommand and Match exec, which a shell runs.
_SHELL_CHARACTERS = "'`\"$\\;&<>|(){}"


def _unsafe(c: str) -> bool:
    return c in _SHELL_CHARACTERS or c.isspace() or ord(c) < 32 or ord(c) == 127


def _resolve_jump(spec: str, config: str | os.PathLike[str] | None,
                  seen: tuple[str, ...]) -> Target:
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
    return resolve(host, config_file=config, explicit=explicit, _seen=seen)


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


def _build(alias: str, resolution: Resolution, local_user: str) -> Target:
    hostname = canonical_hostname(_hostname(alias, resolution))
    tokens = _tokens(alias, resolution, local_user, hostname)

    def value(key: str, default: Any = None) -> Any:
        option = BY_KEYWORD[key]
        texts = resolution.values.get(key)
        if not texts:
            return default
        where = resolution.sources.get(key, "")
        if option.many:
            return tuple(_expand_path(parse_value(option, t, where), tokens, where,
                                      option.keyword) for t in texts)
        return parse_value(option, texts[0], where)

    def paths(key: str, default: tuple[str, ...], expand: bool = True) -> tuple[str, ...]:
        """A known_hosts list; ``none`` means no file at all."""
        where = resolution.sources.get(key, "")
        raw = value(key) or default
        if raw[0].lower() == "none":
            return ()
        if not expand:  # GlobalKnownHostsFile: ssh expands ``~`` only
            return tuple(os.path.expanduser(p) for p in raw)
        return tuple(_expand_path(p, tokens, where, BY_KEYWORD[key].keyword) for p in raw)

    agent = value("identityagent")
    interval = value("serveraliveinterval", DEFAULT_ALIVE_INTERVAL)
    return Target(
        alias=alias,
        hostname=hostname,
        port=value("port", 22),
        user=value("user", local_user),
        identity_files=value("identityfile") or tuple(os.path.expanduser(p)
                                                      for p in DEFAULT_IDENTITIES),
        identities_only=value("identitiesonly", False),
        identity_agent=None if agent is None else _expand_path(
            agent, tokens, resolution.sources.get("identityagent", ""), "IdentityAgent"),
        known_hosts_files=paths("userknownhostsfile", DEFAULT_KNOWN_HOSTS),
        global_known_hosts_files=paths("globalknownhostsfile", DEFAULT_GLOBAL_KNOWN_HOSTS,
                                       expand=False),
        strict_host_key_checking=value("stricthostkeychecking", "ask"),
        hash_known_hosts=value("hashknownhosts", False),
        connect_timeout=value("connecttimeout"),
        batch_mode=value("batchmode", False),
        proxy_command=_proxy_command(value("proxycommand"), tokens,
                                     resolution.sources.get("proxycommand", "")),
        certificate_files=value("certificatefile") or (),
        # ``none`` turns keepalives off, as ssh reads it.
        server_alive_interval=0.0 if interval is None else interval,
        server_alive_count_max=value("serveralivecountmax", DEFAULT_ALIVE_COUNT_MAX),
        compression=value("compression", False),
        origins=tuple(sorted(resolution.sources.items())),
    )


def _proxy_command(command: str | None, tokens: Mapping[str, str], where: str) -> str | None:
    if command is None or command.lower() == "none":
        return None
    return _expand(command, tokens, where, "ProxyCommand", _COMMAND_TOKENS)
