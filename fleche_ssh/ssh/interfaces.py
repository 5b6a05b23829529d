"""The address ``BindInterface`` connects from, chosen as OpenSSH chooses it.

``ssh`` (``check_ifaddrs`` in sshconnect.c) walks getifaddrs(3) for an
address of the named interface that is up and of the family of the
address being connected to, preferring one that is neither loopback
(``127.0.0.1``, ``::1``) nor IPv6 link-local, and taking such a one only
when there is no other.  Python's standard library has no getifaddrs, so
on Linux the same list is read from the kernel directly: the interface's
IPv4 address with the ``SIOCGIFADDR`` ioctl (the primary one, which
getifaddrs lists first) and its IPv6 addresses from ``/proc/net/if_inet6``.
Elsewhere there is no such reading without a C extension, and the
configuration says to set ``BindAddress`` instead.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from pathlib import Path

from ..config.target import Target
from ..errors import ConfigError

# <linux/sockios.h> and <net/if.h>: what ioctl(2) is asked, and the "up" flag.
_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
#: struct ifreq: the interface's name (IFNAMSIZ bytes), then a union of 24 bytes.
_IFREQ = struct.Struct("16s24x")
_IF_INET6 = Path("/proc/net/if_inet6")
_FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def check_supported(target: Target) -> None:
    """Refuse, before any socket exists, a ``BindInterface`` this platform cannot honour.

    ssh itself only logs that BindInterface is not supported and connects
    from wherever the kernel chooses; connecting from another address than
    the one asked for is what the keyword exists to prevent, so here it is
    a configuration error instead.
    """
    if target.bind_interface is None or target.bind_address is not None or (
            sys.platform.startswith("linux")):
        return
    where = dict(target.origins).get("bindinterface")
    raise ConfigError(
        f"{where + ': ' if where else ''}BindInterface {target.bind_interface}: fleche-ssh can "
        f"read a network interface's addresses only on Linux. Set BindAddress to the address "
        f"of {target.bind_interface} instead.")


def address_of(name: str, family: int) -> str:
    """The address of interface *name* in *family* that ssh would bind to.

    Raises:
        OSError: no interface is called *name*, it is down, or it has no
            address of *family*; the message names the interface.
    """
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise OSError(f"BindInterface {name}: this machine has no network interface of that "
                      f"name (`ip address` lists them)") from None
    candidates = (_ipv4(name) if family == socket.AF_INET else _ipv6(name)) if _is_up(name) else []
    usable = [a for a in candidates if not skipped_as_local(a)] or candidates
    if not usable:
        raise OSError(f"BindInterface {name}: the interface has no {_FAMILY_NAMES[family]} "
                      f"address, or is down")
    return usable[0]


def _ioctl(name: str, request: int) -> bytes:
    import fcntl  # Linux only, as is everything that calls this

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        return fcntl.ioctl(probe.fileno(), request, _IFREQ.pack(name.encode()))


def _is_up(name: str) -> bool:
    flags: int = struct.unpack_from("H", _ioctl(name, _SIOCGIFFLAGS), 16)[0]
    return bool(flags & _IFF_UP)


def _ipv4(name: str) -> list[str]:
    try:
        reply = _ioctl(name, _SIOCGIFADDR)
    except OSError:  # EADDRNOTAVAIL: no IPv4 address
        return []
    return [socket.inet_ntoa(reply[20:24])]  # struct sockaddr_in's address, after name and port


def _ipv6(name: str) -> list[str]:
    """The interface's IPv6 addresses, a link-local one with its scope (``fe80::1%eth0``)."""
    try:
        lines = _IF_INET6.read_text().splitlines()
    except OSError:  # no IPv6 in this kernel
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and fields[5] == name:
            address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            found.append(f"{address}%{name}" if address.is_link_local else str(address))
    return found


def skipped_as_local(address: str) -> bool:
    """Loopback or link-local as ssh skips them: only ``127.0.0.1`` of IPv4's loopback block."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 4:
        return address == "127.0.0.1"
    return ip.is_loopback or ip.is_link_local
