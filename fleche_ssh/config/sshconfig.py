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

import glob
import os
import re
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .options import ALIASES, BY_KEYWORD, VALUES
from .patterns import match_pattern_list
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
#: What ssh has settled before its final pass, which that pass no longer changes: the
#: name, and how it was canonicalized (ssh fills in their defaults before canonicalizing).
SETTLED = frozenset({"hostname", "canonicalizehostname", "canonicaldomains",
                     "canonicalizefallbacklocal", "canonicalizemaxdots",
                     "canonicalizepermittedcnames"})
# CanonicalizeHostname values that make ssh read its files a second time.
_CANONICALIZING = frozenset({"yes", "always", "true"})
_MATCH_WORDS = ("all", "canonical", "final", "exec", "host", "originalhost", "user",
                "localuser")


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
    tokens of a ``Match exec`` command, ``%h`` being the host passed to it,
    naming the file and line passed with it when a token is refused.
    """

    original_host: str
    user: str | None
    #: The local user name (the password database's), for ``Match localuser``.
    local_user: str
    resolution: Resolution
    hostname: Callable[[Resolution], str]
    expand: Callable[[str, Resolution, str, str], str]
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


def _check(keyword: str, args: list[str], value: str, where: str, *, active: bool) -> None:
    """Refuse a value ssh would refuse, in every block, whether it applies or not.

    ssh parses each line it reads (``Port nonsense`` under a ``Host`` that
    does not match still stops it with "Bad port"), so a file fleche-ssh
    accepts is one ssh accepts too.  Only the keywords fleche-ssh has a
    parser for are checked: one it does not know, with or without a value,
    is ignored (and logged where it applies), as files shared with other
    programs need.
    """
    option = BY_KEYWORD.get(ALIASES.get(keyword.lower(), keyword.lower()))
    if not args and (active or option is not None):
        raise ConfigError(f"{where}: {keyword} needs a value")
    if option is not None:
        option.read(value, where)


class _Evaluator:
    def __init__(self, context: _Context) -> None:
        self.ctx = context

    def apply_file(self, path: Path, *, base: Path, depth: int = 0,
                   never_match: bool = False) -> None:
        """Apply one file's lines; with *never_match*, only check them, as ssh does.

        ssh reads a file included from a block that does not apply with no
        block active (its ``SSHCONF_NEVERMATCH``), so that its values are
        checked and an ``Include`` loop found wherever it is.
        """
        active = not never_match
        for number, line in enumerate(_read_lines(path), 1):
            where = f"{path}:{number}"
            parsed = _split_line(line, where)
            if parsed is None:
                continue
            keyword, args, raw = parsed
            key = keyword.lower()
            if key == "host":
                hit = match_pattern_list(args, self.ctx.host_line_name(), fold_case=False)
                active = hit and not never_match
            elif key == "match":
                active = self._match(args, where) and not never_match
            elif key == "include":
                for pattern in args:
                    self._include(pattern, where, base=base, depth=depth,
                                  never_match=not active)
            else:
                # A command is kept as written; anything else as its words, requoted.
                value = raw if VALUES.get(key) is COMMAND else join_words(args)
                _check(keyword, args, value, where, active=active)
                if not active or (key in SETTLED and self.ctx.final_pass):
                    continue
                self.ctx.resolution.set(keyword, value, where)

    def _include(self, pattern: str, where: str, *, base: Path, depth: int,
                 never_match: bool) -> None:
        expanded = os.path.expanduser(pattern)
        if not os.path.isabs(expanded):
            expanded = str(base / expanded)
        for name in sorted(glob.glob(expanded)):
            if depth >= MAX_INCLUDE_DEPTH:
                # As ssh, which stops at the same depth: a file that includes itself,
                # directly or through others, would otherwise be read forever.
                raise ConfigError(
                    f"{name}: Include nested more than {MAX_INCLUDE_DEPTH} deep, included "
                    f"from {where}: an Include loop? ssh refuses this file too."
                )
            self.apply_file(Path(name), base=base, depth=depth + 1, never_match=never_match)

    def _match(self, args: list[str], where: str) -> bool:
        """A ``Match`` line's result, or :class:`ConfigError` for one ssh refuses.

        As OpenSSH 9's ``match_cfg_line``: every criterion must hold; ``all``
        ends the line and stands alone (after at most one other criterion,
        as ssh counts); an ``exec`` is not run once an earlier criterion
        failed, though its tokens are still checked.
        """
        ctx = self.ctx
        result = True
        attributes = 0
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
                if attributes > 1 or i + 1 < len(args):
                    raise ConfigError(
                        f"{where}: Match all cannot be combined with other criteria, as ssh "
                        f"refuses it: write 'Match all' alone, or the other criteria alone."
                    )
                return result and not negate
            attributes += 1
            if criterion in ("canonical", "final"):
                ctx.wants_final = ctx.wants_final or criterion == "final"
                hit = ctx.final_pass
            else:
                if i + 1 >= len(args):
                    raise ConfigError(f"{where}: Match {criterion} needs an argument")
                i += 1
                hit = self._criterion(criterion, args[i], where, run=result)
            result = result and (hit != negate)
            i += 1
        return result

    def _criterion(self, criterion: str, arg: str, where: str, *, run: bool) -> bool:
        """Whether one criterion with its argument holds; *run* is false once the line failed."""
        ctx = self.ctx
        if criterion == "exec":
            command = ctx.expand(arg, ctx.resolution, ctx.destination(), where)
            if not run:
                return False
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
            user = ctx.resolution.first("user") or ctx.user or ctx.local_user
            return match_pattern_list(patterns, user, fold_case=False)
        return match_pattern_list(patterns, ctx.local_user, fold_case=False)


def resolve_config(
    host: str,
    *,
    user: str | None,
    local_user: str,
    files: list[tuple[Path, Path]],
    preset: Resolution,
    hostname: Callable[[Resolution], str],
    expand: Callable[[str, Resolution, str, str], str],
    canonicalize: Callable[[str, Resolution], str] = lambda name, resolution: name,
) -> Resolution:
    """Evaluate *files* for *host*, on top of the settings already in *preset*.

    *files* pairs each config file with the folder its relative ``Include``
    lines start from.  *preset* holds what the command line and explicit
    keys set, which beat anything a file says.  Missing files are skipped,
    as OpenSSH skips a missing ``~/.ssh/config``.  *local_user* is the
    password database's name for this uid, which ``Match localuser`` tests
    and ``Match user`` falls back to.  *hostname* and *expand*
    are the token expansions ``Match`` needs (see :class:`_Context`).

    A second pass follows when a ``Match final`` was seen or
    ``CanonicalizeHostname`` is on, as in ssh, for the name *canonicalize*
    settles on (:func:`fleche_ssh.config.canonical.canonicalize`): it
    becomes the ``HostName``, and ``Host`` and ``Match host`` lines test it.
    """
    ctx = _Context(original_host=host, user=user, local_user=local_user, resolution=preset,
                   hostname=hostname, expand=expand)
    evaluator = _Evaluator(ctx)
    for path, base in files:
        if path.exists():
            evaluator.apply_file(path, base=base)
    name = canonical_hostname(ctx.destination())
    settled = canonicalize(name, ctx.resolution)
    if ctx.wants_final or ctx.canonicalizing():
        if settled != name:
            resolution = ctx.resolution
            resolution.values["hostname"] = [join_words([settled])]
            resolution.sources["hostname"] = resolution.sources.get("canonicalizehostname", "")
            resolution.spellings.setdefault("hostname", "HostName")
        ctx.final_pass = True
        for path, base in files:
            if path.exists():
                evaluator.apply_file(path, base=base)
    return ctx.resolution
