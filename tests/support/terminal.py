"""A Python child on a pseudo-terminal: what a person at a terminal would run.

The child's stdin, stdout and stderr are the pty, so it sees a terminal
(prompts ask there, progress bars draw there).  Whatever happens in the
test, the child is reaped and the pty closed; a test that fails first
kills it, so nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class PtyChild:
    """The terminal's side a test reads and writes, and the child's exit code once it ended."""

    fd: int
    exit_code: int | None = None


@contextlib.contextmanager
def python_in_pty(code: str) -> Iterator[PtyChild]:
    """``python -c code`` on a new pty; after the block, ``exit_code`` holds how it ended."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", code])
    child = PtyChild(fd)
    try:
        yield child
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        child.exit_code = os.waitstatus_to_exitcode(status)
