"""A throwaway SSH server on 127.0.0.1, so ``fleche-ssh demo`` needs no sshd.

Why this exists
---------------
``fleche-ssh demo`` wants to show a newcomer the whole flow -- host-key
check, public-key login, an optional one-time code, then ``python -m fleche
remote --serve`` answering cache requests over an SSH channel -- without asking
them to configure a system ``sshd``, create users or touch ``~/.ssh``.  This
module provides just enough of an SSH server, built on
:class:`paramiko.ServerInterface`, to be that endpoint.

What it is not
--------------
This is a demo endpoint, not a production server:

* it only ever listens on ``127.0.0.1`` (an ephemeral port chosen by the OS);
* its host key is generated in memory for each run and never written anywhere;
* there is one user: any username is accepted, as long as the client proves it
  holds the single ``authorized_key`` (plus, optionally, the one-time code);
* only ``exec`` requests on ``session`` channels are served (via
  ``/bin/sh -c``, as the current local user); no shells, ptys, env requests,
  subsystems or port forwarding.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import IO, Any, cast

import paramiko

from ..wire.pump import copy

__all__ = ["LoopbackServer"]

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_WINDOW_SIZE = 16 * 1024 * 1024
_MAX_PACKET_SIZE = 32768
_RECV_CHUNK = 128 * 1024
_READ_CHUNK = 256 * 1024
_POLL = 0.1  # seconds; how often blocking loops re-check for shutdown
_TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for a child
_JOIN_TIMEOUT = 2.0
_REPLY_WAIT = 5.0  # upper bound on waiting for paramiko to answer an exec request

_CODE_PROMPT = "One-time code: "


def _generate_host_key() -> paramiko.PKey:
    """Return a fresh in-memory Ed25519 host key (ECDSA if that is unavailable).

    paramiko cannot generate Ed25519 keys itself, so generate one with
    ``cryptography`` and load its OpenSSH serialisation back into paramiko.
    """
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.OpenSSH,
            encryption_algorithm=serialization.NoEncryption(),
        )
        return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode("ascii")))
    except Exception:  # pragma: no cover - depends on installed crypto backends
        logger.debug("Ed25519 host key generation failed; using ECDSA", exc_info=True)
        return paramiko.ECDSAKey.generate()


class _Session:
    """One ``exec`` request: a ``/bin/sh -c`` child wired to an SSH channel."""

    def __init__(self, server: LoopbackServer, channel: paramiko.Channel, command: bytes):
        self.server = server
        self.channel = channel
        # Set once paramiko has sent the exec request's success reply; nothing
        # may go out on the channel before that (see _Transport).
        self.replied = threading.Event()
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            start_new_session=True,  # own process group: kill grandchildren too
        )
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
                rc = proc.wait(timeout=_POLL)
                break
            except subprocess.TimeoutExpired:
                if self.channel.closed or self.server._stopping.is_set():
                    self.terminate()
                    rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
                    break
        self.replied.wait(_REPLY_WAIT)
        # Drain stdout/stderr before reporting the exit status.
        # (A backgrounded grandchild may hold the pipes open, like with sshd;
        # if the client gives up meanwhile, the whole process group goes.)
        for t in self._threads[1:]:
            while t.is_alive() and not self.server._stopping.is_set():
                t.join(_POLL)
                if self.channel.closed:
                    self.terminate_group()
        with contextlib.suppress(Exception):
            if not self.channel.closed:
                self.channel.send_exit_status(rc if rc >= 0 else 128 - rc)
                self.channel.shutdown_write()
        with contextlib.suppress(Exception):
            self.channel.close()
        self.server._forget_session(self)

    def terminate(self) -> None:
        """SIGTERM the child's process group, SIGKILL it after a grace period."""
        proc = self.proc
        if proc.poll() is not None:
            self.terminate_group()
            return
        for sig, grace in ((signal.SIGTERM, _TERM_GRACE), (signal.SIGKILL, _TERM_GRACE)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        self.terminate_group()

    def terminate_group(self) -> None:
        """SIGKILL whatever is left in the child's process group (grandchildren)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

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


class _Interface(paramiko.ServerInterface):
    """Per-connection authentication state and channel policy.

    paramiko calls :meth:`check_auth_publickey` *before* it has verified the
    client's signature (and also for signature-less "would you accept this key?"
    probes), so the key match alone must not count as the first factor.  The
    first factor is only recorded once the very key object paramiko hands us
    has successfully verified a signature; see :meth:`check_auth_publickey`.
    """

    def __init__(self, server: LoopbackServer):
        self.server = server
        self.key_verified = False
        self.code_sent = False

    # -- authentication -------------------------------------------------
    def get_allowed_auths(self, username: str) -> str:
        if self.server.one_time_code is not None and self.key_verified:
            return "keyboard-interactive"
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if not hmac.compare_digest(key.asbytes(), self.server.authorized_key.asbytes()):
            return paramiko.AUTH_FAILED
        if self.server.one_time_code is None:
            # paramiko itself turns this into AUTH_FAILED if the signature is bad.
            return paramiko.AUTH_SUCCESSFUL
        # Two-factor: remember the key only once its signature checks out.
        verify = key.verify_ssh_sig

        def verify_and_record(data, msg):
            ok = verify(data, msg)
            if ok:
                self.key_verified = True
            return ok

        key.verify_ssh_sig = verify_and_record
        return paramiko.AUTH_PARTIALLY_SUCCESSFUL

    def check_auth_interactive(self, username: str, submethods):
        code = self.server.one_time_code
        if code is None or not self.key_verified:
            return paramiko.AUTH_FAILED
        self.code_sent = True
        callback = self.server.on_code_requested
        if callback is not None:
            try:
                callback(code)
            except Exception:
                logger.exception("on_code_requested callback failed")
        query = paramiko.InteractiveQuery("", "")
        query.add_prompt(_CODE_PROMPT, echo=False)
        return query

    def check_auth_interactive_response(self, responses) -> int:
        code = self.server.one_time_code
        if code is None or not self.key_verified or not self.code_sent:
            return paramiko.AUTH_FAILED
        self.code_sent = False
        if len(responses) != 1:
            return paramiko.AUTH_FAILED
        answer = str(responses[0]).strip().encode("utf-8")
        if hmac.compare_digest(answer, code.encode("utf-8")):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    # -- channels -------------------------------------------------------
    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command) -> bool:
        if self.server._stopping.is_set():
            return False
        if isinstance(command, str):
            command = command.encode("utf-8", "surrogateescape")
        try:
            session = _Session(self.server, channel, command)
        except OSError:
            logger.exception("could not start %r", command)
            return False
        self.server._add_session(session)
        transport = channel.get_transport()
        if isinstance(transport, _Transport):
            transport.awaiting_reply.append(session)
        else:  # pragma: no cover - defensive
            session.replied.set()
        session.start()
        return True

    def check_channel_pty_request(self, *args, **kwargs) -> bool:
        return False

    def check_channel_shell_request(self, channel) -> bool:
        return False

    def check_channel_subsystem_request(self, channel, name) -> bool:
        return False

    def check_channel_env_request(self, channel, name, value) -> bool:
        return False


class _Transport(paramiko.Transport):
    """A server Transport that tells sessions when their exec reply went out.

    paramiko invokes ``check_channel_exec_request`` from the transport thread
    and only sends the CHANNEL_SUCCESS reply *after* it returns.  A command that
    finishes instantly could otherwise get its output, exit status and CLOSE
    on the wire before that reply, and paramiko's client then fails
    ``exec_command`` with "Channel closed".  The reply is the next message the
    transport thread itself sends after the callback, so we mark pending
    sessions as replied right after that send.  (This hooks a private paramiko
    method; sessions also stop waiting after ``_REPLY_WAIT`` seconds.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting_reply: list[_Session] = []

    def _send_user_message(self, data: Any) -> None:
        try:
            return super()._send_user_message(data)
        finally:
            if self.awaiting_reply and threading.current_thread() is self:
                pending, self.awaiting_reply = self.awaiting_reply, []
                for session in pending:
                    session.replied.set()


class LoopbackServer:
    """A throwaway SSH server on ``127.0.0.1`` for ``fleche-ssh demo``.

    It exists so a newcomer can watch the full fleche-over-SSH flow with no
    system sshd.  It is deliberately minimal: loopback only, a fresh in-memory
    host key per instance, a single authorized public key (any username), an
    optional one-time code asked via keyboard-interactive after the key, and
    only ``exec`` requests, run with ``/bin/sh -c`` as the current user.

    Usage::

        with LoopbackServer(authorized_key=client_key) as srv:
            print(srv.known_hosts_line())   # pin srv.host_key on the client
            ...connect to 127.0.0.1:srv.port...

    Args:
        authorized_key: the only key allowed to log in (public blobs compared).
        one_time_code: if given, public-key auth is only a partial success and
            the client must then answer the "One-time code: " keyboard-interactive
            prompt with this code.
        on_code_requested: called with the code right when the
            keyboard-interactive round starts (the demo prints it, as a phone
            would show it).
    """

    def __init__(
        self,
        *,
        authorized_key: paramiko.PKey,
        one_time_code: str | None = None,
        on_code_requested: Callable[[str], None] | None = None,
    ):
        self.authorized_key = authorized_key
        self.one_time_code = one_time_code
        self.on_code_requested = on_code_requested
        self.host_key: paramiko.PKey = _generate_host_key()
        self.port: int = 0
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._transports: set[paramiko.Transport] = set()
        self._sessions: set[_Session] = set()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------
    def start(self) -> LoopbackServer:
        """Bind ``127.0.0.1:0`` and serve connections from a daemon thread."""
        if self._listener is not None:
            raise RuntimeError("LoopbackServer already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((_HOST, 0))
        sock.listen(16)
        sock.settimeout(_POLL)
        self._listener = sock
        self.port = sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="loopback-accept", daemon=True)
        self._threads.append(t)
        t.start()
        return self

    def stop(self) -> None:
        """Stop listening, drop every connection and kill every child process."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            sessions = list(self._sessions)
            transports = list(self._transports)
        for session in sessions:
            session.terminate()
        for transport in transports:
            with contextlib.suppress(Exception):
                transport.close()
        for session in sessions:
            session.close()
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(_JOIN_TIMEOUT)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def known_hosts_line(self) -> str:
        """The ``known_hosts`` entry pinning this server's throwaway host key."""
        if not self.port:
            raise RuntimeError("LoopbackServer not started")
        return f"[{_HOST}]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}"

    # -- internals ------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break  # listener closed by stop()
            if self._stopping.is_set():
                conn.close()
                break
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(
                target=self._serve_connection, args=(conn,), name="loopback-conn", daemon=True
            )
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        transport = _Transport(
            conn,
            default_window_size=_WINDOW_SIZE,
            default_max_packet_size=_MAX_PACKET_SIZE,
        )
        transport.add_server_key(self.host_key)
        with self._lock:
            if self._stopping.is_set():
                transport.close()
                return
            self._transports.add(transport)
        try:
            transport.start_server(server=_Interface(self))
            # Sessions are driven from the ServerInterface callbacks; draining
            # accept() just keeps paramiko's queue of opened channels short.
            # The accepted channels must stay referenced: Channel.__del__
            # closes the channel, so dropping one here would kill the session
            # the client has just opened.
            channels: list[paramiko.Channel] = []
            while transport.is_active() and not self._stopping.is_set():
                chan = transport.accept(timeout=_POLL * 5)
                channels = [c for c in channels if not c.closed]
                if chan is not None:
                    channels.append(chan)
        except Exception as exc:  # handshake failure, client vanished, ...
            logger.debug("loopback connection ended: %r", exc)
        finally:
            with contextlib.suppress(Exception):
                transport.close()
            with self._lock:
                self._transports.discard(transport)

    def _add_session(self, session: _Session) -> None:
        with self._lock:
            self._sessions.add(session)

    def _forget_session(self, session: _Session) -> None:
        with self._lock:
            self._sessions.discard(session)
