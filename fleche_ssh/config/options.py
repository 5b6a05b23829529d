"""The OpenSSH keywords fleche-ssh understands, as one table.

Every way of setting an option ends up here: a line of ``~/.ssh/config``,
an ``-o Keyword=value`` (or ``-p``, ``-l``, ``-i`` ...) in ``ssh_options``,
and a snake_case key of :class:`~fleche_ssh.ParamikoCache`.  The table says,
for each OpenSSH keyword, which key mirrors it, how its text is parsed and
whether it takes one value or collects several.  Nothing else in the package
spells out a keyword, so adding one is adding a row.

Keywords OpenSSH knows but fleche-ssh need not act on (connection sharing,
terminal and forwarding settings) are listed in :data:`NOT_NEEDED`: they are
accepted and logged at debug level.  Any other keyword in ``ssh_options``
is refused with an error naming it.  In an ssh_config file it is ignored,
so that files shared with ``ssh`` and other programs keep working, with a
log line naming it and its file and line (:func:`log_ignored`): at debug
level, or, for the keywords of :data:`UNHONOURED` that make ``ssh`` connect
elsewhere, trust other host keys or negotiate differently, at warning or
info level, saying what ``ssh`` would have done.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .sshconfig import COMMANDS, Resolution, join_words, split_words

logger = logging.getLogger("fleche_ssh.options")

_TRUE = frozenset({"yes", "true", "on", "1"})
_FALSE = frozenset({"no", "false", "off", "0"})


def _flag(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME = re.compile(r"(\d+)([smhdw]?)")


def _seconds(text: str) -> float | None:
    """A time as OpenSSH writes it (``30``, ``1m``, ``1h30m``, ``none``), or a decimal.

    ``none`` means "no value", so the default applies.  Decimals are
    accepted too, because Python callers pass ``connect_timeout=2.5``.
    """
    word = text.strip().lower()
    if word == "none":
        return None
    parts = _TIME.findall(word)
    if parts and "".join(n + u for n, u in parts) == word:
        return float(sum(int(n) * _TIME_UNITS[u] for n, u in parts))
    try:
        value = float(word)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"expected seconds (as 30, 1m or 1h30m) or none, got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(f"expected a port between 1 and 65535, got {text!r}")
    return value


def _choice(*words: str, aliases: dict[str, str] | None = None) -> Callable[[str], str]:
    allowed = {w: w for w in words} | (aliases or {})

    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in allowed:
            raise ValueError(f"expected one of {', '.join(words)}, got {text!r}")
        return allowed[word]

    return parse


def _text(text: str) -> str:
    return text


@dataclass(frozen=True)
class Option:
    """One OpenSSH keyword and the :class:`ParamikoCache` key that mirrors it.

    ``parse`` turns one word of a value into the Python value.  A value is
    one word (quoted if it holds blanks), except for ``split`` options, which
    take several on one line (``UserKnownHostsFile a "b c"``) and give a
    tuple.  ``many`` options collect every value given, in order, across all
    sources (OpenSSH does this for ``IdentityFile`` and ``CertificateFile``);
    the others keep the first value obtained.
    """

    keyword: str
    key: str
    parse: Callable[[str], Any] = _text
    many: bool = False
    split: bool = False
    #: The value is a shell command, taken as written rather than as words.
    command: bool = False
    doc: str = ""


OPTIONS: tuple[Option, ...] = (
    Option("HostName", "hostname", doc="Real host name or address to connect to."),
    Option("User", "user", doc="Remote user name."),
    Option("Port", "port", _port, doc="Remote SSH port."),
    Option("IdentityFile", "identity_file", many=True,
           doc="Private key file(s) to offer, in order."),
    Option("IdentitiesOnly", "identities_only", _flag,
           doc="Offer only the configured identity files, not every agent key."),
    Option("IdentityAgent", "identity_agent",
           doc="Agent socket path, or ``none`` to use no agent."),
    Option("UserKnownHostsFile", "known_hosts_file", split=True,
           doc="known_hosts file(s) to read and to record new hosts in."),
    Option("GlobalKnownHostsFile", "global_known_hosts_file", split=True,
           doc="System-wide known_hosts file(s), read only."),
    Option("StrictHostKeyChecking", "strict_host_key_checking",
           _choice("yes", "ask", "accept-new", "no", aliases={"off": "no", "true": "yes",
                                                             "false": "no"}),
           doc="What to do with an unknown host key: yes, ask, accept-new or no."),
    Option("HashKnownHosts", "hash_known_hosts", _flag,
           doc="Record new hosts in hashed form."),
    Option("ConnectTimeout", "connect_timeout", _seconds,
           doc="Seconds to wait for the TCP connection and the SSH handshake."),
    Option("BatchMode", "batch_mode", _flag,
           doc="Never ask a human anything (as the ``none`` prompt handler)."),
    Option("ProxyJump", "proxy_jump",
           doc="Jump host(s) to go through, ``[user@]host[:port]`` separated by commas, "
               "or ``none``."),
    Option("ProxyCommand", "proxy_command", command=True,
           doc="Command whose stdin/stdout carry the connection (tokens %h %p %r %n), "
               "or ``none``."),
    Option("CertificateFile", "certificate_file", many=True,
           doc="User certificate(s) to present with the matching identity."),
    Option("ServerAliveInterval", "server_alive_interval", _seconds,
           doc="Seconds between keepalive requests that expect an answer (0: off)."),
    Option("ServerAliveCountMax", "server_alive_count_max", _count,
           doc="Unanswered keepalive intervals before the connection is declared dead."),
    Option("Compression", "compression", _flag, doc="Compress the connection (slow links)."),
)

BY_KEYWORD: dict[str, Option] = {o.keyword.lower(): o for o in OPTIONS}
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}

# Keywords that only matter to the ssh binary: connection sharing, which the
# process-wide transport pool replaces, and terminal or forwarding settings
# that a cache channel never uses.
NOT_NEEDED_KEYWORDS: tuple[str, ...] = (
    "ControlMaster", "ControlPath", "ControlPersist", "RequestTTY", "ForwardX11",
    "ForwardX11Trusted", "ForwardAgent", "LogLevel", "EscapeChar", "ExitOnForwardFailure",
    "ClearAllForwardings", "VisualHostKey", "UpdateHostKeys", "SessionType", "StdinNull",
    "ForkAfterAuthentication",
)
NOT_NEEDED = frozenset(k.lower() for k in NOT_NEEDED_KEYWORDS)

@dataclass(frozen=True)
class Unhonoured:
    """An ssh_config keyword fleche-ssh ignores although ``ssh`` would act differently.

    A user whose ``ssh host`` works while fleche-ssh fails, or reaches
    another machine, finds the reason in the log line this row gives.
    ``same`` lists the values that ask for what fleche-ssh does anyway,
    which are only logged at debug level.
    """

    keyword: str
    #: What ssh does with the keyword, completing "ignored; ...".
    effect: str
    level: int = logging.WARNING
    same: frozenset[str] = frozenset()


_NO = frozenset({"no", "false"})
_YES = frozenset({"yes", "true"})
_ALGORITHMS = "ssh would offer only (or also) the algorithms listed"

UNHONOURED: tuple[Unhonoured, ...] = (
    # Where ssh connects to, and from.
    Unhonoured("AddressFamily", "ssh would connect over IPv4 only (inet) or IPv6 only (inet6)",
               same=frozenset({"any"})),
    Unhonoured("BindAddress", "ssh would connect from this local address"),
    Unhonoured("BindInterface", "ssh would connect from the address of this interface"),
    Unhonoured("CanonicalizeHostname",
               "ssh would try the name with each CanonicalDomains suffix and connect to the "
               "first that resolves (fleche-ssh applies Match canonical blocks, but connects to "
               "the name as written)", same=_NO),
    Unhonoured("ProxyUseFdpass",
               "ssh would take a connected socket from the ProxyCommand instead of its output",
               same=_NO),
    # Which host keys ssh trusts.
    Unhonoured("HostKeyAlias", "ssh would look the host key up in known_hosts under this name"),
    Unhonoured("KnownHostsCommand", "ssh would also trust the host keys this command prints"),
    Unhonoured("RevokedHostKeys", "ssh would refuse the host keys listed in this file"),
    Unhonoured("VerifyHostKeyDNS", "ssh would trust host keys published in DNS (SSHFP)",
               same=_NO),
    # How ssh logs in.
    Unhonoured("PKCS11Provider", "ssh would use keys held on a smart card or token",
               same=frozenset({"none"})),
    Unhonoured("GSSAPIAuthentication", "ssh would also log in with a Kerberos ticket",
               logging.INFO, same=_NO),
    Unhonoured("HostbasedAuthentication", "ssh would also log in as this machine",
               logging.INFO, same=_NO),
    Unhonoured("PreferredAuthentications", "ssh would try the login methods in this order",
               logging.INFO),
    *(Unhonoured(keyword, "ssh would not try this login method", logging.INFO, same=_YES)
      for keyword in ("PubkeyAuthentication", "PasswordAuthentication",
                      "KbdInteractiveAuthentication", "ChallengeResponseAuthentication")),
    # What ssh negotiates.
    *(Unhonoured(keyword, _ALGORITHMS, logging.INFO)
      for keyword in ("Ciphers", "MACs", "KexAlgorithms", "HostKeyAlgorithms",
                      "PubkeyAcceptedAlgorithms", "PubkeyAcceptedKeyTypes",
                      "CASignatureAlgorithms")),
    Unhonoured("ConnectionAttempts", "ssh would try to connect this many times", logging.INFO,
               same=frozenset({"1"})),
    Unhonoured("TCPKeepAlive", "ssh would not turn TCP keepalive on", logging.INFO, same=_YES),
    Unhonoured("CheckHostIP", "ssh would also check the host's address in known_hosts",
               logging.INFO, same=_NO),
)

UNHONOURED_BY_KEYWORD: dict[str, Unhonoured] = {u.keyword.lower(): u for u in UNHONOURED}
# ssh_config's own structure, which is never a setting.
_STRUCTURE = frozenset({"host", "match", "include"})


def log_ignored(host: str, resolution: Resolution) -> None:
    """Log each keyword that applied to *host* but that fleche-ssh does not act on, once.

    The line names the keyword, its value where it matters, and the file
    and line it came from (the first, for a keyword given several times).
    """
    for key, where in resolution.sources.items():
        if key in BY_KEYWORD or key in _STRUCTURE:
            continue
        keyword = resolution.spellings.get(key, key)
        value = resolution.first(key) or ""
        row = UNHONOURED_BY_KEYWORD.get(key)
        if key in NOT_NEEDED:
            logger.debug("ssh config for %s: %s: %s is not needed by fleche-ssh, ignored",
                         host, where, keyword)
        elif row is not None and value.lower() not in row.same:
            logger.log(row.level, "ssh config for %s: %s: %s %s is not supported by fleche-ssh, "
                       "ignored; %s", host, where, keyword, value, row.effect)
        else:
            logger.debug("ssh config for %s: %s: %s is not supported by fleche-ssh, ignored",
                         host, where, keyword)


# Command-line flags that take a value, mapped to the keyword they set.
_VALUE_FLAGS: dict[str, str] = {"-p": "Port", "-l": "User", "-i": "IdentityFile",
                                "-J": "ProxyJump"}
# Flags without a value that set a keyword.
_SET_FLAGS: dict[str, tuple[str, str]] = {"-C": ("Compression", "yes")}
# Flags without a value that change nothing for a cache channel.
_NOOP_FLAGS = frozenset({"-T", "-x", "-a", "-q", "-n", "-4", "-6"})


def parse_value(option: Option, text: str, where: str) -> Any:
    """Parse *text* for *option*, or raise :class:`ConfigError` naming *where* it came from.

    Like ssh, refuses extra words after a one-word value (``User alice bob``)
    rather than guess which one was meant.
    """
    try:
        if option.command:
            if not text.strip():
                raise ValueError("no value given")
            return option.parse(text.strip())
        words = split_words(text)
        if not words:
            raise ValueError("no value given")
        if option.split:
            return tuple(option.parse(w) for w in words)
        if len(words) > 1:
            raise ValueError(f"expected one value (quote it if it has blanks), got {text!r}")
        return option.parse(words[0])
    except ValueError as e:
        raise ConfigError(f"{where}: {option.keyword}: {e}") from None


def split_option(text: str, where: str) -> tuple[str, str]:
    """Split ``Keyword=value`` or ``Keyword value`` as ``ssh -o`` does."""
    text = text.strip()
    for i, ch in enumerate(text):
        if ch in "= \t":
            keyword, value = text[:i], text[i + 1 :].strip().lstrip("=").strip()
            if keyword and value:
                return keyword, value
            break
    raise ConfigError(f"{where}: expected Keyword=value, got {text!r}")


@dataclass(frozen=True)
class CommandLine:
    """What ``ssh_options`` said: the keyword settings and an extra config file."""

    settings: tuple[tuple[str, str], ...] = ()
    config_file: str | None = None


def parse_ssh_options(argv: Sequence[str]) -> CommandLine:
    """Translate the ``ssh_options`` of a ``type = "ssh"`` entry.

    Understands ``-p``, ``-l``, ``-i``, ``-J``, ``-F``, ``-o Keyword=value``
    (also glued, as ``-oKeyword=value`` and ``-p2222``), ``-C`` and the
    value-less flags in :data:`_NOOP_FLAGS`.  Returns ``(keyword, value)`` pairs in the order given;
    the caller applies them with first-value-wins, like ssh does.  Anything
    it does not understand raises :class:`ConfigError` naming the option,
    because dropping an option the user wrote could connect them somewhere
    they did not ask for.
    """
    settings: list[tuple[str, str]] = []
    config_file: str | None = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = str(args[i])
        flag, glued = arg[:2], arg[2:]
        if flag in _NOOP_FLAGS and not glued:
            logger.debug("ssh_options: %s has no effect on a cache channel", arg)
            i += 1
            continue
        if flag in _SET_FLAGS and not glued:
            settings.append(_SET_FLAGS[flag])
            i += 1
            continue
        if flag not in ("-o", "-F", *_VALUE_FLAGS) or not arg.startswith("-"):
            raise ConfigError(
                f"ssh_options: {arg!r} is not supported by fleche-ssh. Supported: -p, -l, -i, "
                f"-J, -C, -F, -o Keyword=value for {', '.join(o.keyword for o in OPTIONS)}."
            )
        if glued:
            value = glued
        elif i + 1 < len(args):
            i += 1
            value = str(args[i])
        else:
            raise ConfigError(f"ssh_options: {flag} needs a value")
        if flag == "-F":
            config_file = value
        elif flag == "-o":
            keyword, text = split_option(value, "ssh_options -o")
            try:
                if keyword.lower() not in COMMANDS:
                    split_words(text)
            except ValueError as e:
                raise ConfigError(f"ssh_options: -o {keyword}: {e}") from None
            if keyword.lower() in NOT_NEEDED:
                logger.debug("ssh_options: %s is not needed by fleche-ssh", keyword)
            elif keyword.lower() not in BY_KEYWORD:
                raise ConfigError(
                    f"ssh_options: -o {keyword} is not supported by fleche-ssh. Remove it, or "
                    f"use one of: {', '.join(o.keyword for o in OPTIONS)}."
                )
            else:
                settings.append((BY_KEYWORD[keyword.lower()].keyword, text))
        else:
            if flag == "-J":
                _check_one_proxy(settings)
            # One argv element is one word, blanks and all.
            settings.append((_VALUE_FLAGS[flag], join_words([value])))
        i += 1
    return CommandLine(tuple(settings), config_file)


def _check_one_proxy(settings: list[tuple[str, str]]) -> None:
    """Refuse ``-J`` after another ProxyJump or a ProxyCommand, as ssh does.

    In files and ``-o`` the first of the two keywords silently wins; ssh
    treats a ``-J`` that would lose as a mistake, and so does fleche-ssh.
    """
    given = {keyword for keyword, _ in settings}
    if "ProxyJump" in given:
        raise ConfigError("ssh_options: only one -J (or -o ProxyJump) is allowed; list several "
                          "jump hosts in one, separated by commas.")
    if "ProxyCommand" in given:
        raise ConfigError("ssh_options: -J cannot be combined with -o ProxyCommand; use one of "
                          "them.")


def explicit_settings(values: dict[str, Any]) -> Iterable[tuple[Option, Any]]:
    """Pair the snake_case cache keys that are set (not ``None``) with their options."""
    for key, value in values.items():
        if value is not None:
            yield BY_KEY[key], value
