"""The demo's keys: a throwaway host key for its server, a throwaway client key on disk.

Paramiko cannot generate Ed25519 keys itself, so both are generated with
``cryptography`` and loaded back into Paramiko from their OpenSSH form.
"""

from __future__ import annotations

import io
import logging
import os

import paramiko

logger = logging.getLogger(__name__)


def _ed25519_pem() -> bytes:
    """A fresh Ed25519 private key, unencrypted, in OpenSSH's file format."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    )


def host_key() -> paramiko.PKey:
    """A fresh in-memory Ed25519 host key (ECDSA if that is unavailable); never written anywhere."""
    try:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(_ed25519_pem().decode("ascii")))
    except Exception:  # pragma: no cover - depends on installed crypto backends
        logger.debug("Ed25519 host key generation failed; using ECDSA", exc_info=True)
        return paramiko.ECDSAKey.generate()


def private_file(path: str, data: bytes) -> None:
    """Write *data* to a new file only the user can read (ssh refuses group-readable keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def client_key(path: str) -> paramiko.PKey:
    """A fresh Ed25519 key in OpenSSH format at *path* (mode 600); returns it for Paramiko."""
    private_file(path, _ed25519_pem())
    return paramiko.Ed25519Key.from_private_key_file(path)
