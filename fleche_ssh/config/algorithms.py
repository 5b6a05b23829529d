"""What to negotiate: OpenSSH's algorithm-list syntax, applied to what Paramiko offers.

``Ciphers``, ``MACs``, ``KexAlgorithms``, ``HostKeyAlgorithms``,
``PubkeyAcceptedAlgorithms`` and ``CASignatureAlgorithms`` take a comma
list of names and ``*``/``?`` patterns, either on its own (it replaces the
default order) or after one of three signs that edit the default:
``+`` appends, ``-`` removes, ``^`` puts the names first.  :func:`assemble`
is OpenSSH's ``kex_assemble_names`` for any default and any list of
supported names, so that it can be checked against ``ssh -G`` with ssh's
own lists; :func:`algorithms` applies it to fleche-ssh's defaults, which are
everything Paramiko implements, in the order fleche-ssh prefers (AES-GCM
first: Paramiko lists it last, and the client's order decides).

A name Paramiko does not implement is left out, as OpenSSH leaves out a
name its build lacks; a list with nothing left is an error naming the line.
Paramiko 5 has no SHA-1 algorithms, which old servers still want: a line
asking for one by name says so, since the server will refuse everything
else.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paramiko

from ..errors import ConfigError
from .tokens import Context

logger = logging.getLogger("fleche_ssh.options")

#: Ciphers fleche-ssh puts first: GCM measured +60-77% throughput over aes-ctr + HMAC.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: What a certificate algorithm adds to the name of its key's.
CERTIFICATE = "-cert-v01@openssh.com"
#: What old servers ask for and Paramiko 5 no longer implements.
SHA1_ALGORITHMS = frozenset({
    "ssh-rsa", f"ssh-rsa{CERTIFICATE}", "ssh-dss", f"ssh-dss{CERTIFICATE}",
    "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1",
    "diffie-hellman-group-exchange-sha1",
})


def prefer(available: Sequence[str], first: Sequence[str]) -> tuple[str, ...]:
    """*available* with those of *first* moved to the front, in *first*'s order."""
    chosen = [name for name in first if name in available]
    return (*chosen, *(name for name in available if name not in chosen))


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(".".join(map(re.escape, p.split("?")))
                                for p in pattern.split("*")))


def _matches(pattern: str, name: str) -> bool:
    """OpenSSH's ``match_pattern``: ``*`` and ``?``, case-sensitive, the whole name."""
    return _regex(pattern).fullmatch(name) is not None


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def _cat(first: Sequence[str], then: Sequence[str]) -> list[str]:
    """OpenSSH's ``kex_names_cat``: *first*, then each of *then* not already there."""
    out = list(first)
    out += [name for name in dict.fromkeys(then) if name not in out]
    return out


def _removed(name: str, patterns: Sequence[str]) -> bool:
    """``match_pattern_list(name, patterns) == 1``: a positive match and no ``!`` one."""
    if any(p.startswith("!") and _matches(p[1:], name) for p in patterns):
        return False
    return any(not p.startswith("!") and _matches(p, name) for p in patterns)


def assemble(spec: str, default: Sequence[str], supported: Sequence[str]) -> tuple[str, ...]:
    """The list *spec* asks for, as OpenSSH's ``kex_assemble_names`` builds it.

    An empty *spec* is *default*.  ``-list`` is *default* less the names a
    pattern of the list matches.  Otherwise the names and patterns (the
    list, after *default* for ``+``, before it for ``^``) are each replaced
    by the *supported* names they match, in *supported*'s order, each name
    once.  The result may be empty; the caller says what that means.

    Raises:
        ValueError: a ``!`` pattern outside a ``-`` list, which OpenSSH refuses.
    """
    if not spec:
        return tuple(default)
    sign, rest = spec[0], spec[1:]
    if sign == "-":
        patterns = _names(rest)
        return tuple(name for name in default if not _removed(name, patterns))
    if sign == "+":
        items = _cat(default, _names(rest))
    elif sign == "^":
        items = _cat(_names(rest), default)
    else:
        items = _names(spec)
    out: dict[str, None] = {}
    for item in items:
        if item.startswith("!"):
            raise ValueError(f"{item!r}: a negated name is allowed only in a '-' list")
        out.update((name, None) for name in supported if _matches(item, name))
    return tuple(out)


@dataclass(frozen=True)
class Algorithms:
    """An assembled algorithm list, as a :class:`~fleche_ssh.config.target.Target` holds it."""

    names: tuple[str, ...]
    #: The list as the config gave it, ``+``/``-``/``^`` included.
    written: str

    @property
    def as_written(self) -> bool:
        """The order is the user's (a plain or ``^`` list).

        ssh orders host key algorithms by what known_hosts holds for the host
        only when it is not: unset, or a ``+`` or ``-`` list.
        """
        return not self.written.startswith(("+", "-"))

    def __str__(self) -> str:
        return ",".join(self.names)  # as ssh -G prints it


def _with_certificates(names: Sequence[str]) -> tuple[str, ...]:
    """Certificate forms first, then the plain names: OpenSSH's order for the key lists."""
    return (*(name + CERTIFICATE for name in names), *names)


_T = paramiko.Transport
#: The signatures Paramiko makes and checks with a user's (or a CA's) key.
SIGNATURES = tuple(_T._preferred_pubkeys)
#: Per keyword, what Paramiko implements, in fleche-ssh's default order: what a fresh
#: ``Transport``'s ``get_security_options()`` holds (ciphers GCM first), and for host
#: keys and the user's own keys the certificate forms Paramiko handles as well.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "Ciphers": prefer(_T._preferred_ciphers, PREFERRED_CIPHERS),
    "MACs": tuple(_T._preferred_macs),
    "KexAlgorithms": tuple(_T._preferred_kex),
    # Host certificates after the plain keys, unless known_hosts trusts a CA for the host.
    "HostKeyAlgorithms": (*_T._preferred_keys, *(k + CERTIFICATE for k in _T._preferred_keys)),
    "PubkeyAcceptedAlgorithms": _with_certificates(SIGNATURES),
    "CASignatureAlgorithms": SIGNATURES,
}


def algorithms(keyword: str) -> Callable[[str, Context], Algorithms]:
    """The finish function of *keyword*'s row: its text assembled on fleche-ssh's defaults.

    The work is in :func:`finish_algorithms`, a module-level function bound to the keyword,
    not a closure made here: the rows call this once, at import, and what runs for each
    config line is then a function that mutation testing can change and tests can reach.
    """
    return functools.partial(finish_algorithms, keyword)


def finish_algorithms(keyword: str, value: str, context: Context) -> Algorithms:
    """*value*, the text of *keyword*, assembled on fleche-ssh's defaults for it.

    Raises:
        ConfigError: a ``!`` outside a ``-`` list, or nothing Paramiko supports left;
            naming where the line is and, for SHA-1 names, why they are missing.
    """
    supported = SUPPORTED[keyword]
    try:
        names = assemble(value, supported, supported)
    except ValueError as e:
        raise ConfigError(f"{context.where}: {keyword}: {e}") from None
    asked = set() if value.startswith("-") else set(_names(value.lstrip("+^")))
    sha1 = sorted((asked & SHA1_ALGORITHMS) - set(supported))
    if not names:
        old = (f" Paramiko 5 has no SHA-1 algorithms ({', '.join(sha1)}); use the stock "
               f'type = "ssh" cache for this host.' if sha1 else "")
        raise ConfigError(
            f"{context.where}: {keyword} {value}: no algorithm Paramiko supports is "
            f"left.{old} Paramiko supports: {', '.join(supported)}.")
    if sha1:
        logger.info("%s: %s: Paramiko 5 has no SHA-1 algorithms, so %s is left out; a "
                    'server that accepts nothing else needs the stock type = "ssh" cache',
                    context.where, keyword, ", ".join(sha1))
    return Algorithms(names, value)
