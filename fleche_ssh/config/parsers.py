"""What a value may be: parsers for ssh_config text, and checks for fleche.toml values.

An option is written two ways.  As text (a config line, ``-o``), which a
*parser* turns into the Python value, raising :class:`ValueError` with an
"expected ..." message the caller completes with the file and line.  And
as a Python value (a key of ``fleche.toml`` or of ``ParamikoCache(...)``),
which a :class:`Check` tests before anything else runs: fleche.toml can
put any TOML value in any key, and a wrong type would otherwise surface as
a ``TypeError`` deep inside connecting, or, for ``setup_commands = "one
string"``, as one command per character.

The option table (:mod:`fleche_ssh.config.options`) names, for each key,
which parser and which check apply.  A parser's return annotation is the
type of the key's value, which the generated dataclass fields use.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TRUE = frozenset({"yes", "true", "on", "1"})
_FALSE = frozenset({"no", "false", "off", "0"})


def yes_no(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME = re.compile(r"(\d+)([smhdw]?)")


def seconds(text: str) -> float | None:
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


def interval(text: str) -> float:
    """Seconds between two events, as :func:`seconds`; ``none`` turns them off (0), as in ssh."""
    value = seconds(text)
    return 0.0 if value is None else value


def _whole(text: str, low: int, high: float, wanted: str) -> int:
    """A whole number from *low* to *high*, or ``ValueError`` saying what was *wanted*."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"expected {wanted}, got {text!r}")
    return value


def count(text: str) -> int:
    return _whole(text, 0, math.inf, "a whole number >= 0")


def attempts(text: str) -> int:
    return _whole(text, 1, math.inf, "a whole number >= 1")


def pubkey_switch(text: str) -> bool:
    """``PubkeyAuthentication``: yes or no, or OpenSSH's ``unbound``/``host-bound`` (both yes).

    The two kinds differ only in whether the signature names the host key
    (a ``publickey-hostbound`` request); Paramiko signs the plain kind.
    """
    if text.strip().lower() in ("unbound", "host-bound"):
        return True
    return yes_no(text)


def port(text: str) -> int:
    return _whole(text, 1, 65535, "a port between 1 and 65535")


def choice(*words: str, aliases: dict[str, str] | None = None) -> Callable[[str], str]:
    """One of *words* (or an alias of one), any case."""
    allowed = {w: w for w in words} | (aliases or {})

    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in allowed:
            raise ValueError(f"expected one of {', '.join(words)}, got {text!r}")
        return allowed[word]

    return parse


_CONTROL_MASTER = {"auto": "auto", "no": "no", "false": "no",
                   "yes": "auto", "true": "auto", "ask": "auto", "autoask": "auto"}


def control_master(text: str) -> str:
    """``auto`` or ``no``.

    ``yes``, ``ask`` and ``autoask`` ask OpenSSH to become a master, with or
    without a confirmation per use; fleche-ssh shares a login the same way
    whichever is written, so they read as ``auto`` (with a debug log, since
    a confirmation is not asked).
    """
    word = text.strip().lower()
    if word not in _CONTROL_MASTER:
        raise ValueError(f"expected auto or no (yes, ask, autoask read as auto), got {text!r}")
    if word in ("ask", "autoask", "yes"):
        logging.getLogger("fleche_ssh.options").debug(
            "ControlMaster %s is read as auto: fleche-ssh shares its login without asking", word)
    return _CONTROL_MASTER[word]


def persist(text: str) -> float | None:
    """ControlPersist: ``no`` (None), ``yes`` or ``0`` (no end: infinity), or a duration."""
    word = text.strip().lower()
    if word in ("yes", "true", "on", "0"):  # OpenSSH: 0 is "for ever", as yes
        return math.inf
    if word in _FALSE:
        return None
    value = seconds(word)
    if value is None:
        raise ValueError(f"expected yes, no or a duration (10m, 8h), got {text!r}")
    return value


def text(value: str) -> str:
    return value


def cname_rule(text: str) -> str:
    """A ``CanonicalizePermittedCNAMEs`` rule, ``source:target`` pattern lists, or ``none``."""
    source, colon, target = text.partition(":")
    if text.lower() != "none" and not (colon and source and target):
        raise ValueError(f"expected source:target (domain pattern lists) or none, got {text!r}")
    return text


def return_type(parse: Callable[[str], Any]) -> str:
    """The type a parser gives, as written in its annotation."""
    found = getattr(parse, "__annotations__", {}).get("return")
    if not isinstance(found, str):
        raise TypeError(f"parser {parse!r} needs a return annotation: it types the key")
    return found


# -- checks of fleche.toml values ------------------------------------------------------------


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Check:
    """What a key of fleche.toml may hold, and how the cache keeps it.

    ``wanted`` completes the message ``key = value: expected ...``.
    ``store`` turns an accepted value into the one the frozen cache keeps
    (a list into a tuple, a path into text), so that caches compare, hash
    and pickle by what they mean.
    """

    accepts: Callable[[Any], bool]
    wanted: str
    store: Callable[[Any], Any] = _same

    def optional(self) -> Check:
        """The same check, also accepting ``None`` (unset), which it keeps as is."""
        accepts, store = self.accepts, self.store
        return Check(lambda v: v is None or accepts(v), self.wanted,
                     lambda v: None if v is None else store(v))


def is_text(value: Any) -> bool:
    return isinstance(value, str)


def is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def list_of(accepts: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and all(accepts(x) for x in v)


def _paths(value: Any) -> tuple[str, ...]:
    return (os.fspath(value),) if is_path(value) else tuple(os.fspath(v) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: A key that takes one value: text, a number or yes/no, parsed as the text it stands for.
SCALAR = Check(lambda v: isinstance(v, (str, int, float, os.PathLike)),
               "a single value (text, number or yes/no)").optional()
#: A key that takes one path or several; the cache keeps a tuple of them.
PATHS = Check(lambda v: is_path(v) or list_of(is_path)(v), "a path or a list of paths",
              _paths).optional()


def text_check(wanted: str) -> Check:
    return Check(is_text, wanted)


def path_check(wanted: str) -> Check:
    return Check(is_path, wanted, os.fspath).optional()


def strings_check(wanted: str) -> Check:
    return Check(list_of(is_text), wanted, tuple)


POSITIVE_SECONDS = Check(lambda v: _number(v) and 0 < v < math.inf, "a number of seconds > 0")
WHOLE_NUMBER = Check(lambda v: _number(v) and isinstance(v, int) and v >= 1,
                     "a whole number >= 1")
HANDLER = Check(lambda v: v is None or isinstance(v, str) or callable(v),
                "'auto', 'none', 'module:function' or a callable")
