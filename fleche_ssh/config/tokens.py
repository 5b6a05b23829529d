"""``%`` tokens, ``~`` and ``${NAME}``: what a parsed option becomes in a Target.

The option table names, for each keyword, a *finish* function from here:
how its parsed value is expanded once the destination is known (a path
gets ``~``, then ``${NAME}``, then ``%`` tokens, as ssh expands it; a
command gets the tokens a command accepts).  Each finish function takes
the value and a :class:`Context`: the tokens of this resolution, the file
and line the value came from, and its keyword, for the message when a
token is refused.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .words import join_words, split_words

_TOKEN = re.compile(r"%(.)")
_ENV = re.compile(r"\$\{([^}]*)\}")
# The tokens each kind of value accepts (ssh_config(5), TOKENS); ssh refuses any other.
HOSTNAME_TOKENS = "%h"
COMMAND_TOKENS = "%hnpr"  # ProxyCommand, ProxyJump
PATH_TOKENS = "%CdhikLlnpru"  # IdentityFile, CertificateFile, UserKnownHostsFile, ...
CONTROL_PATH_TOKENS = PATH_TOKENS + "j"
#: The tokens a KnownHostsCommand accepts besides a path's: they describe the host key.
KNOWN_HOSTS_COMMAND_TOKENS = "fHIKt"
#: The tokens' key for ``%C`` as OpenSSH 9.6 and later compute it, the jump host hashed in.
CONNECTION_HASH_WITH_JUMP = "C+j"


def canonical_hostname(name: str) -> str:
    """The host name as ssh settles on it: an address in canonical form, a name lowercased.

    ssh connects to, looks up in known_hosts, and hashes into ``%C`` this
    form, and its ``Match final`` pass tests it.
    """
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def expand(text: str, tokens: Mapping[str, str], where: str, keyword: str,
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


def expand_path(text: str, tokens: Mapping[str, str], where: str, keyword: str) -> str:
    """A path as ssh expands it: ``~`` first, then ``${NAME}``, then ``%`` tokens."""
    expanded = _expand_env(os.path.expanduser(text), where, keyword)
    return expand(expanded, tokens, where, keyword, PATH_TOKENS)


def expand_hostname(text: str, original: str, where: str) -> str:
    """``HostName`` with its one token, ``%h``, being the name as given."""
    return expand(text, {"h": original, "%": "%"}, where, "HostName", HOSTNAME_TOKENS)


@dataclass(frozen=True)
class Context:
    """What finishing one option's value needs.

    ``tokens`` are OpenSSH's ``%`` tokens for this destination (``%n`` the
    name as given, ``%u`` the local user); ``where`` is the file and line,
    key or option that set the value, empty when nothing did.
    """

    tokens: Mapping[str, str]
    where: str
    keyword: str


Finish = Callable[[Any, Context], Any]


def as_is(value: Any, context: Context) -> Any:
    return value


def path(value: str, context: Context) -> str:
    return expand_path(value, context.tokens, context.where, context.keyword)


def paths(value: tuple[str, ...], context: Context) -> tuple[str, ...]:
    return tuple(path(p, context) for p in value)


def path_list(value: tuple[str, ...], context: Context) -> tuple[str, ...]:
    """Paths on one line; ``none`` means no file at all."""
    return () if value[0].lower() == "none" else paths(value, context)


def home_path_list(value: tuple[str, ...], context: Context) -> tuple[str, ...]:
    """As :func:`path_list`, expanding ``~`` only, as ssh does for ``GlobalKnownHostsFile``."""
    return () if value[0].lower() == "none" else tuple(os.path.expanduser(p) for p in value)


def no_words(value: tuple[str, ...], context: Context) -> tuple[str, ...]:
    """Words on one line, ``none`` meaning none at all."""
    return () if value[0].lower() == "none" else value


def lowercase(value: str, context: Context) -> str:
    """A name as ssh keeps it: ``HostKeyAlias`` is lowercased, as host names are."""
    return value.lower()


def home_path(value: str, context: Context) -> str:
    """A path with ``~`` expanded and no tokens, as ssh 9 reads ``RevokedHostKeys``."""
    return os.path.expanduser(value)


def known_hosts_command(value: str, context: Context) -> str | None:
    """A ``KnownHostsCommand``: the tokens known now expanded, those of the host key kept.

    As ssh, the command is split into words first and the words after the
    program are expanded; ``%f``, ``%K``, ``%t`` (the host key) and ``%H``,
    ``%I`` (what is looked up) stay, with ``%%``, for
    :func:`expand_known_hosts_command` when the key is there.  A token a
    path does not accept is refused here, naming the line.  The words are
    joined again (quoted where needed), so that splitting gives them back.
    ``none`` means no command.
    """
    if value.lower() == "none":
        return None
    try:
        program, *words = split_words(value)
    except ValueError as e:
        raise ConfigError(f"{context.where}: {context.keyword}: {e}") from None
    now = {letter: text.replace("%", "%%") for letter, text in context.tokens.items()}
    kept = {letter: f"%{letter}" for letter in KNOWN_HOSTS_COMMAND_TOKENS + "%"}
    accepted = PATH_TOKENS + KNOWN_HOSTS_COMMAND_TOKENS
    return join_words([program, *(expand(word, {**now, **kept}, context.where,
                                         context.keyword, accepted) for word in words)])


def expand_known_hosts_command(command: str, tokens: Mapping[str, str]) -> list[str]:
    """The words of a command :func:`known_hosts_command` kept, with the host key's tokens."""
    program, *words = split_words(command)
    return [program, *(expand(word, {**tokens, "%": "%"}, "KnownHostsCommand",
                              "KnownHostsCommand", "%" + KNOWN_HOSTS_COMMAND_TOKENS)
                       for word in words)]


def control_paths(value: str, context: Context) -> tuple[str, ...]:
    """Where a live OpenSSH master's socket may be: ``none`` means nowhere.

    ``%C`` hashes the jump host too since OpenSSH 9.6, so a path using it
    has two forms when there is a jump host; both are tried, as either
    version of ``ssh`` may have made the master.
    """
    if value.lower() == "none":
        return ()
    expanded = _expand_env(os.path.expanduser(value), context.where, context.keyword)
    forms = []
    for hash_key in ("C", CONNECTION_HASH_WITH_JUMP):
        tokens = {**context.tokens, "C": context.tokens[hash_key]}
        form = expand(expanded, tokens, context.where, context.keyword, CONTROL_PATH_TOKENS)
        if form not in forms:
            forms.append(form)
    return tuple(forms)


def command(value: str, context: Context) -> str | None:
    """A command run by the local shell; ``none`` means no command."""
    if value.lower() == "none":
        return None
    return expand(value, context.tokens, context.where, context.keyword, COMMAND_TOKENS)


def hostname(value: str, context: Context) -> str:
    return canonical_hostname(expand_hostname(value, context.tokens["n"], context.where))


@dataclass(frozen=True)
class Computed:
    """A default found when a host is resolved: it depends on the host or this machine."""

    compute: Callable[[Context], Any]


@dataclass(frozen=True)
class Written:
    """A default given as a config line would give it, so expanded as one (``~``, tokens)."""

    value: Any


def given_name(context: Context) -> str:
    """The destination as given, canonical: what ssh connects to without ``HostName``."""
    return canonical_hostname(context.tokens["n"])


def local_user(context: Context) -> str:
    return context.tokens["u"]


def password_user() -> str:
    """The local user name as ssh takes it: the password database's entry for this uid.

    Not ``$LOGNAME`` or ``$USER``: a shell after ``su``, a job scheduler or
    a container may leave those naming someone else, and ``ssh`` would then
    log in (and expand ``%u``, test ``Match localuser``) as the uid's owner
    all the same.  Windows has no password database; there the login name
    is what ``ssh`` uses too.
    """
    try:
        import pwd
    except ImportError:
        return getpass.getuser()
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise ConfigError(
            f"no user exists for uid {uid} in the password database, so there is no local "
            f"user name (ssh refuses to run too); add an entry for this uid, or run as a "
            f"user that has one."
        ) from None


def home_files(*names: str) -> Computed:
    """Files under ``~``, expanded when a host is resolved (``$HOME`` may change in between)."""
    return Computed(lambda context: tuple(os.path.expanduser(p) for p in names))
