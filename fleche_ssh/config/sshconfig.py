"""An ssh_config reader that evaluates files the way OpenSSH's ``ssh`` does.

Paramiko's ``SSHConfig`` parses the format but differs where it matters:
no ``Include``, unknown ``Match`` criteria silently match, and nobody acts
on half the keywords.  This module reproduces OpenSSH's evaluation for one
destination: files are read top to bottom; ``Host`` and ``Match`` lines
switch the following lines on or off; the first value obtained for a
keyword wins (``IdentityFile`` and ``CertificateFile`` accumulate);
``Include`` is expanded in place, relative to ``~/.ssh`` (or ``/etc/ssh``
for the system file), with globs, only where its block is active; and a
``Match final`` (or ``CanonicalizeHostname``) asks for a second pass.

The result is raw text per keyword.  Turning text into values (tokens,
``~``, types) is :mod:`fleche_ssh.config.target`'s job, so this module only knows
the file format.
"""

from __future__ import annotations

import getpass
import glob
import os
import re
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .options import ALIASES, VALUES
from .rows import COMMAND, ONE, UNIQUE
from .tokens import canonical_hostname
from .words import join_words, split_words

#: Largest ssh_config file read; a larger one is refused rather than slurped.
MAX_CONFIG_BYTES = 1 << 20
MAX_INCLUDE_DEPTH = 16
#: Bound on a ``Match exec`` command, so a hanging command cannot hang a connect.
MATCH_EXEC_TIMEOUT = 10.0

#: ssh_config's own structure, which is never a setting.
STRUCTURE = frozenset({"host", "match", "include"})
# CanonicalizeHostname values that make ssh read its files a second time.
_CANONICALIZING = frozenset({"yes", "always", "true"})
_MATCH_WORDS = ("all", "canonical", "final", "exec", "host", "originalhost", "user",
                "localuser")


def _pattern_match(pattern: str, text: str) -> bool:
    """OpenSSH's ``match_pattern``: ``*`` and ``?`` wildcards, case-sensitive."""
    p, t = pattern, text
    # Iterative wildcard matching with backtracking on the last '*'.
    pi = ti = 0
    star, mark = -1, 0
    while ti < len(t):
        if pi < len(p) and p[pi] in ("?", t[ti]):
            pi += 1
            ti += 1
        elif pi < len(p) and p[pi] == "*":
            star, mark = pi, ti
            pi += 1
        elif star != -1:
            pi, mark = star + 1, mark + 1
            ti = mark
        else:
            return False
    while pi < len(p) and p[pi] == "*":
        pi += 1
    return pi == len(p)


def match_pattern_list(patterns: list[str], text: str, *, fold_case: bool = True) -> bool:
    """True when *text* matches a positive pattern and no negated (``!``) one.

    OpenSSH compares host names case-insensitively (known_hosts, ``Match
    host``, ``Match originalhost``) but ``Host`` lines, ``Match user`` and
    ``Match localuser`` case-sensitively: ``Host Login*`` does not apply to
    ``ssh login1``.
    """
    if fold_case:
        patterns, text = [p.lower() for p in patterns], text.lower()
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _pattern_match(pattern[1:], text):
                return False
        elif _pattern_match(pattern, text):
            matched = True
    return matched


@dataclass
class Resolution:
    """Raw keyword values for one destination, lowercase keyword -> list of values.

    Single-valued keywords hold a one-element list; those whose rows collect
    their values (:attr:`~fleche_ssh.config.rows.Values.collects`) every
    value in the order obtained, a key file named twice (or again on the
    ``Match final`` pass) once.  ``sources`` says which file and line
    gave each keyword (its first value), for error messages and
    ``fleche-ssh check``.
    """

    values: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    #: Each keyword as first written, for messages.
    spellings: dict[str, str] = field(default_factory=dict)

    def set(self, keyword: str, value: str, source: str) -> None:
        key = ALIASES.get(keyword.lower(), keyword.lower())
        if self._proxy_taken(key):
            return
        kept = VALUES.get(key, ONE)
        if kept.collects:
            values = self.values.setdefault(key, [])
            if kept is not UNIQUE or value not in values:
                values.append(value)
        elif key not in self.values:
            self.values[key] = [value]
        self.sources.setdefault(key, source)
        self.spellings.setdefault(key, keyword)

    def first(self, keyword: str) -> str | None:
        found = self.values.get(keyword.lower())
        return found[0] if found else None

    def _proxy_taken(self, key: str) -> bool:
        """``ProxyCommand`` and ``ProxyJump`` fill one slot: the first obtained of the two wins.

        OpenSSH ignores a ``ProxyCommand`` once a jump host is set, and a
        ``ProxyJump`` once any ``ProxyCommand`` (``none`` included) is; only
        ``ProxyJump none`` leaves a later ``ProxyCommand`` free.  So a
        ``Host *`` ProxyCommand at the end of a file does not override the
        ProxyJump of a specific host above it.
        """
        if key == "proxyjump":
            return "proxycommand" in self.values
        if key == "proxycommand":
            jump = self.first("proxyjump")
            return jump is not None and jump.lower() != "none"
        return False


@dataclass
class _Context:
    """What ``Match`` criteria are evaluated against during one pass.

    ``hostname`` gives the ``HostName`` obtained so far with its ``%h``
    expanded (the name as given when there is none); ``expand`` fills the
    tokens of a ``Match exec`` command, ``%h`` being the host passed to it.
    """

    original_host: str
    user: str | None
    resolution: Resolution
    hostname: Callable[[Resolution], str]
    expand: Callable[[str, Resolution, str], str]
    final_pass: bool = False
    wants_final: bool = False

    def destination(self) -> str:
        """The host name ``Match host`` and ``%h`` see.

        On the final pass that is the name ssh settled on after the first:
        lowercased, as :func:`canonical_hostname` gives it.
        """
        name = self.hostname(self.resolution)
        return canonical_hostname(name) if self.final_pass else name

    def host_line_name(self) -> str:
        """What ``Host`` lines test: the name as given, then the destination.

        On the final pass ssh re-reads its files for the host it will
        actually connect to, so ``Host`` lines see ``HostName`` there.
        """
        return self.destination() if self.final_pass else self.original_host

    def canonicalizing(self) -> bool:
        """``CanonicalizeHostname yes`` or ``always``: ssh then reads its files twice."""
        value = self.resolution.first("canonicalizehostname")
        return value is not None and value.lower() in _CANONICALIZING


def _read_lines(path: Path) -> list[str]:
    try:
        info = path.stat()
        size = info.st_size
        # Opening a named pipe waits for a writer, forever if none comes.  A
        # device is read (``-F /dev/null`` is common) but only up to the limit.
        if stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode):
            raise ConfigError(f"{path}: ssh config file is a named pipe or socket, not a file")
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: ssh config file is {size} bytes, more than fleche-ssh reads "
                f"({MAX_CONFIG_BYTES}); check that it is the file you meant."
            )
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ssh config file: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: ssh config file is larger than {MAX_CONFIG_BYTES} bytes")
    if b"\0" in data:
        raise ConfigError(f"{path}: ssh config file contains NUL bytes; it is not a text file")
    return data.decode("utf-8", "replace").splitlines()


_LINE = re.compile(r"^([^\s=]+)\s*(?:=\s*)?(.*)$")
def _split_line(line: str, where: str) -> tuple[str, list[str], str] | None:
    """``Keyword args`` or ``Keyword=args`` as (keyword, words, raw rest); ``None`` for blanks."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    found = _LINE.match(text)
    if found is None:
        raise ConfigError(f"{where}: cannot parse {text!r}")
    try:
        args = split_words(found.group(2))
    except ValueError as e:
        raise ConfigError(f"{where}: {e} in {text!r}") from None
    return found.group(1), args, found.group(2).strip()


class _Evaluator:
    def __init__(self, context: _Context) -> None:
        self.ctx = context

    def apply_file(self, path: Path, *, base: Path, depth: int = 0) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{path}: Include nested more than {MAX_INCLUDE_DEPTH} deep")
        active = True
        for number, line in enumerate(_read_lines(path), 1):
            where = f"{path}:{number}"
            parsed = _split_line(line, where)
            if parsed is None:
                continue
            keyword, args, raw = parsed
            key = keyword.lower()
            if key == "host":
                active = match_pattern_list(args, self.ctx.host_line_name(), fold_case=False)
            elif key == "match":
                active = self._match(args, where)
            elif not active:
                continue
            elif key == "include":
                for pattern in args:
                    self._include(pattern, base=base, depth=depth)
            elif not args:
                raise ConfigError(f"{where}: {keyword} needs a value")
            elif key == "hostname" and self.ctx.final_pass:
                # ssh has settled the name before this pass; HostName no longer changes it.
                continue
            else:
                # A command is kept as written; anything else as its words, requoted.
                value = raw if VALUES.get(key) is COMMAND else join_words(args)
                self.ctx.resolution.set(keyword, value, where)

    def _include(self, pattern: str, *, base: Path, depth: int) -> None:
        expanded = os.path.expanduser(pattern)
        if not os.path.isabs(expanded):
            expanded = str(base / expanded)
        for name in sorted(glob.glob(expanded)):
            self.apply_file(Path(name), base=base, depth=depth + 1)

    def _match(self, args: list[str], where: str) -> bool:
        ctx = self.ctx
        result = True
        i = 0
        if not args:
            raise ConfigError(f"{where}: Match needs criteria")
        while i < len(args):
            word = args[i]
            negate = word.startswith("!")
            criterion = word[1:].lower() if negate else word.lower()
            if criterion not in _MATCH_WORDS:
                raise ConfigError(
                    f"{where}: Match criterion {word!r} is not supported by fleche-ssh "
                    f"(supported: {', '.join(_MATCH_WORDS)})."
                )
            if criterion == "all":
                hit = True
            elif criterion in ("canonical", "final"):
                ctx.wants_final = ctx.wants_final or criterion == "final"
                hit = ctx.final_pass
            else:
                if i + 1 >= len(args):
                    raise ConfigError(f"{where}: Match {criterion} needs an argument")
                i += 1
                hit = self._criterion(criterion, args[i], where)
            result = result and (hit != negate)
            i += 1
        return result

    def _criterion(self, criterion: str, arg: str, where: str) -> bool:
        ctx = self.ctx
        if criterion == "exec":
            command = ctx.expand(arg, ctx.resolution, ctx.destination())
            try:
                done = subprocess.run(
                    ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    timeout=MATCH_EXEC_TIMEOUT, check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                return False
            return done.returncode == 0
        patterns = arg.split(",")
        if criterion == "host":
            return match_pattern_list(patterns, ctx.destination())
        if criterion == "originalhost":
            return match_pattern_list(patterns, ctx.original_host)
        if criterion == "user":
            user = ctx.resolution.first("user") or ctx.user or getpass.getuser()
            return match_pattern_list(patterns, user, fold_case=False)
        return match_pattern_list(patterns, getpass.getuser(), fold_case=False)


def resolve_config(
    host: str,
    *,
    user: str | None,
    files: list[tuple[Path, Path]],
    preset: Resolution,
    hostname: Callable[[Resolution], str],
    expand: Callable[[str, Resolution, str], str],
) -> Resolution:
    """Evaluate *files* for *host*, on top of the settings already in *preset*.

    *files* pairs each config file with the folder its relative ``Include``
    lines start from.  *preset* holds what the command line and explicit
    keys set, which beat anything a file says.  Missing files are skipped,
    as OpenSSH skips a missing ``~/.ssh/config``.  *hostname* and *expand*
    are the token expansions ``Match`` needs (see :class:`_Context`).

    A second pass follows when a ``Match final`` was seen or
    ``CanonicalizeHostname`` is on, as in ssh; fleche-ssh does not rewrite
    the name with ``CanonicalDomains``, but ``Match canonical`` blocks
    apply on that pass as they do for ssh.
    """
    ctx = _Context(original_host=host, user=user, resolution=preset, hostname=hostname,
                   expand=expand)
    evaluator = _Evaluator(ctx)
    for path, base in files:
        if path.exists():
            evaluator.apply_file(path, base=base)
    if ctx.wants_final or ctx.canonicalizing():
        ctx.final_pass = True
        for path, base in files:
            if path.exists():
                evaluator.apply_file(path, base=base)
    return ctx.resolution
