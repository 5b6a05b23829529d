"""Ways to reach a server other than a direct TCP connection.

* A jump host (``ProxyJump``): a ``direct-tcpip`` channel opened on the
  previous hop's authenticated transport carries the next hop's SSH
  connection, exactly as ``ssh -J`` does, with a bound on the open.
* A ``ProxyCommand``: the command's stdin/stdout carry the connection.
  Paramiko's own ``ProxyCommand`` polls the pipes with ``select()``, which
  does not work on Windows, and leaves the command's stderr unread.  Here
  two threads pump the pipes into one end of a socket pair and Paramiko
  gets the other end, which works everywhere; a third thread drains
  stderr into the log and keeps its last lines for error messages.
* A ProxyCommand with ``ProxyUseFdpass``: the command connects, hands the
  connected socket over its stdout (``SCM_RIGHTS``) and exits, and SSH runs
  on that socket, with no process in between, as ``ssh`` does.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field

import paramiko

from ..errors import ConnectionRefused, ConnectTimeout, UnsupportedByParamiko
from ..wire.paramiko_process import MAX_PACKET_SIZE, WINDOW_SIZE
from ..wire.pump import End, drain_lines, splice

logger = logging.getLogger("fleche_ssh.proxy")

_PUMP_CHUNK = 1 << 16
#: Bound on waiting for a ProxyCommand to exit once the connection is closed.
_EXIT_WAIT = 2.0


def open_jump(via: paramiko.Transport, via_label: str, hostname: str, port: int,
              timeout: float) -> paramiko.Channel:
    """A channel from the jump host *via* to ``hostname:port``, to run SSH over.

    It carries the next hop's whole connection, so its receive window bounds
    that hop's downloads as an exec channel's does: it gets the same one.
    """
    try:
        return via.open_channel("direct-tcpip", (hostname, port), ("127.0.0.1", 0),
                                window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE,
                                timeout=timeout)
    except paramiko.ChannelException as e:
        raise ConnectionRefused(
            f"Jump host {via_label} could not open a connection to {hostname} port {port} "
            f"({e.text or e}). Check that {hostname} resolves and is reachable from the jump "
            f"host, and that its sshd allows TCP forwarding (AllowTcpForwarding)."
        ) from e
    except paramiko.SSHException as e:
        raise ConnectTimeout(
            f"Jump host {via_label} did not open a connection to {hostname} port {port} within "
            f"{timeout:g} s ({e}). Raise connect_timeout on a slow link."
        ) from e


@dataclass
class ProxyProcess:
    """A running ProxyCommand and the socket Paramiko speaks through."""

    command: str
    process: subprocess.Popen[bytes]
    sock: socket.socket
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=20))

    def describe(self) -> str:
        status = self.process.poll()
        said = "\n".join(self.stderr_tail)
        parts = [f"ProxyCommand: {self.command}"]
        if status is not None:
            parts.append(f"it exited with status {status}")
        if said:
            parts.append(f"its stderr:\n{said}")
        return "; ".join(parts)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(_EXIT_WAIT)
                except subprocess.TimeoutExpired:
                    self.process.kill()


def start_proxy_command(command: str, label: str) -> ProxyProcess:
    """Run *command* (already token-expanded) and return the socket that reaches its stdio."""
    try:
        process = subprocess.Popen(
            command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, bufsize=0,
        )
    except OSError as e:
        raise ConnectionRefused(f"Cannot start ProxyCommand {command!r}: {e}") from e
    ours, theirs = socket.socketpair()
    proxy = ProxyProcess(command, process, ours)
    log = logging.getLogger(f"fleche_ssh.proxy.{label}")
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    assert stdin is not None and stdout is not None and stderr is not None
    command_end = End(read=lambda n: os.read(stdout.fileno(), n),
                      write=lambda view: os.write(stdin.fileno(), view),
                      shutdown_write=stdin.close)
    socket_end = End(read=theirs.recv, write=theirs.send,
                     shutdown_write=lambda: theirs.shutdown(socket.SHUT_WR))
    splice(command_end, socket_end, name=f"fleche-ssh-proxy-{label}", chunk=_PUMP_CHUNK,
           done=theirs.close)

    def stderr_line(text: str) -> None:
        proxy.stderr_tail.append(text.rstrip())
        log.info("%s", text.rstrip())

    def read_stderr(n: int) -> bytes:
        return os.read(stderr.fileno(), n)

    threading.Thread(target=drain_lines, args=(read_stderr, stderr_line),
                     name=f"fleche-ssh-proxy-{label}", daemon=True).start()
    return proxy


def receive_socket(command: str, timeout: float) -> socket.socket:
    """Run *command* with a UNIX socket as stdin and stdout; return the socket it passes back.

    As ``ssh``, waits for the command to exit, here within *timeout*.
    """
    if not hasattr(socket, "recv_fds") or not hasattr(socket, "AF_UNIX"):
        raise UnsupportedByParamiko(
            "ProxyUseFdpass needs a system that passes sockets between processes (SCM_RIGHTS); "
            "this one does not. Set ProxyUseFdpass no, with a ProxyCommand that carries the "
            "connection on its stdin and stdout.")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            process = subprocess.Popen(command, shell=True, stdin=theirs.fileno(),
                                       stdout=theirs.fileno(),
                                       stderr=subprocess.PIPE)
        except OSError as e:
            raise ConnectionRefused(f"Cannot start ProxyCommand {command!r}: {e}") from e
        theirs.close()
        try:
            _, said = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise ConnectTimeout(
                f"ProxyCommand {command!r} (ProxyUseFdpass) did not pass a socket and exit "
                f"within {timeout:g} s. Raise connect_timeout on a slow link.") from None
        ours.setblocking(False)
        try:
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        except BlockingIOError:
            fds = []
        for extra in fds[1:]:
            os.close(extra)
        if not fds:
            stderr = said.decode(errors="replace").strip()
            raise ConnectionRefused(
                f"ProxyCommand {command!r} exited with status {process.returncode} without "
                f"passing a socket, which ProxyUseFdpass asks for"
                + (f"; its stderr:\n{stderr}" if stderr else "."))
        return socket.socket(fileno=fds[0])
    finally:
        theirs.close()
        ours.close()
