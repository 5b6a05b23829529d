"""A real ``ssh-agent`` on a socket of its own, and ``ssh-add`` to load keys into it."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .processes import START_TIMEOUT, SshdError, run_tool, stop_process, tail


@dataclass
class Agent:
    """A foreground ``ssh-agent -D`` on its own socket."""

    socket_path: Path
    process: subprocess.Popen
    workdir: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SSH_AUTH_SOCK": str(self.socket_path)}

    def add(self, keyfile: Path, *, passphrase: str = "") -> None:
        """``ssh-add keyfile`` into this agent (passphrase fed through SSH_ASKPASS)."""
        env = {**os.environ, **self.env}
        env.pop("DISPLAY", None)
        if passphrase:
            askpass = self.workdir / f"askpass-{uuid.uuid4().hex[:8]}"
            askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(passphrase)}\n")
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        run_tool(["ssh-add", str(keyfile)], env=env, timeout=15)

    def list_keys(self) -> list[str]:
        proc = subprocess.run(
            ["ssh-add", "-L"],
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return [ln for ln in proc.stdout.splitlines() if ln.strip() and " " in ln]

    def stop(self) -> None:
        stop_process(self.process)
        self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_agent(workdir: Path, *, timeout: float = START_TIMEOUT) -> Agent:
    """Start ``ssh-agent -D -a SOCKET`` in the foreground; wait (bounded) for its socket."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "agent.sock"
    if len(str(sock)) > 100:  # AF_UNIX path limit (108) with some margin
        sock = Path(tempfile.mkdtemp(prefix="flagt-")) / "agent.sock"
    sock.unlink(missing_ok=True)
    log_path = workdir / "ssh-agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(sock)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    agent = Agent(socket_path=sock, process=proc, workdir=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SshdError(f"ssh-agent exited with {proc.returncode}: {tail(log_path)}")
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(1.0)
                    s.connect(str(sock))
                return agent
            except OSError:
                pass
        time.sleep(0.02)
    agent.stop()
    raise SshdError(f"ssh-agent socket {sock} did not appear in time: {tail(log_path)}")
