"""Host keys trusted or refused from elsewhere than known_hosts: two ssh_config keywords.

``KnownHostsCommand`` prints more known_hosts lines: a site that keeps its
host keys in a directory service, or a tool that fetches them, has ssh run
it.  ``RevokedHostKeys`` names a file of keys to refuse whatever
known_hosts says.  Both follow OpenSSH 9 (``sshconnect.c``): the command is
run without a shell, its output read as lines of a known_hosts file for
the name looked up, and a command that fails stops the connection; a
revoked-keys file that cannot be read refuses every host, as ssh does,
since a list that cannot be checked protects no one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess

import paramiko

from ..config.target import Target
from ..config.tokens import expand_known_hosts_command
from ..errors import HostKeyError

logger = logging.getLogger("fleche_ssh.hostkeys")

#: Bound on one run of a KnownHostsCommand, so a hanging command cannot hang a connect.
KNOWN_HOSTS_COMMAND_TIMEOUT = 30.0
#: Most output of a KnownHostsCommand, and largest RevokedHostKeys file, read.
MAX_BYTES = 16 << 20
#: How a binary key revocation list (``ssh-keygen -k``) begins.
KRL_MAGIC = b"SSHKRL\n\0"


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def command_lines(target: Target, reason: str, looked_up: str,
                  key: paramiko.PKey | None = None) -> list[tuple[int, str]]:
    """What the target's ``KnownHostsCommand`` prints, as numbered lines; none without one.

    *reason* is ``%I``: ``ORDER`` before the handshake (no key yet: ``%f``,
    ``%K`` and ``%t`` are ``NONE``, as in ssh), ``HOSTNAME`` or ``ADDRESS``
    when the key is checked under *looked_up* (``%H``).

    Raises:
        HostKeyError: the command failed, timed out or printed too much; ssh
            ends the connection there too.
    """
    if target.known_hosts_command is None:
        return []
    tokens = {"H": looked_up, "I": reason, "f": "NONE", "K": "NONE", "t": "NONE"}
    if key is not None:
        tokens.update(f=fingerprint(key), K=key.get_base64(), t=key.get_name())
    argv = expand_known_hosts_command(target.known_hosts_command, tokens)
    if not os.path.isabs(argv[0]):
        # As ssh, which logs "path is not absolute" and goes on without its keys.
        logger.error("KnownHostsCommand %r for %s: the program must be an absolute path; "
                     "not run", argv[0], target.alias)
        return []
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=KNOWN_HOSTS_COMMAND_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise HostKeyError(
            f"KnownHostsCommand {argv[0]} for {target.alias} did not finish within "
            f"{KNOWN_HOSTS_COMMAND_TIMEOUT:g} s; not connecting without the keys it gives."
        ) from None
    except OSError as e:
        raise HostKeyError(f"KnownHostsCommand {argv[0]} for {target.alias} cannot run: "
                           f"{e.strerror or e}. Check the path in your ssh config.") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-500:]
        raise HostKeyError(
            f"KnownHostsCommand {argv[0]} for {target.alias} failed (exit status "
            f"{done.returncode}){': ' + detail if detail else ''}. ssh stops there too; fix "
            f"the command or remove the KnownHostsCommand line."
        )
    if len(done.stdout) > MAX_BYTES:
        raise HostKeyError(f"KnownHostsCommand {argv[0]} for {target.alias} printed more "
                           f"than {MAX_BYTES >> 20} MiB; it is not a list of host keys.")
    text = done.stdout.decode("utf-8", "replace")
    return list(enumerate(text.splitlines(), 1))


def check_revoked(target: Target, key: paramiko.PKey, ca: bytes | None = None) -> None:
    """Refuse *key* if the target's ``RevokedHostKeys`` file lists it, or cannot be read.

    *ca* is the blob of the CA that signed the key's certificate, which the
    file may list too.

    The file lists public keys one per line (``ssh-ed25519 AAAA... comment``);
    a binary KRL is refused with a message saying it is not read, rather
    than taken for a list that revokes nothing.
    """
    path = target.revoked_host_keys
    if path is None:
        return
    shown = f"{key.get_name()} host key of {target.known_hosts_name}"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise HostKeyError(
            f"RevokedHostKeys {path} cannot be read ({e.strerror or e}): as ssh, fleche-ssh "
            f"then refuses every host. Fix the path, or remove the RevokedHostKeys line."
        ) from None
    if data.startswith(KRL_MAGIC):
        raise HostKeyError(
            f"RevokedHostKeys {path} is a binary key revocation list (KRL), which fleche-ssh "
            f"does not read, so it cannot tell whether the {shown} is revoked. List the "
            f'revoked public keys in a text file, one per line, or use type = "ssh".'
        )
    if len(data) > MAX_BYTES:
        raise HostKeyError(f"RevokedHostKeys {path} is larger than {MAX_BYTES >> 20} MiB; "
                           f"it is not a list of public keys.")
    blobs = {key.asbytes(), ca}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and _blob(fields[1]) in blobs:
            raise HostKeyError(
                f"The {shown} ({fingerprint(key)}) is revoked by {path}:{number}. Refusing "
                f"to connect: ask the administrators of {target.hostname} for the current key."
            )


def _blob(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


def refuse_revoked(target: Target, entries: list, blob: str, what: str) -> None:
    """Refuse to connect when an ``@revoked`` line among *entries* holds *blob*.

    *what* names the key in the message (the host key, or the CA that signed it).
    """
    for entry in entries:
        if entry.marker == "revoked" and entry.blob == blob:
            raise HostKeyError(
                f"{what} is marked @revoked in {entry.where}. Refusing to connect: ask the "
                f"administrators of {target.hostname} for the current key."
            )
