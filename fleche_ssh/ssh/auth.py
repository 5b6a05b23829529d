"""The authentication dance, following what the server says round by round.

``SSHClient`` treats partial success as success and falls back to a
prompt that echoes one-time codes.  This driver asks the server which
methods it accepts, then works through them in the order of
``PreferredAuthentications`` (OpenSSH's by default), as ``ssh`` does: each
time, the first method the server still allows, has tries left and is not
switched off (``PubkeyAuthentication no`` ...).  A method switched off is
never tried.  The methods:

* public keys: agent keys and identity files in config order (only the
  configured files when ``IdentitiesOnly``; only the kinds
  ``PubkeyAcceptedAlgorithms`` lists); an encrypted file's passphrase is
  asked once per key per process, up to three tries;
* keyboard-interactive: any number of rounds, prompts answered by the
  human on the caller's thread;
* password: asked through the same prompt handler.

After a partial success the server names what it still wants.  The driver
stops with an error naming the methods offered and tried.
"""

from __future__ import annotations

import collections
import copy
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from paramiko.agent import AgentSSH

from ..config.algorithms import CERTIFICATE
from ..config.target import Target
from ..errors import AuthenticationError, UnsupportedByParamiko
from ..prompts import Handler, Prompter, answer_while

logger = logging.getLogger("fleche_ssh.auth")

PASSPHRASE_TRIES = 3
#: Attempts per typed method, as OpenSSH's NumberOfPasswordPrompts.
ANSWER_TRIES = 3

#: Bound on reaching ssh-agent and reading its list of keys.
AGENT_TIMEOUT = 10.0


@dataclass
class AuthReport:
    """What happened: methods the server offered, and what was tried and used."""

    offered: list[str] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)


class KeyCache:
    """Identity files already loaded in this process, by path.

    A passphrase is asked once per key per process, not once per login: the
    pool that owns the cache hands it to every login it makes.  Keys are
    kept plain; certificates are chosen per target in :func:`_with_certificate`.
    """

    def __init__(self) -> None:
        self._keys: dict[str, paramiko.PKey] = {}
        self._lock = threading.Lock()

    def load(self, path: str, prompter: Prompter, can_ask: bool) -> paramiko.PKey | None:
        """The key in *path*, asking for its passphrase when it is encrypted."""
        with self._lock:
            if path in self._keys:
                return self._keys[path]
        try:
            key = paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError):
            # Encrypted: paramiko raises PasswordRequiredException for PEM keys and lets
            # cryptography's TypeError through for OpenSSH-format ones.
            if not can_ask:
                logger.debug("skipping encrypted key %s: nobody to ask for its passphrase", path)
                return None
            key = _decrypt(path, prompter)
        except (OSError, paramiko.SSHException, ValueError) as e:
            logger.debug("cannot use identity file %s: %s", path, e)
            return None
        # PKey.from_path attaches a neighbouring -cert.pub by itself; certificates are
        # chosen per target in _with_certificate, so the cached key stays plain.
        key.public_blob = None
        with self._lock:
            self._keys[path] = key
        return key

    def clear(self) -> None:
        """Forget every key: the next login asks for passphrases again."""
        with self._lock:
            self._keys.clear()

    def after_fork(self) -> None:
        """In a forked child: keep the keys (they are only data), renew the lock.

        Another thread of the parent may have held the lock at the fork; in
        the child nobody would ever release it.
        """
        self._lock = threading.Lock()


def _with_certificate(key: paramiko.PKey, path: str,
                      certificates: tuple[str, ...]) -> tuple[paramiko.PKey, str | None]:
    """*key* with the first certificate that belongs to it: CertificateFile, then ``-cert.pub``.

    A copy carries the certificate, so the cached key stays plain for targets
    configured with other certificates.
    """
    for cert in (*certificates, f"{path}-cert.pub"):
        if not os.path.exists(cert):
            continue
        candidate = copy.copy(key)
        try:
            candidate.load_certificate(cert)
        except (OSError, ValueError, paramiko.SSHException) as e:
            logger.debug("certificate %s does not go with %s: %s", cert, path, e)
            continue
        return candidate, cert
    return key, None


def _decrypt(path: str, prompter: Prompter) -> paramiko.PKey:
    for attempt in range(1, PASSPHRASE_TRIES + 1):
        passphrase = prompter.secret(f"Enter passphrase for key '{path}': ")
        try:
            secret: Any = passphrase.encode()  # cryptography wants bytes; the stub says str
            return paramiko.PKey.from_path(path, password=secret)
        except (paramiko.SSHException, ValueError):
            logger.info("wrong passphrase for %s (attempt %d of %d)", path, attempt,
                        PASSPHRASE_TRIES)
    raise AuthenticationError(
        f"Wrong passphrase for {path}, {PASSPHRASE_TRIES} times. Check it with "
        f"`ssh-keygen -y -f {path}`, or load the key into ssh-agent with `ssh-add {path}`."
    )


def _agent_keys(target: Target) -> list[paramiko.AgentKey]:
    """The keys of the agent *target* names (``IdentityAgent``), else of ``$SSH_AUTH_SOCK``.

    The socket is opened here rather than by ``paramiko.Agent``, which reads
    only the environment: setting ``SSH_AUTH_SOCK`` for the length of one
    login would race with every other login and with the rest of the process.
    """
    path = target.identity_agent or os.environ.get("SSH_AUTH_SOCK")
    if path is not None and path.lower() == "none":
        return []
    try:
        if sys.platform == "win32":
            # Pageant or the OpenSSH agent pipe: paramiko ignores SSH_AUTH_SOCK there.
            return list(paramiko.Agent().get_keys())
        if not path:
            return []
        return list(_SocketAgent(path).get_keys())
    except (paramiko.SSHException, OSError) as e:
        logger.debug("ssh-agent not usable: %s", e)
        return []


class _SocketAgent(AgentSSH):
    """Paramiko's agent client, on the UNIX socket at *path*.

    Its keys sign through this connection, so it stays open as long as they
    are referenced, as ``paramiko.Agent``'s does.  Connecting and listing the
    keys are bounded by :data:`AGENT_TIMEOUT`; signing is not, as the agent
    may be waiting for a human to confirm (``ssh-add -c``) and the login
    around it is bounded by the auth timeout.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(AGENT_TIMEOUT)
            conn.connect(path)
            self._connect(conn)
            conn.settimeout(None)
        except BaseException:
            conn.close()
            raise


def _candidate_keys(target: Target, prompter: Prompter, can_ask: bool,
                    keys: KeyCache) -> Iterator[tuple[str, paramiko.PKey]]:
    """Keys in OpenSSH's order: configured files (with matching agent keys), then the agent."""
    agent = _agent_keys(target)
    used: set[str] = set()
    for path in target.identity_files:
        pub = f"{path}.pub"
        from_agent = None
        if os.path.exists(pub):
            try:
                blob = Path(pub).read_text().split()[1]
                from_agent = next((k for k in agent if k.get_base64() == blob), None)
            except (OSError, IndexError):
                from_agent = None
        key = from_agent or (keys.load(path, prompter, can_ask) if os.path.exists(path) else None)
        if key is not None and key.get_base64() not in used:
            used.add(key.get_base64())
            name = f"agent key {path}" if from_agent else path
            if not from_agent:
                key, cert = _with_certificate(key, path, target.certificate_files)
                name = f"{path} with certificate {cert}" if cert else path
            yield name, key
    if not target.identities_only:
        for key in agent:
            if key.get_base64() not in used:
                used.add(key.get_base64())
                yield f"agent key {key.comment or key.get_fingerprint().hex()}", key


def _offered(transport: paramiko.Transport, user: str) -> list[str]:
    try:
        transport.auth_none(user)
    except paramiko.BadAuthenticationType as e:
        return list(e.allowed_types)
    except paramiko.AuthenticationException:
        return []
    return []


def authenticate(
    transport: paramiko.Transport, target: Target, prompter: Prompter, *, timeout: float,
    can_ask: bool, keys: KeyCache,
) -> AuthReport:
    """Authenticate *transport* as ``target.user``; raise :class:`AuthenticationError` if not.

    Identity files come from *keys*, so that each is decrypted once per process.
    """
    report = AuthReport(offered=_offered(transport, target.user))
    if transport.is_authenticated():
        report.used.append("none")
        return report
    order = methods(target)
    attempts: collections.Counter[str] = collections.Counter()
    remaining = list(report.offered)
    while remaining and not transport.is_authenticated():
        # As ssh: the first method of the order that the server still allows and that
        # has tries left; after a partial success the server names what it still wants.
        method = next((m for m in order if m in remaining and attempts[m] < _TRIES[m]), None)
        if method is None:
            break
        attempts[method] += 1
        step = _METHODS[method]
        remaining = step(transport, target, prompter, timeout, can_ask, keys, report) or remaining
    if transport.is_authenticated():
        return report
    raise _failure(target, report)


def methods(target: Target) -> list[str]:
    """The login methods to try, in order: PreferredAuthentications less those switched off.

    Methods Paramiko cannot do (``gssapi-with-mic``, ``hostbased``) are left out, as
    ssh leaves out a method it was built without.
    """
    order = (target.preferred_authentications or DEFAULT_METHODS).split(",")
    switched_on = {"publickey": target.pubkey_authentication,
                   "keyboard-interactive": target.kbd_interactive_authentication,
                   "password": target.password_authentication}
    return [m for m in dict.fromkeys(o.strip() for o in order) if switched_on.get(m, False)]


def _publickey(transport: paramiko.Transport, target: Target, prompter: Prompter,
               timeout: float, can_ask: bool, keys: KeyCache,
               report: AuthReport) -> list[str] | None:
    for name, key in _candidate_keys(target, prompter, can_ask, keys):
        if not _accepted(key, target):
            logger.debug("not offering %s: its kind is not in PubkeyAcceptedAlgorithms", name)
            continue
        report.tried.append(f"publickey ({name})")
        try:
            remaining = transport.auth_publickey(target.user, key)
        except paramiko.AuthenticationException:
            continue
        except paramiko.SSHException as e:
            logger.debug("key %s failed: %s", name, e)
            continue
        report.used.append(f"publickey ({name})")
        return list(remaining)
    return None


def _accepted(key: paramiko.PKey, target: Target) -> bool:
    """Whether *key* may log in under PubkeyAcceptedAlgorithms (unset: every kind may).

    An RSA key signs as ``rsa-sha2-512`` or ``rsa-sha2-256``; a certificate's
    algorithm is its key's with the certificate suffix.
    """
    accepted = target.pubkey_accepted_algorithms
    if accepted is None:
        return True
    blob = key.public_blob
    name = blob.key_type if blob is not None else key.get_name()
    suffix = CERTIFICATE if name.endswith(CERTIFICATE) else ""
    base = name.removesuffix(CERTIFICATE)
    kinds = ("rsa-sha2-512", "rsa-sha2-256") if base == "ssh-rsa" else (base,)
    return any(kind + suffix in accepted.names for kind in kinds)


def _interactive(transport: paramiko.Transport, target: Target, prompter: Prompter,
                 timeout: float, can_ask: bool, keys: KeyCache,
                 report: AuthReport) -> list[str]:
    report.tried.append("keyboard-interactive")

    def work(handler: Handler) -> list[str]:
        return list(transport.auth_interactive(target.user, handler))

    try:
        remaining = answer_while(work, prompter, timeout)
    except paramiko.AuthenticationException:
        return []
    report.used.append("keyboard-interactive")
    return remaining


def _password(transport: paramiko.Transport, target: Target, prompter: Prompter,
              timeout: float, can_ask: bool, keys: KeyCache,
              report: AuthReport) -> list[str]:
    report.tried.append("password")
    password = prompter.secret(f"{target.user}@{target.hostname}'s password: ")
    try:
        remaining = transport.auth_password(target.user, password)
    except paramiko.AuthenticationException:
        return []
    report.used.append("password")
    return list(remaining)


#: The login methods fleche-ssh can do, in OpenSSH's order (less GSSAPI and hostbased).
_METHODS = {"publickey": _publickey, "keyboard-interactive": _interactive,
            "password": _password}
DEFAULT_METHODS = ",".join(_METHODS)
#: Tries per method in one login: every key is one try; an answer may be mistyped.
_TRIES = {"publickey": 1, "keyboard-interactive": ANSWER_TRIES, "password": ANSWER_TRIES}


def _failure(target: Target, report: AuthReport) -> AuthenticationError:
    offered = ", ".join(report.offered) or "none"
    tried = ", ".join(report.tried) or "nothing"
    if report.offered and all(m.startswith("gssapi") for m in report.offered):
        return UnsupportedByParamiko(
            f"{target.label} accepts only {offered}; paramiko 5 has no GSSAPI/Kerberos. "
            f'Use the stock type = "ssh" cache for this host.'
        )
    hint = (
        f"Check that your public key is in ~/.ssh/authorized_keys on {target.hostname}, "
        f"that identity_file points at the right key ({', '.join(target.identity_files)}), "
        f"or that ssh-agent holds it."
    )
    if report.used:
        hint = (
            f"The server accepted {', '.join(report.used)} but wants more; the answers given "
            f"to its questions were refused. Check the one-time code or password and retry."
        )
    allowed = methods(target)
    if report.offered and not set(allowed) & set(report.offered):
        hint = (
            f"fleche-ssh may try only {', '.join(allowed) or 'no method'} here "
            f"(PreferredAuthentications, less the methods switched off by "
            f"PubkeyAuthentication, KbdInteractiveAuthentication, PasswordAuthentication)."
        )
    return AuthenticationError(
        f"Authentication to {target.label} failed. Server offered: {offered}; tried: {tried}. "
        f"{hint}"
    )
