"""A throwaway SSH server on 127.0.0.1, so ``fleche-ssh demo`` needs no sshd.

Why this exists
---------------
``fleche-ssh demo`` wants to show a newcomer the whole flow -- host-key
check, public-key login, an optional one-time code, then ``python -m fleche
remote --serve`` answering cache requests over an SSH channel -- without asking
them to configure a system ``sshd``, create users or touch ``~/.ssh``.  This
package provides just enough of an SSH server, built on Paramiko's server
side, to be that endpoint.

What it is not
--------------
This is a demo endpoint, not a production server:

* it only ever listens on ``127.0.0.1`` (an ephemeral port chosen by the OS);
* its host key is generated in memory for each run and never written anywhere;
* there is one user: any username is accepted, as long as the client proves it
  holds the single ``authorized_key`` (plus, optionally, the one-time code);
* only ``exec`` requests on ``session`` channels are served, as the current
  local user (fleche's own server command directly, anything else through
  ``/bin/sh -c``, see :mod:`.command`); no shells, ptys, env requests,
  subsystems or port forwarding.

This module accepts connections and keeps track of them; the rest is in
:mod:`.policy` (who may log in), :mod:`.session` (a command wired to its
channel), :mod:`.command` (starting and stopping it), :mod:`.transport`
(the exec reply's ordering) and :mod:`.keys`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Callable

import paramiko

from . import keys
from .policy import Policy
from .session import ExecSession
from .transport import ReplyTransport

__all__ = ["LoopbackServer"]

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_WINDOW_SIZE = 16 * 1024 * 1024
_MAX_PACKET_SIZE = 32768
_POLL = 0.1  # seconds; how often blocking loops re-check for shutdown
_JOIN_TIMEOUT = 2.0


class LoopbackServer:
    """A throwaway SSH server on ``127.0.0.1`` for ``fleche-ssh demo``.

    It exists so a newcomer can watch the full fleche-over-SSH flow with no
    system sshd.  It is deliberately minimal: loopback only, a fresh in-memory
    host key per instance, a single authorized public key (any username), an
    optional one-time code asked via keyboard-interactive after the key, and
    only ``exec`` requests, run as the current user.

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
        self.host_key: paramiko.PKey = keys.host_key()
        self.port: int = 0
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._transports: set[paramiko.Transport] = set()
        self._sessions: set[ExecSession] = set()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------
    def start(self) -> LoopbackServer:
        """Bind ``127.0.0.1:0`` and serve connections from a daemon thread."""
        if self._listener is not None:
            raise RuntimeError("LoopbackServer already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if os.name == "posix":  # elsewhere it would let another socket take the port
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
        transport = ReplyTransport(
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
            transport.start_server(server=Policy(
                authorized_key=self.authorized_key, one_time_code=self.one_time_code,
                on_code_requested=self.on_code_requested,
                run=functools.partial(self._run, transport)))
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

    def _run(self, transport: ReplyTransport, channel: paramiko.Channel, command: bytes) -> bool:
        """Start *command* on *channel*; its output waits for the exec request's reply to go out."""
        if self._stopping.is_set():
            return False
        try:
            session = ExecSession(channel, command, stopping=self._stopping,
                                  done=self._forget_session)
        except OSError:
            logger.exception("could not start %r", command)
            return False
        with self._lock:
            self._sessions.add(session)
        transport.awaiting_reply.append(session.replied)
        session.start()
        return True

    def _forget_session(self, session: ExecSession) -> None:
        with self._lock:
            self._sessions.discard(session)
