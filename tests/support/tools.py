"""Which of the OpenSSH and PAM programs the real-server fixtures need are installed.

The fixtures skip locally and fail in CI when one is missing (``tests/conftest.py``
``_require``); the names returned are the Debian packages to install, as ``.ci/run`` does.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

SSHD = "/usr/sbin/sshd"
#: Where Debian-like systems put PAM modules, for any architecture.
PAM_MODULE_DIRS = ("/lib/*/security", "/usr/lib/*/security", "/lib/security",
                   "/usr/lib/security", "/usr/lib64/security")
PAM_DIR = Path("/etc/pam.d")


def missing_sshd_tools() -> list[str]:
    """Debian packages whose binaries the plain sshd fixtures need but are missing."""
    missing = []
    if not os.access(SSHD, os.X_OK):
        missing.append("openssh-server")
    if not all(shutil.which(t) for t in ("ssh-keygen", "ssh", "ssh-agent", "ssh-add")):
        missing.append("openssh-client")
    return missing


def pam_oath_module() -> str | None:
    """The installed ``pam_oath.so``, or None."""
    for pattern in PAM_MODULE_DIRS:
        found = sorted(glob.glob(os.path.join(pattern, "pam_oath.so")))
        if found:
            return found[0]
    return None


def missing_totp_tools() -> list[str]:
    """Debian packages the TOTP (pam_oath) server needs but are missing."""
    missing = missing_sshd_tools()
    if pam_oath_module() is None:
        missing.append("libpam-oath")
    if shutil.which("oathtool") is None:
        missing.append("oathtool")
    if not PAM_DIR.is_dir() or not os.access(PAM_DIR, os.W_OK):
        missing.append("writable /etc/pam.d (run as root)")
    return missing
