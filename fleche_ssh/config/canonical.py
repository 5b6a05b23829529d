"""``CanonicalizeHostname``: the host name ssh settles on before reading its files again.

A user who types ``ssh login1`` with ``CanonicalDomains cluster.example.org``
reaches ``login1.cluster.example.org``, and the second pass through the
config matches ``Host *.cluster.example.org`` blocks and ``Match
canonical`` ones for that name; ``%h``, ``%C`` (so a ControlPath) and the
known_hosts name all use it.  This follows OpenSSH 9's
``resolve_canonicalize`` and ``check_follow_cname`` step by step, so that
``ssh -G`` and fleche-ssh settle on the same name.

The lookups go through a ``getaddrinfo`` function that the caller passes
(:func:`socket.getaddrinfo` by default), so tests decide what resolves.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from ..errors import HostNotFound
from .options import BY_KEYWORD
from .patterns import match_pattern_list
from .sshconfig import Resolution

GetAddrInfo = Callable[..., list[Any]]


def _setting(resolution: Resolution, keyword: str) -> Any:
    """One keyword's value as its row parses it, or the row's default."""
    row = BY_KEYWORD[keyword]
    texts = resolution.values.get(keyword)
    if not texts:
        return row.default
    value = row.read(texts[0], resolution.sources.get(keyword, ""))
    if isinstance(value, tuple) and value[0].lower() == "none":
        return ()
    return value


def _where(resolution: Resolution, keyword: str) -> str:
    return resolution.sources.get(keyword) or "not set"


def _lookup(getaddrinfo: GetAddrInfo, name: str) -> str | None:
    """The canonical name the resolver gives *name* (may be empty), ``None`` if it fails."""
    try:
        found = getaddrinfo(name, None, 0, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
    except (OSError, UnicodeError):
        return None
    return (found[0][3] or "") if found else None


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _unproxied(resolution: Resolution) -> bool:
    """No ProxyCommand and no ProxyJump: the name is ours to resolve, not the proxy's."""
    return all((resolution.first(k) or "none").lower() == "none"
               for k in ("proxycommand", "proxyjump"))


def canonicalize(name: str, resolution: Resolution, getaddrinfo: GetAddrInfo) -> str:
    """*name* (lowercased, ``HostName`` applied) as ssh canonicalizes it after the first pass.

    Raises:
        HostNotFound: no suffix resolves and ``CanonicalizeFallbackLocal`` is
            off, or a name with ``CanonicalizePermittedCNAMEs`` does not
            resolve at all, where ssh stops too.
    """
    mode = _setting(resolution, "canonicalizehostname")
    rules = [rule.partition(":") for rule in _setting(resolution, "canonicalizepermittedcnames")]
    direct = _unproxied(resolution)
    allowed = direct or mode == "always"

    def follow(full: str, cname: str) -> str:
        if not cname or not rules or full == cname or mode == "no" or not allowed:
            return full
        for sources, _, targets in rules:
            if (match_pattern_list(sources.split(","), full)
                    and match_pattern_list(targets.split(","), cname)):
                return cname
        return full

    if _is_address(name):
        return name
    if mode != "no" and allowed:
        if name.endswith("."):
            candidates = [name]
        elif name.count(".") > _setting(resolution, "canonicalizemaxdots"):
            candidates = None
        else:
            candidates = []
            for domain in _setting(resolution, "canonicaldomains"):
                if domain.lower() == "none":
                    break
                candidates.append(f"{name}.{domain}.")
        for full in candidates or ():
            cname = _lookup(getaddrinfo, full)
            if cname is not None:
                return follow(full[:-1], cname)
        if candidates is not None and not _setting(resolution, "canonicalizefallbacklocal"):
            raise HostNotFound(
                f"Could not resolve host {name!r} with any CanonicalDomains suffix "
                f"({_where(resolution, 'canonicaldomains')}) and CanonicalizeFallbackLocal "
                f"is no ({_where(resolution, 'canonicalizefallbacklocal')}; "
                f"CanonicalizeHostname from {_where(resolution, 'canonicalizehostname')}), "
                f"so ssh refuses it too. Check the name, CanonicalDomains, or your VPN."
            )
    if rules and allowed:
        # As ssh: with permitted CNAMEs, the name as written is looked up and its alias
        # followed; a name that does not resolve stops a direct connection there.
        cname = _lookup(getaddrinfo, name)
        if cname is None:
            if direct:
                raise HostNotFound(
                    f"Could not resolve host {name!r}: with CanonicalizePermittedCNAMEs "
                    f"({_where(resolution, 'canonicalizepermittedcnames')}) ssh looks the "
                    f"name up before connecting, and refuses it too. Check the name or your VPN."
                )
            return name
        return follow(name, cname)
    return name
