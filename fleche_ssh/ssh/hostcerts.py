"""Host certificates: a server key signed by a CA that known_hosts trusts with ``@cert-authority``.

Sites that sign their host keys (common at HPC centres) publish one
``@cert-authority *.cluster.example.org ssh-ed25519 AAAA...`` line instead
of a line per host, so without this every login node would look unknown.
Paramiko negotiates the certificate key types and checks the handshake
signature with the key inside the certificate; everything else ssh checks
is done here, as OpenSSH 9's ``check_host_cert`` does: the CA's signature,
against an ``@cert-authority`` line whose patterns match the host; the
type "host"; the principals against the name; the validity interval; no
critical options; and the CA not revoked.  A certificate whose CA no line
trusts is set aside and its plain key checked as any other, as ssh does.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import paramiko
from paramiko.message import Message

from ..config.algorithms import SUPPORTED
from ..config.patterns import match_pattern_list
from ..config.target import Target
from ..errors import HostKeyError
from .known_sources import refuse_revoked

CERT_SUFFIX = "-cert-v01@openssh.com"
_HOST = 2
_FOREVER = (1 << 64) - 1


def cert_types(plain: tuple[str, ...] | list[str]) -> list[str]:
    """The certificate host key algorithms for *plain* ones, in the same order."""
    return [f"{name}{CERT_SUFFIX}" for name in plain if not name.endswith(CERT_SUFFIX)]


@dataclass(frozen=True)
class HostCertificate:
    """The fields of an OpenSSH certificate (PROTOCOL.certkeys) that a host check reads."""

    key_id: str
    serial: int
    kind: int
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: bytes
    ca_type: str
    ca_blob: bytes
    signed: bytes
    signature: bytes


def certificate(key: paramiko.PKey) -> HostCertificate | None:
    """The certificate *key* came in, or ``None`` for a plain key."""
    blob = key.public_blob
    if blob is None or not blob.key_type.endswith(CERT_SUFFIX):
        return None
    return parse(blob.key_blob)


def parse(blob: bytes) -> HostCertificate:
    """Read a certificate blob; :class:`HostKeyError` if it is not one."""
    try:
        m = Message(blob)
        kind = m.get_text()
        m.get_binary()  # nonce
        if kind.startswith("ssh-ed25519"):
            m.get_binary()
        elif kind.startswith("ecdsa-sha2-"):
            m.get_text()
            m.get_binary()
        elif kind.startswith("ssh-rsa"):
            m.get_mpint()
            m.get_mpint()
        else:
            raise ValueError(f"unknown certificate type {kind}")
        serial, cert_type, key_id = m.get_int64(), m.get_int(), m.get_text()
        names = Message(m.get_binary())
        valid_after, valid_before = m.get_int64(), m.get_int64()
        critical = m.get_binary()
        m.get_binary()  # extensions
        m.get_binary()  # reserved
        ca_blob = m.get_binary()
        signed = blob[:m.packet.tell()]
        signature = m.get_binary()
        principals = []
        while names.get_remainder():
            principals.append(names.get_text())
        ca_type = Message(ca_blob).get_text()
    except Exception as e:  # a malformed blob fails anywhere in Message's readers
        raise HostKeyError(f"the server sent a host certificate that cannot be read: {e}") from None
    return HostCertificate(key_id, serial, cert_type, tuple(principals), valid_after,
                           valid_before, critical, ca_type, ca_blob, signed, signature)


def verify_certificate(target: Target, cert: HostCertificate, entries: list) -> str | None:
    """Check *cert* against the ``@cert-authority`` lines among *entries*.

    Returns how it was verified, or ``None`` when no line trusts its CA (the
    caller then checks the plain key).  Raises :class:`HostKeyError` when a
    trusted CA signed it but the certificate does not hold for this host,
    or the CA is ``@revoked``.
    """
    ca = base64.b64encode(cert.ca_blob).decode()
    refuse_revoked(target, entries, ca, f"The certificate authority that signed the host key "
                   f"of {target.known_hosts_name}")
    trusted = next((e for e in entries if e.marker == "cert-authority" and e.blob == ca), None)
    if trusted is None:
        return None
    name = target.host_key_alias or target.hostname
    problem = _problem(cert, name) or _disallowed_signature(cert, target)
    if problem is None and not _signed_by(cert):
        problem = "its signature does not verify with the CA key"
    if problem is not None:
        raise HostKeyError(
            f"The host certificate of {target.known_hosts_name} (ID {cert.key_id!r}, serial "
            f"{cert.serial}), signed by the CA trusted in {trusted.where}, is not valid: "
            f"{problem}. Refusing to connect, as ssh does; ask the administrators of "
            f"{target.hostname} to renew the certificate."
        )
    return f"host certificate {cert.key_id!r} signed by the CA in {trusted.where}"


def _problem(cert: HostCertificate, name: str) -> str | None:
    """What makes *cert* invalid for host *name* now, as ssh words it; ``None`` if nothing."""
    now = int(time.time())
    if cert.kind != _HOST:
        return "it is not a host certificate"
    if now < cert.valid_after:
        return "it is not valid yet"
    if cert.valid_before != _FOREVER and now >= cert.valid_before:
        return "it has expired"
    if cert.principals and not match_pattern_list(list(cert.principals), name):
        return f"its principals ({', '.join(cert.principals)}) do not include {name}"
    if cert.critical_options:
        return "it has critical options, which no host certificate may have"
    return None


def _disallowed_signature(cert: HostCertificate, target: Target) -> str | None:
    """What is wrong if the CA signed with an algorithm CASignatureAlgorithms does not allow.

    ssh checks it before the signature itself (``sshkey_check_cert_sigtype``).
    """
    allowed = target.ca_signature_algorithms
    names = SUPPORTED["CASignatureAlgorithms"] if allowed is None else allowed.names
    try:
        kind = Message(cert.signature).get_text()
    except Exception:  # a malformed signature: _signed_by says it verifies nothing
        return None
    if kind in names:
        return None
    return f"its CA signed it with {kind}, which CASignatureAlgorithms does not allow"


def _signed_by(cert: HostCertificate) -> bool:
    try:
        ca = paramiko.PKey.from_type_string(cert.ca_type, cert.ca_blob)
        return bool(ca.verify_ssh_sig(cert.signed, Message(cert.signature)))
    except Exception:  # an unknown CA type or a malformed signature verifies nothing
        return False
