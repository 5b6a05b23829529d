"""A real OpenSSH ControlMaster (``ssh -M -S sock -N -f``), logged in once through SSH_ASKPASS.

The one-time code is answered by a tiny askpass script reading a file the
test fills in; each time ssh runs it, it appends a line to a counter file,
so a test can count how many codes were asked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class OpenSshMaster:
    """A running master: control socket, config file, host alias, and the questions it asked."""

    socket: str
    config: Path
    host: str
    asked: Path
    pid: int

    def asks(self) -> int:
        """How many times ssh ran the askpass program (questions asked)."""
        return len(self.asked.read_text().splitlines()) if self.asked.exists() else 0

    def ssh(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", "-F", str(self.config), "-S", self.socket, *args, self.host],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.ssh("-O", "check").returncode == 0

    def stop(self) -> None:
        if os.path.exists(self.socket):
            self.ssh("-O", "exit")


def short_dir() -> Path:
    """A fresh directory with a short path: a socket path must fit in 104-108 bytes."""
    return Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))


def start_master(config: Path, host: str, code: Callable[[], str], where: Path,
                 *, socket_name: str = "master.sock", timeout: float = 30.0) -> OpenSshMaster:
    """``ssh -M -S <where>/<socket_name> -N -f host``, answering the questions with ``code()``.

    *config* must say everything needed to reach *host* (ssh reads ``~``
    from the password database, not ``$HOME``).
    """
    answer = where / "answer"
    answer.write_text(code() + "\n")
    answer.chmod(0o600)
    asked = where / "asked"
    askpass = where / "askpass"
    askpass.write_text(f"#!/bin/sh\necho asked >> '{asked}'\ncat '{answer}'\n")
    askpass.chmod(0o700)
    sock = str(where / socket_name)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
           "DISPLAY": os.environ.get("DISPLAY", ":0")}
    env.pop("SSH_AUTH_SOCK", None)
    result = subprocess.run(
        ["ssh", "-F", str(config), "-M", "-S", sock, "-N", "-f", "-o", "ControlPersist=no",
         "-o", "BatchMode=no", host],
        capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ssh -M failed ({result.returncode}): {result.stderr}")
    master = OpenSshMaster(socket=sock, config=config, host=host, asked=asked, pid=0)
    check = master.ssh("-O", "check")
    if check.returncode != 0:
        raise RuntimeError(f"ssh -O check failed: {check.stderr}")
    # "Master running (pid=1234)"
    master.pid = int(check.stderr.split("pid=")[1].split(")")[0])
    return master


def remove_dir(where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
