"""What a row of the option table is: one key, or one OpenSSH keyword, and all about it.

The rows themselves are in :mod:`fleche_ssh.config.options`; this module
says what each field of a row means and how a row reads its text
(:meth:`Option.read`), so that every user of the table reads it the same way.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .parsers import SCALAR, Check, return_type, text
from .tokens import Finish, as_is
from .words import split_words


class Values(enum.Enum):
    """How a keyword's values are written on a line and kept across lines and sources."""

    #: One word (quoted if it holds blanks); the first value obtained wins.
    ONE = "one"
    #: Several words on one line (``UserKnownHostsFile a "b c"``); the first line obtained wins.
    WORDS = "words"
    #: One value per line, every value kept in the order obtained, across all sources.
    MANY = "many"
    #: As :attr:`MANY`, each distinct value once: a key file named twice is offered once.
    UNIQUE = "unique"
    #: A shell command, taken as written rather than as words; the first obtained wins.
    COMMAND = "command"

    @property
    def collects(self) -> bool:
        """Every value is kept, not only the first."""
        return self in (Values.MANY, Values.UNIQUE)

    @property
    def is_list(self) -> bool:
        """The key takes a list (one path or several, for a cache key)."""
        return self in (Values.WORDS, Values.MANY, Values.UNIQUE)


ONE, WORDS, MANY, UNIQUE, COMMAND = Values


@dataclass(frozen=True)
class Keyword:
    """An OpenSSH keyword, and how the ssh_config evaluator keeps its values."""

    keyword: str
    #: How its lines are read and its values kept.
    values: Values = field(default=ONE, kw_only=True)


@dataclass(frozen=True)
class Option(Keyword):
    """One OpenSSH keyword fleche-ssh acts on, and everything about it.

    ``default`` is the :class:`~fleche_ssh.config.target.Target` value when
    nothing sets the keyword: a value, a :class:`~.tokens.Computed` one
    (from the host or this machine) or a :class:`~.tokens.Written` one
    (given as text, expanded as a config line would be).
    """

    #: The snake_case key of ``ParamikoCache`` (and of fleche.toml) that mirrors it.
    key: str
    #: Turns one word of text into the value; its return annotation types the key.
    parse: Callable[[str], Any] = text
    #: What a fleche.toml value of the key may be (unset, ``None``, is always allowed).
    check: Check = SCALAR
    default: Any = None
    #: The default in the configuration reference, where the value alone would not say it.
    default_doc: str = ""
    #: The Target field it fills, when not named as the key.
    target_field: str = ""
    #: The Target field's annotation, when not the parser's type (a tuple for a list).
    target_type: str = ""
    #: Turns a value that was set into the Target value (see :mod:`~fleche_ssh.config.tokens`).
    finish: Finish = as_is
    #: ssh's command-line flag for the keyword, with the name of its value (``-p PORT``) ...
    flag: str = ""
    #: ... or, for a flag that takes no value, the value it sets.
    flag_sets: str = ""
    #: What it means, for the configuration reference and the generated fields.
    doc: str = ""
    #: Older names of the keyword, which OpenSSH reads as this one (one value for both).
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not self.target_field:
            set_(self, "target_field", self.key)
        if not self.target_type:
            kind = "tuple[str, ...]" if self.values.is_list else return_type(self.parse)
            set_(self, "target_type", _or_none(kind) if self.default is None else kind)

    @property
    def key_type(self) -> str:
        """The annotation of the cache key: the parser's type, a path or several, or unset."""
        if self.values.is_list:
            return "str | Sequence[str] | None"
        return _or_none(return_type(self.parse))

    def read(self, text: str, where: str) -> Any:
        """Parse *text*, or raise :class:`ConfigError` naming *where* it came from.

        Like ssh, refuses extra words after a one-word value (``User alice
        bob``) rather than guess which one was meant.
        """
        try:
            if self.values is COMMAND:
                if not text.strip():
                    raise ValueError("no value given")
                return self.parse(text.strip())
            words = split_words(text)
            if not words:
                raise ValueError("no value given")
            if self.values is WORDS:
                return tuple(self.parse(w) for w in words)
            if len(words) > 1:
                raise ValueError(f"expected one value (quote it if it has blanks), got {text!r}")
            return self.parse(words[0])
        except ValueError as e:
            raise ConfigError(f"{where}: {self.keyword}: {e}") from None


def _or_none(kind: str) -> str:
    return kind if "None" in kind.split(" | ") else f"{kind} | None"


@dataclass(frozen=True)
class Key:
    """A key of fleche's own ``SshCache``, which ``ParamikoCache`` takes with the same meaning.

    Its dataclass field (and so its default) is ``SshCache``'s; the row adds
    what fleche-ssh checks a fleche.toml value against, and its documentation.
    """

    key: str
    check: Check
    doc: str


@dataclass(frozen=True)
class OwnKey(Key):
    """A key of fleche-ssh's own, which is no OpenSSH keyword: its row makes its field."""

    default: Any
    #: The annotation of its dataclass field.
    type: str
    #: Shown in ``repr(cache)``: not for a key that may hold what answers a login.
    repr: bool = True


@dataclass(frozen=True)
class Unhonoured(Keyword):
    """An ssh_config keyword fleche-ssh ignores although ``ssh`` would act differently.

    A user whose ``ssh host`` works while fleche-ssh fails, or reaches
    another machine, finds the reason in the log line this row gives.
    ``same`` lists the values that ask for what fleche-ssh does anyway,
    which are only logged at debug level.
    """

    #: What ssh does with the keyword, completing "ignored; ...".
    effect: str
    level: int = logging.WARNING
    same: frozenset[str] = frozenset()
