"""Host key verification against known_hosts, with OpenSSH's policies.

Paramiko's ``HostKeys`` refuses a whole file over one ``@cert-authority``
line, never enforces ``@revoked``, and matches only exact names.  This
module reads known_hosts line by line instead: a line it cannot use is
skipped with a debug log, hashed (``|1|``) and wildcard entries match as in
OpenSSH, ``@revoked`` keys are refused, and the key types known for a host
are reported so the handshake can prefer them (a server offering another
type would otherwise look like an unknown host).  ``@cert-authority`` lines
trust host certificates (:mod:`~fleche_ssh.ssh.hostcerts`).  A ``HostKeyAlias`` is
the name looked up and recorded (:attr:`Target.known_hosts_name`);
``CheckHostIP`` checks and records the server's address as well; the keys
of a ``KnownHostsCommand`` count as known_hosts lines and a
``RevokedHostKeys`` file is honoured (:mod:`~fleche_ssh.ssh.known_sources`).

The policies follow ``StrictHostKeyChecking``: ``yes`` refuses unknown
hosts, ``accept-new`` records them, ``ask`` asks a human through the prompt
handler, ``no`` records them with a warning.  A changed key is refused
under every policy: it is the one case where connecting anyway is never
what the user wants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import paramiko

from ..config.patterns import match_pattern_list
from ..config.target import Target
from ..errors import ChangedHostKey, PromptUnavailable, UnknownHostKey
from .hostcerts import cert_types, certificate, verify_certificate
from .known_sources import check_revoked, command_lines, fingerprint, refuse_revoked

logger = logging.getLogger("fleche_ssh.hostkeys")

#: known_hosts files beyond this size are read only this far.
MAX_KNOWN_HOSTS_BYTES = 16 << 20
#: Longest line read as one; no key OpenSSH writes comes near it.
MAX_LINE_BYTES = 64 << 10


@dataclass(frozen=True)
class KnownKey:
    """One usable line of a known_hosts file."""

    names: str
    keytype: str
    blob: str
    path: str
    line: int
    marker: str | None = None

    def matches(self, name: str) -> bool:
        return _names_match(self.names, name)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _names_match(names: str, name: str) -> bool:
    """Whether the names field of a known_hosts line covers host *name*."""
    if names.startswith("|1|"):
        return _hashed_match(names, name)
    return match_pattern_list(names.split(","), name)


def _hashed_match(entry: str, name: str) -> bool:
    try:
        _, _, salt, digest = entry.split("|")
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(base64.b64encode(mac).decode(), digest)
    except (ValueError, TypeError):
        return False


def hash_name(name: str) -> str:
    """A name in OpenSSH's hashed ``|1|salt|hash`` form."""
    salt = os.urandom(20)
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


def _parse_line(text: str, path: str, number: int, name: str | None = None) -> KnownKey | None:
    """One line as a :class:`KnownKey`, or ``None``: a comment, junk, another host than *name*."""
    fields = text.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        marker, fields = fields[0][1:], fields[1:]
    if len(fields) < 3:
        logger.debug("%s:%d: not a known_hosts entry, skipped", path, number)
        return None
    names, keytype, blob = fields[:3]
    if name is not None and not _names_match(names, name):
        return None
    try:
        base64.b64decode(blob, validate=True)
    except ValueError:
        logger.debug("%s:%d: key is not base64, skipped", path, number)
        return None
    return KnownKey(names, keytype, blob, path, number, marker)


def read_known_hosts(paths: Iterable[str], name: str | None = None) -> list[KnownKey]:
    """Every usable entry of the existing files among *paths*, in order.

    With *name*, only the entries for that host: a large file then costs
    time in proportion to its size but no memory.
    """
    entries: list[KnownKey] = []
    for path in paths:
        for number, text in _lines(path):
            entry = _parse_line(text, path, number, name)
            if entry is not None:
                entries.append(entry)
    return entries


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """The numbered lines of one known_hosts file, read within fixed bounds.

    A path that is not a regular file (a directory, a named pipe with no
    writer, ``/dev/zero``) is skipped rather than read: opening a pipe would
    wait forever and a device never ends.  ``/dev/null``, the usual way to
    have no known_hosts, is skipped silently.  Reading stops after
    :data:`MAX_KNOWN_HOSTS_BYTES`, and a line longer than
    :data:`MAX_LINE_BYTES` is skipped, so a wrong path cannot stall or
    exhaust a connect.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise block until a writer comes.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return
    except OSError as e:
        logger.warning("cannot read known_hosts file %s: %s", path, e.strerror or e)
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        if path != os.devnull:
            logger.warning("known_hosts file %s is not a regular file; skipped", path)
        return
    with os.fdopen(fd, "rb") as f:
        read = number = 0
        while read < MAX_KNOWN_HOSTS_BYTES:
            raw = f.readline(MAX_LINE_BYTES)
            if not raw:
                return
            read += len(raw)
            number += 1
            if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
                logger.debug("%s:%d: longer than %d bytes, skipped", path, number,
                             MAX_LINE_BYTES)
                while raw and not raw.endswith(b"\n") and read < MAX_KNOWN_HOSTS_BYTES:
                    raw = f.readline(MAX_LINE_BYTES)
                    read += len(raw)
                continue
            yield number, raw.decode("utf-8", "replace")
        if f.read(1):
            logger.warning("known_hosts file %s is larger than %d MiB; entries past that "
                           "point are ignored", path, MAX_KNOWN_HOSTS_BYTES >> 20)


def known_entries(target: Target) -> list[KnownKey]:
    """The known_hosts entries for *target*, from its user and global files.

    Connecting reads them once and uses them twice: to order the host key
    algorithms (:func:`known_key_types`) and to check the key (:func:`verify`).
    """
    files = target.known_hosts_files + target.global_known_hosts_files
    return read_known_hosts(files, target.known_hosts_name)


def command_entries(target: Target, reason: str, name: str,
                    key: paramiko.PKey | None = None) -> list[KnownKey]:
    """The entries for *name* that the target's ``KnownHostsCommand`` prints (``%I`` *reason*)."""
    entries = []
    for number, text in command_lines(target, reason, name, key):
        entry = _parse_line(text, "KnownHostsCommand", number, name)
        if entry is not None:
            entries.append(entry)
    return entries


def known_key_types(target: Target, entries: list[KnownKey] | None = None) -> list[str]:
    """Key types known_hosts holds for *target*, so the handshake asks for them first.

    The ``KnownHostsCommand`` is asked too, as ssh asks it (``%I`` is ``ORDER``),
    for the host name as it is, without alias or port.
    """
    found: list[str] = []
    entries = known_entries(target) if entries is None else entries
    entries = entries + command_entries(target, "ORDER", target.hostname)
    for entry in entries:
        if entry.marker is None and entry.keytype not in found:
            found.append(entry.keytype)
    if any(entry.marker == "cert-authority" for entry in entries):
        # A CA is trusted for this host: ask for a certificate first, as ssh does, of the
        # known key types, then of every type Paramiko offers (in its own order).
        return list(dict.fromkeys(cert_types([*found, *paramiko.Transport._preferred_keys])
                                  + found))
    return found


Ask = Callable[[str], bool]


def verify(target: Target, key: paramiko.PKey, ask: Ask | None,
           entries: list[KnownKey] | None = None, address: str | None = None) -> str:
    """Accept or refuse the server's *key*; return how it was verified.

    *ask* poses a yes/no question to a human (``None`` when nobody can be
    asked); *entries* are :func:`known_entries` when the caller has them
    already; *address* is the server's address as known_hosts writes it,
    when ``CheckHostIP`` applies (see :func:`_check_address`).  Raises a
    :class:`HostKeyError` subclass on refusal.
    """
    cert = certificate(key)
    check_revoked(target, key, cert.ca_blob if cert is not None else None)
    name = target.known_hosts_name
    entries = known_entries(target) if entries is None else entries
    entries = entries + command_entries(target, "HOSTNAME", name, key)
    if cert is not None:
        by_ca = verify_certificate(target, cert, entries)
        if by_ca is not None:
            return by_ca
    found, changed = _look_up(target, key, entries)
    by_address: tuple[KnownKey | None, list[KnownKey]] = (None, [])
    if address is not None:
        files = target.known_hosts_files + target.global_known_hosts_files
        by_address = _look_up(target, key, read_known_hosts(files, address)
                              + command_entries(target, "ADDRESS", address, key))
    if changed and found is None:
        lines = ", ".join(e.where for e in changed)
        raise ChangedHostKey(
            f"HOST KEY CHANGED for {name}: the server sent a {key.get_name()} key "
            f"{fingerprint(key)}, but {lines} records a different one. This can mean someone is "
            f"intercepting the connection, or the host was reinstalled. If you have confirmed "
            f"the new key with its administrators, remove the old entry: "
            f"ssh-keygen -R {_shell_word(name)} -f {_shell_word(changed[0].path)}"
        )
    if found is not None:
        verified = f"known_hosts {found.where}"
    elif address is not None and by_address == (None, []):
        return _unknown(target, key, ask, [name, address])  # recorded together, as ssh does
    else:
        verified = _unknown(target, key, ask, [name])
    return verified if address is None else _check_address(target, key, ask, address,
                                                            by_address, verified)


def _look_up(target: Target, key: paramiko.PKey,
             entries: list[KnownKey]) -> tuple[KnownKey | None, list[KnownKey]]:
    """The entry that holds *key*, and those holding another key of its type.

    A key marked ``@revoked`` is refused here, whatever else says it is known.
    """
    keytype, blob = key.get_name(), key.get_base64()
    refuse_revoked(target, entries, blob, f"The {keytype} host key of "
                   f"{target.known_hosts_name} ({fingerprint(key)})")
    plain = [e for e in entries if e.marker is None and e.keytype == keytype]
    found = next((e for e in plain if e.blob == blob), None)
    return found, [e for e in plain if e.blob != blob]


def _check_address(target: Target, key: paramiko.PKey, ask: Ask | None, address: str,
                   by_address: tuple[KnownKey | None, list[KnownKey]], verified: str) -> str:
    """``CheckHostIP``: the server's address holds the same key as its name, as for ssh.

    An address not yet known is recorded.  One that holds another key (the
    name may point at another machine now, or DNS was spoofed) is a
    question under ``ask``, a refusal under ``yes`` and ``accept-new``,
    and a warning under ``no``, as ssh treats it.
    """
    found, changed = by_address
    if found is not None:
        return verified
    if not changed:
        return _record(target, key, verified, [address])
    message = (f"the {key.get_name()} host key for '{target.known_hosts_name}' differs from "
               f"the key for the IP address '{address}' ({', '.join(e.where for e in changed)})")
    policy = target.strict_host_key_checking
    if policy == "no":
        logger.warning("Warning: %s", message)
        return f"{verified}; {message}"
    if policy == "ask" and ask is not None:
        try:
            if ask(f"Warning: {message}.\nAre you sure you want to continue connecting "
                   f"(yes/no)? "):
                return f"{verified}; {message}, accepted by the user"
        except PromptUnavailable:
            pass
    raise ChangedHostKey(
        f"Refusing to connect: {message}, and StrictHostKeyChecking is {policy}. If the "
        f"address now belongs to this host, remove its old entry: "
        f"ssh-keygen -R {_shell_word(address)} -f {_shell_word(changed[0].path)}"
    )


def _shell_word(text: str) -> str:
    """*text* as one word of a command to paste into sh, PowerShell or cmd alike.

    Double quotes, because ``[host]:port`` is a glob to zsh and a path under
    ``C:\\Users\\Ada Lovelace`` has a blank; single quotes mean nothing to cmd.
    """
    return text if re.fullmatch(r"[\w@%+=:,./~\\-]+", text) else f'"{text}"'


def _unknown(target: Target, key: paramiko.PKey, ask: Ask | None, names: list[str]) -> str:
    """An unknown host under its policy; *names* are recorded if it is accepted."""
    name, policy = target.known_hosts_name, target.strict_host_key_checking
    description = f"{key.get_name()} key {fingerprint(key)}"
    if policy == "ask" and ask is not None:
        question = (
            f"The authenticity of host '{name}' can't be established.\n"
            f"{description}.\nAre you sure you want to continue connecting (yes/no)? "
        )
        try:
            accepted = ask(question)
        except PromptUnavailable:
            accepted = None
        if accepted:
            return _record(target, key, "accepted by the user", names)
        if accepted is False:
            raise UnknownHostKey(f"Host key of {name} ({description}) was not accepted.")
    if policy in ("accept-new", "no"):
        if policy == "no":
            logger.warning("Connecting to %s without verifying its %s", name, description)
        return _record(target, key, f"new host, StrictHostKeyChecking={policy}", names)
    known = target.known_hosts_files[0] if target.known_hosts_files else "~/.ssh/known_hosts"
    alias = target.host_key_alias
    # ssh-keyscan writes the host name; under a HostKeyAlias the entry must name the alias.
    keyscan = (f"`ssh-keyscan -p {target.port} {target.hostname}` with the name in front "
               f"changed to {alias}, added to {_shell_word(known)}" if alias else
               f"`ssh-keyscan -p {target.port} {target.hostname} >> {_shell_word(known)}`")
    raise UnknownHostKey(
        f"Host {name} is not in known_hosts ({', '.join(target.known_hosts_files)}); it offered "
        f"a {description}. Check the fingerprint with the host's administrators, then either "
        f"run `ssh -p {target.port}{f' -o HostKeyAlias={alias}' if alias else ''} "
        f"{target.user}@{target.hostname}` once and answer yes, or {keyscan}, or set "
        f"strict_host_key_checking = \"accept-new\" to record new hosts automatically."
    )


def _record(target: Target, key: paramiko.PKey, why: str, names: list[str]) -> str:
    """Append *key* for *names* to the first user known_hosts file, as ssh writes it.

    Several names share one line (``host,address``), or, hashed, get a line each.
    """
    if not target.known_hosts_files:
        return why
    path = os.path.expanduser(target.known_hosts_files[0])
    name = ",".join(names)
    shown = [hash_name(n) for n in names] if target.hash_known_hosts else [name]
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        with open(path, "a+b") as f:
            lines = "".join(f"{s} {key.get_name()} {key.get_base64()}\n" for s in shown).encode()
            f.write(b"\n" + lines if _ends_mid_line(f) else lines)
    except OSError as e:
        logger.warning("could not record host key of %s in %s: %s", name, path, e)
        return f"{why} (not recorded: {e.strerror or e})"
    logger.warning("Permanently added '%s' (%s) to %s", name, key.get_name(), path)
    return f"{why}, recorded in {path}"


def _ends_mid_line(f: BinaryIO) -> bool:
    """True when the file's last line has no newline (it was edited by hand).

    Appending to it as is would glue the new entry onto that line and spoil both.
    """
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return False
    f.seek(size - 1)
    return f.read(1) != b"\n"
