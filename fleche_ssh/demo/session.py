"""One exec request of the demo server: a child process wired to its SSH channel.

Three daemon threads copy bytes with :func:`fleche_ssh.wire.pump.copy`: the
channel to the child's stdin, its stdout to the channel, its stderr to the
channel's stderr.  A fourth waits for the child, lets its output drain,
then sends the exit status and closes the channel, as sshd does.  If the
client goes away first, the child (and what it started) is stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable
from typing import IO, cast

import paramiko

from ..wire.pump import copy
from . import command

_RECV_CHUNK = 128 * 1024
_READ_CHUNK = 256 * 1024
_POLL = 0.1  # seconds; how often blocking loops re-check for shutdown
_TERM_GRACE = 2.0  # seconds between asking a child to end and forcing it
_JOIN_TIMEOUT = 2.0
_REPLY_WAIT = 5.0  # upper bound on waiting for paramiko to answer an exec request


def _exit_status(returncode: int | None) -> int:
    """What the client is told: the exit code, or 128 + the signal that ended the child."""
    if returncode is None:
        return command.KILLED
    return returncode if returncode >= 0 else 128 - returncode


class ExecSession:
    """The child running one ``exec`` request's command, and the threads relaying its bytes.

    *stopping* is the server's shutdown flag; *done* is called once the
    session has sent its exit status and closed its channel.
    """

    def __init__(self, channel: paramiko.Channel, text: bytes, *, stopping: threading.Event,
                 done: Callable[[ExecSession], object]):
        self.channel = channel
        self._stopping = stopping
        self._done = done
        # Set once paramiko has sent the exec request's success reply; nothing
        # may go out on the channel before that (see transport.ReplyTransport).
        self.replied = threading.Event()
        self.proc = command.start(text)
        self._threads = [
            threading.Thread(target=self._pump_stdin, name="loopback-stdin", daemon=True),
            threading.Thread(
                target=self._pump_output,
                args=(self.proc.stdout, channel.send),
                name="loopback-stdout",
                daemon=True,
            ),
            threading.Thread(
                target=self._pump_output,
                args=(self.proc.stderr, channel.send_stderr),
                name="loopback-stderr",
                daemon=True,
            ),
        ]
        self._waiter = threading.Thread(target=self._wait, name="loopback-wait", daemon=True)

    def start(self) -> None:
        for t in self._threads:
            t.start()
        self._waiter.start()

    # -- relays ---------------------------------------------------------
    def _pump_stdin(self) -> None:
        stdin = cast(IO[bytes], self.proc.stdin)  # never None: Popen(stdin=PIPE)
        fd = stdin.fileno()
        try:
            # Ends when the client sends EOF or closes, or the child closes its stdin.
            copy(self.channel.recv, lambda view: os.write(fd, view), _RECV_CHUNK)
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _pump_output(self, pipe: IO[bytes], send: Callable[[memoryview], int]) -> None:
        fd = pipe.fileno()

        def read(n: int) -> bytes:
            data = os.read(fd, n)
            self.replied.wait(_REPLY_WAIT)
            return data

        try:
            copy(read, send, _READ_CHUNK)  # ends with the pipe, or the channel closing
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    def _wait(self) -> None:
        proc = self.proc
        # Wait for the child, but give up on it if the client goes away.
        while True:
            try:
                proc.wait(timeout=_POLL)
                break
            except subprocess.TimeoutExpired:
                if self.channel.closed or self._stopping.is_set():
                    self.terminate()
                    break
        self.replied.wait(_REPLY_WAIT)
        # Drain stdout/stderr before reporting the exit status.
        # (A backgrounded grandchild may hold the pipes open, like with sshd;
        # if the client gives up meanwhile, the whole process group goes.)
        for t in self._threads[1:]:
            while t.is_alive() and not self._stopping.is_set():
                t.join(_POLL)
                if self.channel.closed:
                    self.terminate_group()
        with contextlib.suppress(Exception):
            if not self.channel.closed:
                self.channel.send_exit_status(_exit_status(proc.returncode))
                self.channel.shutdown_write()
        with contextlib.suppress(Exception):
            self.channel.close()
        self._done(self)

    def terminate(self) -> None:
        """Ask the child's process group to end, force it after a grace period."""
        proc = self.proc
        if proc.poll() is not None:
            self.terminate_group()
            return
        for kill in (False, True):
            command.stop(proc, kill=kill)
            try:
                proc.wait(timeout=_TERM_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        self.terminate_group()

    def terminate_group(self) -> None:
        """Force whatever is left in the child's process group (grandchildren) to end."""
        command.stop(self.proc, kill=True)

    def close(self) -> None:
        self.terminate()
        with contextlib.suppress(Exception):
            self.channel.close()
        pipes = cast(tuple[IO[bytes], IO[bytes]], (self.proc.stdout, self.proc.stderr))
        for pipe in pipes:  # never None: Popen(stdout=PIPE, stderr=PIPE)
            with contextlib.suppress(OSError):
                pipe.close()
        for t in (*self._threads, self._waiter):
            if t is not threading.current_thread():
                t.join(_JOIN_TIMEOUT)
