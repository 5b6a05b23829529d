"""``ssh_options``: the command line of a ``type = "ssh"`` entry, as keyword settings.

The stock cache hands ``ssh_options`` to the ``ssh`` program; fleche-ssh
has no program to hand them to, so it reads them as ``ssh`` would and
turns each into a ``(keyword, text)`` setting, which then goes through the
same evaluation as a config line.  The flags that set a keyword (``-p``,
``-l`` ...) are columns of the option rows; ``-o`` and ``-F`` are the
command line's own syntax.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from .options import ALIASES, BY_KEYWORD, FLAGS, NOT_NEEDED, OPTIONS, VALUES
from .rows import COMMAND
from .words import join_words, split_words

logger = logging.getLogger("fleche_ssh.options")

# Flags without a value that change nothing for a cache channel.
_NOOP_FLAGS = frozenset({"-T", "-x", "-a", "-q", "-n"})
# ssh's two flags for one keyword, which a row's single flag column cannot hold.
_FAMILY_FLAGS = {"-4": "inet", "-6": "inet6"}


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

    Understands the flags of the option rows (``-p``, ``-l``, ``-i``, ``-J``,
    ``-C``), ``-F``, ``-o Keyword=value`` (also glued, as ``-oKeyword=value``
    and ``-p2222``), ``-4``/``-6`` (AddressFamily) and the value-less flags in
    :data:`_NOOP_FLAGS`.  Returns
    ``(keyword, value)`` pairs in the order given; the caller applies them
    with first-value-wins, like ssh does.  Anything it does not understand
    raises :class:`ConfigError` naming the option, because dropping an
    option the user wrote could connect them somewhere they did not ask for.
    """
    settings: list[tuple[str, str]] = []
    config_file: str | None = None
    family: str | None = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = str(args[i])
        flag, glued = arg[:2], arg[2:]
        row = FLAGS.get(flag)
        if flag in _NOOP_FLAGS and not glued:
            logger.debug("ssh_options: %s has no effect on a cache channel", arg)
            i += 1
            continue
        if flag in _FAMILY_FLAGS and not glued:
            family = _FAMILY_FLAGS[flag]
            i += 1
            continue
        if row is not None and row.flag_sets and not glued:
            settings.append((row.keyword, row.flag_sets))
            i += 1
            continue
        if (flag not in ("-o", "-F") and (row is None or row.flag_sets)) or not arg.startswith("-"):
            raise ConfigError(
                f"ssh_options: {arg!r} is not supported by fleche-ssh. Supported: "
                f"{', '.join(FLAGS)}, -F, -o Keyword=value for "
                f"{', '.join(o.keyword for o in OPTIONS)}."
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
        elif row is None:  # -o
            settings += _keyword_option(value)
        else:
            if row is BY_KEYWORD["proxyjump"]:
                _check_one_proxy(settings)
            # One argv element is one word, blanks and all.
            settings.append((row.keyword, join_words([value])))
        i += 1
    if family is not None:
        # ssh sets the family from -4/-6 directly: the last flag beats any -o or file line.
        settings.insert(0, (BY_KEYWORD["addressfamily"].keyword, family))
    return CommandLine(tuple(settings), config_file)


def _keyword_option(value: str) -> list[tuple[str, str]]:
    """The setting of one ``-o Keyword=value``: none for a keyword not needed."""
    keyword, text = split_option(value, "ssh_options -o")
    try:
        if VALUES.get(keyword.lower()) is not COMMAND:
            split_words(text)
    except ValueError as e:
        raise ConfigError(f"ssh_options: -o {keyword}: {e}") from None
    if keyword.lower() in NOT_NEEDED:
        logger.debug("ssh_options: %s is not needed by fleche-ssh", keyword)
        return []
    row = BY_KEYWORD.get(ALIASES.get(keyword.lower(), keyword.lower()))
    if row is None:
        raise ConfigError(
            f"ssh_options: -o {keyword} is not supported by fleche-ssh. Remove it, or "
            f"use one of: {', '.join(o.keyword for o in OPTIONS)}."
        )
    return [(row.keyword, text)]


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
