"""Client keys made by the real ``ssh-keygen``, and known_hosts lines as OpenSSH writes them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from .processes import run_tool


def make_client_key(
    path: Path, *, passphrase: str = "", key_type: str = "ed25519", comment: str = "fleche-test"
) -> str:
    """Create an OpenSSH private key at *path* (+ ``.pub``); return the public key line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", comment, "-f", str(path)]
    if key_type == "rsa":
        argv[4:4] = ["-b", "3072"]
    run_tool(argv)
    path.chmod(0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def known_hosts_entry(host: str, port: int) -> str:
    """The host part of a known_hosts line as OpenSSH writes it."""
    return host if port == 22 else f"[{host}]:{port}"


def hash_known_host(entry: str, salt: bytes | None = None) -> str:
    """OpenSSH ``HashKnownHosts`` form: ``|1|base64(salt)|base64(HMAC-SHA1(salt, entry))``."""
    salt = os.urandom(20) if salt is None else salt
    digest = hmac.new(salt, entry.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
