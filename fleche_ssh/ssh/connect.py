"""From a :class:`~fleche_ssh.config.target.Target` to an authenticated :class:`Session`.

Connecting is where Paramiko's defaults cost the most, so the socket and
transport are set up here: TCP_NODELAY (without it every small round trip
waits ~40 ms for delayed ACKs), TCP keepalive, AES-GCM first (Paramiko
lists it last, and the client's order wins), host key algorithms ordered
by what known_hosts holds for the host, and a Transport that survives a
channel closing while keys are renegotiated (:mod:`fleche_ssh.ssh.transport`).
Each channel's receive window is chosen by whoever opens it.  The host key
is checked before anything is sent that a wrong server could use, and only
then does the login start.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import paramiko

from ..config.target import Target
from ..errors import (
    ConnectionRefused,
    ConnectTimeout,
    HostNotFound,
    RemoteConnectionError,
    UnsupportedByParamiko,
)
from . import hostkeys
from .auth import KeyCache, authenticate
from .hostcerts import cert_types
from .liveness import Keepalive
from .proxy import ProxyProcess, open_jump, start_proxy_command
from .session import Login, Session
from .transport import Transport

logger = logging.getLogger("fleche_ssh.session")
# Paramiko logs every failed handshake with a traceback at ERROR.  Without a handler
# of its own, Python's last-resort handler would print those to stderr on top of the
# typed error the user gets; with this one they reach only logging the user set up.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: Bound on TCP connect and the SSH handshake when ConnectTimeout is not set.
DEFAULT_CONNECT_TIMEOUT = 30.0

_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def open_socket(target: Target) -> socket.socket:
    """TCP connection to the target, tuned for request/response and long idles."""
    timeout = target.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
    except socket.gaierror as e:
        raise HostNotFound(
            f"Cannot resolve host name {target.hostname!r} (from host {target.alias!r}): "
            f"{e.strerror or e}. Check the spelling, HostName in your ssh config, or your VPN."
        ) from e
    except ConnectionRefusedError as e:
        raise ConnectionRefused(
            f"{target.hostname} port {target.port} refused the connection: no SSH server "
            f"listens there. Check the port (Port / port key) and that sshd runs."
        ) from e
    except TimeoutError as e:
        raise ConnectTimeout(
            f"Connecting to {target.hostname} port {target.port} timed out after {timeout:g} s. "
            f"Check the network or VPN, or raise connect_timeout."
        ) from e
    except OSError as e:
        raise ConnectionRefused(
            f"Cannot connect to {target.hostname} port {target.port}: {e.strerror or e}. "
            f"Check the network or VPN."
        ) from e
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _TCP_KEEPALIVE:
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock


# TCP keepalive after 60 s idle, every 15 s, 4 probes: the kernel's own liveness check
# under the SSH-level one, and NAT/VPN state kept warm (where the platform allows tuning).
_TCP_KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4))


def _open_route(target: Target, via: Session | None) -> tuple[Any, ProxyProcess | None]:
    """The byte stream to run SSH over: a jump channel, a ProxyCommand, or TCP."""
    timeout = target.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    if via is not None:
        channel = open_jump(via.transport, via.target.label, target.hostname, target.port,
                            timeout)
        via.track(channel)  # the jump host's login is in use while the next hop is
        return channel, None
    if target.proxy_command is not None:
        proxy = start_proxy_command(target.proxy_command, target.alias)
        return proxy.sock, proxy
    return open_socket(target), None


def checked_address(target: Target, sock: Any, proxy: ProxyProcess | None,
                    via: Session | None) -> str | None:
    """The server's address as known_hosts writes it, when ``CheckHostIP`` applies.

    As ssh decides: only when it is on, over a TCP connection of our own
    (through a proxy or jump host the address is not the server's), not to
    a loopback address, and not when the host was given as that very text.
    """
    if not target.check_host_ip or proxy is not None or via is not None:
        return None
    try:
        address = ipaddress.ip_address(sock.getpeername()[0])
    except (OSError, ValueError):
        return None
    text = str(address) if target.port == 22 else f"[{address}]:{target.port}"
    return None if address.is_loopback or text == target.hostname else text


def _prefer(available: tuple[str, ...], first: list[str] | tuple[str, ...]) -> list[str]:
    chosen = [name for name in first if name in available]
    return chosen + [name for name in available if name not in chosen]


def start_transport(target: Target, sock: Any, key_types: list[str]) -> Transport:
    """Run the SSH handshake on *sock*: key exchange only, no host key check yet.

    *key_types* are the host key types known_hosts holds for the target, asked
    for first so that a host offering several keys sends the one on record.
    """
    timeout = target.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    transport = Transport(sock)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    options = transport.get_security_options()
    options.ciphers = _prefer(options.ciphers, _PREFERRED_CIPHERS)
    # Certificates last unless known_hosts trusts a CA for the host (see known_key_types).
    options.key_types = _prefer((*options.key_types, *cert_types(options.key_types)), key_types)
    transport.use_compression(target.compression)
    try:
        transport.start_client(timeout=timeout)
    except paramiko.SSHException as e:
        transport.close()
        text = str(e)
        if "Incompatible" in text or "no acceptable" in text:
            raise UnsupportedByParamiko(
                f"{target.label}: no algorithm in common with the server ({text}). Paramiko 5 "
                f"has no SHA-1 algorithms (ssh-rsa host keys, SHA-1 key exchange); use the stock "
                f'type = "ssh" cache for this host, or ask for a modern host key.'
            ) from e
        raise ConnectTimeout(
            f"SSH handshake with {target.label} failed: {text}. Is an SSH server listening "
            f"on that port? On a slow link, raise connect_timeout (now {timeout:g} s)."
        ) from e
    except EOFError as e:
        transport.close()
        raise RemoteConnectionError(
            f"{target.label} closed the connection during the SSH handshake. The server may "
            f"limit connections (MaxStartups) or refuse this client address."
        ) from e
    # start_client returns without an error when its timeout runs out first.
    if not transport.is_active() or not transport.initial_kex_done:
        transport.close()
        raise ConnectTimeout(
            f"SSH handshake with {target.label} did not finish within {timeout:g} s. Is an SSH "
            f"server listening on that port? On a slow link, raise connect_timeout."
        )
    return transport


def connect(target: Target, login: Login, keys: KeyCache, via: Session | None = None,
            ) -> Session:
    """Connect, verify the host key, then authenticate; nothing is sent before the check.

    *keys* holds the identity files already decrypted in this process; *via*
    is the live session of the jump host to go through, if any.
    """
    started = time.monotonic()
    known = hostkeys.known_entries(target)
    sock, proxy = _open_route(target, via)
    try:
        transport = start_transport(target, sock, hostkeys.known_key_types(target, known))
    except RemoteConnectionError as e:
        if proxy is None:
            raise
        proxy.close()
        raise type(e)(f"{e}\n{proxy.describe()}") from e
    # Paramiko's 30 s default would include a human reading a code off a phone.
    transport.auth_timeout = login.auth_timeout
    try:
        key = transport.get_remote_server_key()
        ask: Callable[[str], bool] | None = login.prompter.confirm if login.can_ask else None
        address = checked_address(target, sock, proxy, via)
        verified = hostkeys.verify(target, key, ask, known, address)
        report = authenticate(transport, target, login.prompter, timeout=login.auth_timeout,
                              can_ask=login.can_ask, keys=keys)
    except BaseException:
        transport.close()
        if proxy is not None:
            proxy.close()
        raise
    keepalive = Keepalive(transport, interval=target.server_alive_interval,
                          count_max=target.server_alive_count_max, label=target.label)
    session = Session(
        target=target, transport=transport,
        host_key=f"{key.get_name()} {hostkeys.fingerprint(key)}",
        host_key_verified=verified, auth=report, connected_in=time.monotonic() - started,
        keepalive=keepalive.start(), proxy=proxy,
    )
    logger.info("connected to %s (%s, %s) in %.2f s", target.label, session.host_key,
                ", ".join(report.used), session.connected_in)
    return session
