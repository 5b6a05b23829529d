"""From a :class:`~fleche_ssh.config.target.Target` to an authenticated :class:`Session`.

Connecting is where Paramiko's defaults cost the most, so the socket and
transport are set up here: TCP_NODELAY (without it every small round trip
waits ~40 ms for delayed ACKs), TCP keepalive (unless TCPKeepAlive is
off), the address family, source address and number of attempts the
target asks for, the algorithm lists it asks for or else AES-GCM first
(Paramiko lists it last, and the client's order wins), host key algorithms
ordered by what known_hosts holds for the host, and a Transport that survives a
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

from ..config.algorithms import CERTIFICATE, SIGNATURES, SUPPORTED, Algorithms, prefer
from ..config.target import Target
from ..errors import (
    ConnectionRefused,
    ConnectTimeout,
    HostNotFound,
    RemoteConnectionError,
    UnsupportedByParamiko,
)
from . import hostkeys, interfaces
from .auth import KeyCache, authenticate
from .liveness import Keepalive
from .proxy import ProxyProcess, open_jump, receive_socket, start_proxy_command
from .session import Login, Session
from .transport import Transport

logger = logging.getLogger("fleche_ssh.session")
# Paramiko logs every failed handshake with a traceback at ERROR.  Without a handler
# of its own, Python's last-resort handler would print those to stderr on top of the
# typed error the user gets; with this one they reach only logging the user set up.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: Bound on TCP connect and the SSH handshake when ConnectTimeout is not set.
DEFAULT_CONNECT_TIMEOUT = 30.0

_FAMILIES = {"any": socket.AF_UNSPEC, "inet": socket.AF_INET, "inet6": socket.AF_INET6}
#: Seconds between two ConnectionAttempts, as ssh waits.
ATTEMPT_INTERVAL = 1.0


def open_socket(target: Target) -> socket.socket:
    """TCP connection to the target, tuned for request/response and long idles.

    As ssh: the name is resolved once (in the AddressFamily asked for), then
    each address is tried in turn, from BindAddress when set (else from
    BindInterface's address), and the whole round is repeated
    ConnectionAttempts times, a second apart.
    """
    interfaces.check_supported(target)
    timeout = target.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    family = _FAMILIES[target.address_family]
    try:
        addresses = socket.getaddrinfo(target.hostname, target.port, family, socket.SOCK_STREAM)
    except socket.gaierror as e:
        only = "" if family == socket.AF_UNSPEC else f" as {target.address_family} (AddressFamily)"
        raise HostNotFound(
            f"Cannot resolve host name {target.hostname!r} (from host {target.alias!r}){only}: "
            f"{e.strerror or e}. Check the spelling, HostName in your ssh config, or your VPN."
        ) from e
    for attempt in range(1, target.connection_attempts + 1):
        try:
            sock = _connect_any(target, addresses, timeout)
            break
        except (ConnectionRefused, ConnectTimeout) as e:
            if attempt == target.connection_attempts:
                raise
            logger.debug("%s (attempt %d of %d); trying again", e, attempt,
                         target.connection_attempts)
            time.sleep(ATTEMPT_INTERVAL)
    return _tuned(sock, target)


def _tuned(sock: socket.socket, target: Target) -> socket.socket:
    """*sock* without Nagle's delay and, unless TCPKeepAlive is off, with TCP keepalive."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock  # a ProxyUseFdpass command may pass any stream socket
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if target.tcp_keep_alive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _TCP_KEEPALIVE:
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock


# TCP keepalive after 60 s idle, every 15 s, 4 probes: the kernel's own liveness check
# under the SSH-level one, and NAT/VPN state kept warm (where the platform allows tuning).
_TCP_KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4))


def _connect_any(target: Target, addresses: list[Any], timeout: float) -> socket.socket:
    """The first of *addresses* that accepts a connection; the last failure, typed, if none."""
    failure: OSError = OSError("no address")
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            _bind(sock, target, family)
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            failure = e
    raise _connect_error(target, failure, timeout)


def _bind(sock: socket.socket, target: Target, family: int) -> None:
    """Bind *sock* (any port) to BindAddress, else to BindInterface's address, if either is set.

    As ssh: BindAddress wins when both are set, and either is taken as an
    address of the family of the address being connected to.
    """
    if target.bind_address is not None:
        address, source = target.bind_address, f"BindAddress {target.bind_address}"
    elif target.bind_interface is not None:
        address = interfaces.address_of(target.bind_interface, family)
        source = f"BindInterface {target.bind_interface} ({address})"
    else:
        return
    try:
        local = socket.getaddrinfo(address, 0, family, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)[0][4]
        sock.bind(local)
    except OSError as e:
        raise OSError(f"cannot connect from {source}: {e.strerror or e}") from e


def _connect_error(target: Target, e: OSError, timeout: float) -> RemoteConnectionError:
    where = f"{target.hostname} port {target.port}"
    if isinstance(e, ConnectionRefusedError):
        return ConnectionRefused(
            f"{where} refused the connection: no SSH server listens there. Check the port "
            f"(Port / port key) and that sshd runs.")
    if isinstance(e, TimeoutError):
        return ConnectTimeout(
            f"Connecting to {where} timed out after {timeout:g} s. Check the network or VPN, "
            f"or raise connect_timeout.")
    return ConnectionRefused(
        f"Cannot connect to {where}: {e.strerror or e}. Check the network or VPN.")


def _open_route(target: Target, via: Session | None) -> tuple[Any, ProxyProcess | None]:
    """The byte stream to run SSH over: a jump channel, a ProxyCommand, or TCP."""
    timeout = target.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    if via is not None:
        channel = open_jump(via.transport, via.target.label, target.hostname, target.port,
                            timeout)
        via.track(channel)  # the jump host's login is in use while the next hop is
        return channel, None
    if target.proxy_command is not None and target.proxy_use_fdpass:
        return _tuned(receive_socket(target.proxy_command, timeout), target), None
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
    if (not target.check_host_ip or proxy is not None or via is not None
            or target.proxy_command is not None):  # ProxyUseFdpass has no process left
        return None
    try:
        address = ipaddress.ip_address(sock.getpeername()[0])
    except (OSError, ValueError):
        return None
    text = str(address) if target.port == 22 else f"[{address}]:{target.port}"
    return None if address.is_loopback or text == target.hostname else text


def _offer(chosen: Algorithms | None, keyword: str) -> tuple[str, ...]:
    return chosen.names if chosen is not None else SUPPORTED[keyword]


def start_transport(target: Target, sock: Any, key_types: list[str], *,
                    caller_reads: bool = True) -> Transport:
    """Run the SSH handshake on *sock*: key exchange only, no host key check yet.

    The algorithms are the target's lists (fleche-ssh's defaults where unset).
    *key_types* are the host key types known_hosts holds for the target, asked
    for first so that a host offering several keys sends the one on record,
    unless the user's HostKeyAlgorithms fixed the order, as ssh does.
    """
    timeout = target.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    accepted = _offer(target.pubkey_accepted_algorithms, "PubkeyAcceptedAlgorithms")
    signing = {name.removesuffix(CERTIFICATE) for name in accepted}
    # Which signature an RSA key makes: only one the user accepts.
    transport = Transport(sock, caller_reads=caller_reads, disabled_algorithms={
        "pubkeys": [name for name in SIGNATURES if name not in signing]})
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    options = transport.get_security_options()
    options.ciphers = _offer(target.ciphers, "Ciphers")
    options.digests = _offer(target.macs, "MACs")
    options.kex = _offer(target.kex_algorithms, "KexAlgorithms")
    host_keys = target.host_key_algorithms
    options.key_types = (host_keys.names if host_keys is not None and host_keys.as_written
                         else prefer(_offer(host_keys, "HostKeyAlgorithms"), key_types))
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
                f"{_lists_set(target)}"
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


def _lists_set(target: Target) -> str:
    """Where the algorithm lists offered were set, for a handshake that found none in common."""
    origins = dict(target.origins)
    where = [f"{keyword} ({origins[keyword.lower()]})" for keyword in SUPPORTED
             if keyword.lower() in origins]
    return f" Algorithm lists set: {', '.join(where)}." if where else ""


def connect(target: Target, login: Login, keys: KeyCache, via: Session | None = None,
            *, caller_reads: bool = True) -> Session:
    """Connect, verify the host key, then authenticate; nothing is sent before the check.

    *keys* holds the identity files already decrypted in this process; *via*
    is the live session of the jump host to go through, if any; *caller_reads*
    is the transport's (:class:`~.transport.Transport`).
    """
    started = time.monotonic()
    known = hostkeys.known_entries(target)
    sock, proxy = _open_route(target, via)
    try:
        transport = start_transport(target, sock, hostkeys.known_key_types(target, known),
                                    caller_reads=caller_reads)
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
