"""Running the OpenSSH tools and stopping what the fixtures started, every wait bounded.

Also a free port to start a server on, and the tail of a log for the
error that says why a server did not come up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


class SshdError(RuntimeError):
    """sshd (or one of the OpenSSH helper tools) could not be started."""


def run_tool(argv: Sequence[str], *, timeout: float = 30.0, env: dict | None = None) -> str:
    """Run *argv* with no stdin; its stdout, or :class:`SshdError` with its output."""
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SshdError(f"{argv[0]} failed: {e}") from e
    if proc.returncode != 0:
        raise SshdError(
            f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, *, timeout: float = 5.0) -> None:
    """terminate -> bounded wait -> kill; also signal the process group it led."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
    # Anything left in the process group (started with start_new_session=True).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)


def tail(path: Path, n: int = 40) -> str:
    """The last *n* lines of the log at *path*."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n:])
