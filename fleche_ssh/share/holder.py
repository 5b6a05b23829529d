"""Serving a process's logins to the processes it shares them with.

A :class:`Holder` serves a :class:`~fleche_ssh.ssh.pool.ConnectionPool`
over a listener of :mod:`.local`: each local connection gets a thread of
its own, so a client waiting for a login, or a channel busy with a large
value, never holds up another.  An ``open`` request names the Target the
client resolved and the command to run; the holder takes the pool's
session for it (logging in if it holds none), lets the client check the
host keys of the login against its own known_hosts, opens an exec channel
on the session and, once the client's data connection arrives, splices
that connection to the channel's stdin and stdout with the byte pump of
:mod:`fleche_ssh.wire.pump`.  The control connection then carries the
channel's stderr and how it ended (:mod:`.protocol` says why two).

Who answers the questions of a login made here is the :class:`Grant`'s
business: the process that shared its cache with pool workers answers
them with its own handler (its terminal or notebook: a worker asks
nothing), while a holder serving whoever comes forwards each question to
the client whose call caused the login, and waits a bounded time for its
answer.  Answers pass through, never stored.  A grant is looked up from
the client's proof of its capability; a client with none gets a typed
refusal and nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..config.target import Target
from ..errors import PromptUnavailable, RemoteConnectionError
from ..prompts import Prompter, Prompts
from ..ssh.pool import ConnectionPool
from ..ssh.session import Login
from ..wire.channel import EXIT_WAIT
from ..wire.paramiko_process import ParamikoProcess
from ..wire.pump import End, splice
from . import protocol
from .protocol import EXCHANGE_TIMEOUT, Message, ShareError

logger = logging.getLogger("fleche_ssh.share")

#: Bytes of stderr per message, and per read of the splice (small answers stay small).
_STDERR_CHUNK = 1 << 16
_SPLICE_CHUNK = 1 << 18
#: How often the accept loop looks whether it was closed.
_ACCEPT_POLL = 1.0
_CLIENT = "the client"


class Listener(Protocol):
    """What a holder needs of :func:`fleche_ssh.share.local.listen`'s listener."""

    address: str

    def accept(self, timeout: float | None = None) -> socket.socket: ...

    def authenticate(self, sock: socket.socket, timeout: float) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Grant:
    """What a proven client may do: whose handler answers the logins made for it.

    ``login`` gives the Login for a target; None means the client's own
    handler answers, each question forwarded over its control connection.
    """

    login: Callable[[Target], Login] | None = None


#: Looks up the grant of a client from the nonce of its hello and the proof it sent.
Authorise = Callable[[bytes, object], "Grant | None"]


@dataclass
class _Pending:
    """A channel opened for a client, waiting for that client's data connection."""

    process: ParamikoProcess
    attached: threading.Event


class Holder:
    """Serves *pool*'s logins to the clients *authorise* accepts."""

    def __init__(self, pool: ConnectionPool, authorise: Authorise, *,
                 background: bool = False) -> None:
        self._pool = pool
        self._authorise = authorise
        #: A holder process of its own (ControlPersist): it forgets decrypted identity
        #: files after each login, and answers ``logins`` and ``logout``.
        self._background = background
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        #: Control connections being served, and when the last one ended.
        self._busy = 0
        #: Local connections accepted and not yet ended, whatever they ask.
        self._connections = 0
        self._idle_since = time.monotonic()
        #: How long it stays unused before it exits (:meth:`run_until_idle`), if it does.
        self._keep: float | None = None

    # -- the listener -------------------------------------------------------------------

    def serve(self, listener: Listener) -> threading.Thread:
        """Accept connections on *listener* on a daemon thread until :meth:`close`."""
        thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                  name="fleche-ssh-share", daemon=True)
        thread.start()
        return thread

    def _accept_loop(self, listener: Listener) -> None:
        while not self._closed.is_set():
            try:
                sock = listener.accept(timeout=_ACCEPT_POLL)
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                continue
            threading.Thread(target=self._checked, args=(listener, sock),
                             name="fleche-ssh-share-client", daemon=True).start()

    def _checked(self, listener: Listener, sock: socket.socket) -> None:
        with self._lock:
            self._connections += 1
        try:
            listener.authenticate(sock, EXCHANGE_TIMEOUT)
        except (RemoteConnectionError, OSError) as e:
            logger.warning("refused a local connection to %s: %s", listener.address, e)
            sock.close()
            return
        else:
            self.handle(sock)
        finally:
            with self._lock:
                self._connections -= 1

    def close(self) -> None:
        """Stop accepting; channels already spliced run on until their clients close them."""
        self._closed.set()

    def run_until_idle(self, idle: float, poll: float = 0.5) -> str:
        """Wait until nothing used the pool for *idle* s, its login died, or :meth:`close`.

        The idle time counts from the end of the last control connection,
        so from the last channel closing (a channel's control connection
        lives as long as the channel): ControlPersist's rule.  A dead login
        ends the holder once no local connection is being served: the
        channels on that login end by themselves (their clients are told
        the connection was lost), while a client that came after the loss
        (a read sent again) is logging in anew through this holder and must
        not have its new login closed under it.  Returns why it stopped.
        """
        self._keep = idle
        while not self._closed.wait(poll):
            sessions = self._pool.sessions()
            with self._lock:
                serving = self._connections > 0
                quiet = self._busy == 0 and time.monotonic() - self._idle_since >= idle
            if sessions and not serving and not any(session.alive() for session in sessions):
                return "its login's connection was lost"
            if quiet:
                return f"unused for {idle:g} s"
        return "asked to log out"

    # -- one local connection -----------------------------------------------------------

    def handle(self, sock: socket.socket) -> None:
        """Serve one local connection, already proven to be this user's, to its end."""
        keep = False
        try:
            hello, nonce = protocol.hello()
            protocol.send(sock, hello)
            request = protocol.receive(sock, EXCHANGE_TIMEOUT, _CLIENT)
            if request.get("version") != protocol.VERSION:
                raise protocol.VersionMismatch(
                    f"the client speaks sharing protocol {request.get('version')!r}, the "
                    f"holder {protocol.VERSION}")
            grant = self._authorise(nonce, request.get("proof"))
            if grant is None:
                raise ShareError("refused: the client did not prove it was handed this login")
            if request["t"] == "data":
                keep = self._attach(sock, request)
            else:
                self._serve_request(sock, request, grant)
        except (RemoteConnectionError, OSError) as e:
            logger.debug("local client: %s", e)
            with contextlib.suppress(OSError):
                protocol.send(sock, protocol.error(e))
        finally:
            if not keep:
                sock.close()

    def _serve_request(self, sock: socket.socket, request: Message, grant: Grant) -> None:
        kind = request["t"]
        if kind == "logins" and self._background:
            # Looking at the logins is not using them: the idle timer runs on.
            protocol.send(sock, {"t": "logins", "pid": os.getpid(), "keep": self._keep,
                                 "logins": [dataclasses.asdict(login)
                                            for login in self._pool.snapshot()]})
        elif kind == "logout" and self._background:
            # The answer goes first: once closed, the main thread may exit the
            # process before this thread is scheduled again.
            try:
                protocol.send(sock, {"t": "logout", "pid": os.getpid()})
            finally:
                self.close()
        elif kind in ("open", "login"):
            with self._lock:
                self._busy += 1
            try:
                self._serve_channel(sock, request, grant)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle_since = time.monotonic()
        else:
            raise ShareError(f"unknown request {kind!r}")

    def _serve_channel(self, sock: socket.socket, request: Message, grant: Grant) -> None:
        target = protocol.target_from_data(request.get("target"), _CLIENT)
        command = request.get("command")
        if not isinstance(command, str):
            raise ShareError("the client sent no command")
        login = self._login(sock, grant, target, request)
        try:
            session = self._pool.session(target, login)
        finally:
            if self._background:
                self._pool.forget_keys()
        hops = [*target.chain(), target]
        keys = []
        for hop in hops:
            hop_session = self._pool.get(hop)
            if hop_session is None:
                raise ShareError(f"the login to {hop.label} went away")
            key = hop_session.transport.get_remote_server_key()
            keys.append([key.get_name(), key.get_base64()])
        protocol.send(sock, {"t": "hostkeys", "keys": keys})
        verdict = protocol.receive(sock, login.auth_timeout, _CLIENT)
        if verdict["t"] != "trust":
            logger.info("a client refused the host key of %s", target.label)
            return
        if request["t"] == "login":
            protocol.send(sock, {"t": "opened", "channel": ""})
            return
        process = ParamikoProcess.open(session, command)
        token = secrets.token_hex(16)
        pending = _Pending(process, threading.Event())
        with self._lock:
            self._pending[token] = pending
        try:
            protocol.send(sock, {"t": "opened", "channel": token})
            if not pending.attached.wait(EXCHANGE_TIMEOUT):
                raise ShareError("the client never opened its data connection")
            logger.debug("channel on %s shared: %s", target.label, command)
            self._relay_stderr(sock, process)
        finally:
            with self._lock:
                self._pending.pop(token, None)
            process.kill()

    def _relay_stderr(self, sock: socket.socket, process: ParamikoProcess) -> None:
        """The channel's stderr to the client as it comes, then how the command ended."""
        while data := process.recv_stderr(_STDERR_CHUNK):
            protocol.send(sock, {"t": "stderr", "data": base64.b64encode(data).decode()})
        status = process.exit_status(EXIT_WAIT)
        protocol.send(sock, {"t": "exit", "status": status, "signal": process.exit_signal(),
                             "alive": process.connection_alive(),
                             "lost": process.lost_reason()})

    def _attach(self, sock: socket.socket, request: Message) -> bool:
        """Splice a client's data connection to the channel it was opened for."""
        with self._lock:
            pending = self._pending.pop(str(request.get("channel")), None)
        if pending is None:
            raise ShareError("no channel waits for this data connection")
        sock.settimeout(None)
        protocol.tune_data(sock)
        process = pending.process

        def shut() -> None:
            sock.shutdown(socket.SHUT_WR)

        splice(End(process.recv, process.send, process.shutdown_write, process.recv_into),
               End(sock.recv, sock.send, shut, sock.recv_into), name="fleche-ssh-share-data",
               chunk=_SPLICE_CHUNK, done=sock.close)
        pending.attached.set()
        return True

    # -- logging in for a client --------------------------------------------------------

    def _login(self, sock: socket.socket, grant: Grant, target: Target,
               request: Message) -> Login:
        if grant.login is not None:
            return grant.login(target)
        timeout = _number(request.get("auth_timeout"), 300.0)
        return Login(prompter=Prompter(_forward(sock, timeout)), auth_timeout=timeout,
                     can_ask=bool(request.get("can_ask")) and not target.batch_mode)


def _forward(sock: socket.socket, timeout: float) -> Callable[[str, str, Prompts], list[str]]:
    """A prompt handler asking the client at the other end of *sock*, waiting *timeout* s."""

    def ask(title: str, instructions: str, prompts: Prompts) -> list[str]:
        protocol.send(sock, {"t": "ask", "title": title, "instructions": instructions,
                             "prompts": [[text, bool(echo)] for text, echo in prompts]})
        reply = protocol.receive(sock, timeout, _CLIENT)
        answers = reply.get("answers")
        if reply["t"] == "answers" and isinstance(answers, list):
            return [str(a) for a in answers]
        raise PromptUnavailable(str(reply.get("message") or "the client could not answer"))

    return ask


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and value > 0 else default


def main(argv: list[str]) -> int:
    """``python -m fleche_ssh.share.holder NAME IDLE``: hold logins for this user's processes.

    Started by :mod:`.persist` with ``subprocess`` in a session of its own
    (never forked from a threaded process).  Of several started at once for
    one name, the first to listen wins and the others exit at once
    (:class:`~fleche_ssh.errors.AddressInUse`): one login, one prompt.  It
    logs to ``NAME.log`` in the private directory; no answer, code or key is
    ever logged.
    """
    from ..errors import AddressInUse
    from ..ssh.pool import ConnectionPool as Pool
    from . import local, place

    name, idle = argv[0], float(argv[1])
    logging.basicConfig(filename=place.file_in(place.directory(), name, ".log"),
                        level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        listener = local.listen(name)
    except AddressInUse:
        return 0
    pool = Pool()
    holder = Holder(pool, lambda nonce, given: Grant(), background=True)
    holder.serve(listener)
    logger.info("holding logins at %s (pid %d) until unused for %g s", listener.address,
                os.getpid(), idle)
    try:
        logger.info("exiting: %s", holder.run_until_idle(idle))
    finally:
        holder.close()
        listener.close()
        pool.close_all()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
