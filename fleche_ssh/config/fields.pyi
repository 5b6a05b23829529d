# Generated from the rows of fleche_ssh/config/options.py by
# `python -m fleche_ssh.config.generate`; tests/test_options.py checks it is current.
"""The classes fields.py makes from the option rows at import time, written out."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleche.remote import SshCache

from .algorithms import Algorithms
from .target import Target

@dataclass(frozen=True)
class TargetFields:
    """The fields of a Target, one per OpenSSH keyword fleche-ssh acts on."""

    hostname: str = field(kw_only=True)
    """Real host name or address to connect to."""
    user: str = field(kw_only=True)
    """Remote user name."""
    port: int = field(default=22, kw_only=True)
    """Remote SSH port."""
    identity_files: tuple[str, ...] = field(kw_only=True)
    """Private key file(s) to offer, in order."""
    identities_only: bool = field(default=False, kw_only=True)
    """Offer only the configured identity files, not every agent key."""
    identity_agent: str | None = field(default=None, kw_only=True)
    """Agent socket path, or ``none`` to use no agent."""
    known_hosts_files: tuple[str, ...] = field(kw_only=True)
    """known_hosts file(s) to read and to record new hosts in."""
    global_known_hosts_files: tuple[str, ...] = field(
        default=('/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'), kw_only=True)
    """System-wide known_hosts file(s), read only."""
    strict_host_key_checking: str = field(default='ask', kw_only=True)
    """What to do with an unknown host key: yes, ask, accept-new or no."""
    hash_known_hosts: bool = field(default=False, kw_only=True)
    """Record new hosts in hashed form."""
    connect_timeout: float | None = field(default=None, kw_only=True)
    """Seconds to wait for the TCP connection and the SSH handshake."""
    batch_mode: bool = field(default=False, kw_only=True)
    """Never ask a human anything (as the ``none`` prompt handler)."""
    jump: Target | None = field(default=None, kw_only=True)
    """Jump host(s) to go through, ``[user@]host[:port]`` separated by commas, or ``none``."""
    proxy_command: str | None = field(default=None, kw_only=True)
    """Command whose stdin/stdout carry the connection (tokens %h %p %r %n), or ``none``."""
    certificate_files: tuple[str, ...] = field(default=(), kw_only=True)
    """User certificate(s) to present with the matching identity."""
    server_alive_interval: float = field(default=15.0, kw_only=True)
    """Seconds between keepalive requests that expect an answer (0: off)."""
    server_alive_count_max: int = field(default=3, kw_only=True)
    """Unanswered keepalive intervals before the connection is declared dead."""
    compression: bool = field(default=False, kw_only=True)
    """Compress the connection (slow links)."""
    control_paths: tuple[str, ...] = field(default=(), kw_only=True)
    """Control socket of a live OpenSSH master (``ssh -M``): when one listens there, the remote
    server runs through it and fleche-ssh logs in nowhere. ``none``: never."""
    host_key_alias: str | None = field(default=None, kw_only=True)
    """Name to look the host key up and record it under in known_hosts, instead of the host name
    and port (a tunnel, several servers on one host)."""
    check_host_ip: bool = field(default=False, kw_only=True)
    """Also check the server's address in known_hosts, and record it: warns of a key that differs
    for the address (not through a proxy or to loopback)."""
    revoked_host_keys: str | None = field(default=None, kw_only=True)
    """File of public keys (one per line) refused as host keys; if it cannot be read, every host
    is refused.  A binary KRL is refused as unreadable."""
    known_hosts_command: str | None = field(default=None, kw_only=True)
    """Command (absolute path, no shell) whose output is read as more known_hosts lines; tokens
    as for a path, and %f %H %I %K %t."""
    canonicalize_hostname: str = field(default='no', kw_only=True)
    """Complete a short host name with each CanonicalDomains suffix, connect to the first that
    resolves and read the config again for it: ``no``, ``yes`` (not through a proxy or jump
    host) or ``always``."""
    canonical_domains: tuple[str, ...] = field(default=(), kw_only=True)
    """Domain suffixes CanonicalizeHostname tries, in order."""
    canonicalize_fallback_local: bool = field(default=True, kw_only=True)
    """When no suffix resolves, connect to the name as written (``no``: refuse)."""
    canonicalize_max_dots: int = field(default=1, kw_only=True)
    """Names with more dots than this are taken as complete, not canonicalized."""
    canonicalize_permitted_cnames: tuple[str, ...] = field(default=(), kw_only=True)
    """``source:target`` pattern lists: a name matching *source* whose DNS alias (CNAME) matches
    *target* is replaced by that alias."""
    ciphers: Algorithms | None = field(default=None, kw_only=True)
    """Ciphers to offer, in order; ``+``, ``-`` or ``^`` before the list edits the default."""
    macs: Algorithms | None = field(default=None, kw_only=True)
    """Message authentication codes to offer, in order (``+``/``-``/``^`` as for Ciphers)."""
    kex_algorithms: Algorithms | None = field(default=None, kw_only=True)
    """Key exchange algorithms to offer, in order (``+``/``-``/``^`` as for Ciphers)."""
    host_key_algorithms: Algorithms | None = field(default=None, kw_only=True)
    """Host key algorithms to accept, in order (``+``/``-``/``^`` as for Ciphers)."""
    pubkey_accepted_algorithms: Algorithms | None = field(default=None, kw_only=True)
    """Signature algorithms a key (or certificate) may log in with; a key of another kind is not
    offered."""
    ca_signature_algorithms: Algorithms | None = field(default=None, kw_only=True)
    """Signature algorithms accepted from a CA that signs host certificates."""
    preferred_authentications: str | None = field(default=None, kw_only=True)
    """Login methods to try, in order, separated by commas."""
    pubkey_authentication: bool = field(default=True, kw_only=True)
    """Log in with keys (``unbound`` and ``host-bound`` mean yes)."""
    kbd_interactive_authentication: bool = field(default=True, kw_only=True)
    """Log in by answering the server's questions (one-time codes)."""
    password_authentication: bool = field(default=True, kw_only=True)
    """Log in with a password."""
    connection_attempts: int = field(default=1, kw_only=True)
    """Tries to connect, one second apart, before giving up."""
    address_family: str = field(default='any', kw_only=True)
    """Connect over IPv4 only (``inet``), IPv6 only (``inet6``) or either (``any``)."""
    bind_address: str | None = field(default=None, kw_only=True)
    """Local address to connect from (on a machine with several)."""
    bind_interface: str | None = field(default=None, kw_only=True)
    """Network interface to connect from, by an address of it in the family connected to (Linux
    only; BindAddress wins when both are set)."""
    proxy_use_fdpass: bool = field(default=False, kw_only=True)
    """The ProxyCommand hands over a connected socket (on its stdout, as ``SCM_RIGHTS``) and
    exits, instead of carrying the connection itself."""
    tcp_keep_alive: bool = field(default=True, kw_only=True)
    """Let the kernel probe an idle connection (TCP keepalive)."""
    control_master: str = field(default='auto', kw_only=True)
    """``auto``: processes this one hands the cache to (pool workers) use its login, asking
    nothing.  ``no``: this process neither offers its login nor uses one offered.  ``yes``,
    ``ask`` and ``autoask`` read as ``auto``."""
    control_persist: float | None = field(default=None, kw_only=True)
    """Keep the login in a background process of fleche-ssh for this long after its last use
    (``10m``, ``8h``; ``yes``: until ``fleche-ssh logout``), for any of your processes: a
    second notebook or a restarted kernel asks no code."""

@dataclass(frozen=True)
class CacheFields(SshCache):
    """The keys beyond the stock cache's: one per OpenSSH keyword, then our own."""

    hostname: str | None = None
    """Real host name or address to connect to."""
    user: str | None = None
    """Remote user name."""
    port: int | None = None
    """Remote SSH port."""
    identity_file: str | Sequence[str] | None = None
    """Private key file(s) to offer, in order."""
    identities_only: bool | None = None
    """Offer only the configured identity files, not every agent key."""
    identity_agent: str | None = None
    """Agent socket path, or ``none`` to use no agent."""
    known_hosts_file: str | Sequence[str] | None = None
    """known_hosts file(s) to read and to record new hosts in."""
    global_known_hosts_file: str | Sequence[str] | None = None
    """System-wide known_hosts file(s), read only."""
    strict_host_key_checking: str | None = None
    """What to do with an unknown host key: yes, ask, accept-new or no."""
    hash_known_hosts: bool | None = None
    """Record new hosts in hashed form."""
    connect_timeout: float | None = None
    """Seconds to wait for the TCP connection and the SSH handshake."""
    batch_mode: bool | None = None
    """Never ask a human anything (as the ``none`` prompt handler)."""
    proxy_jump: str | None = None
    """Jump host(s) to go through, ``[user@]host[:port]`` separated by commas, or ``none``."""
    proxy_command: str | None = None
    """Command whose stdin/stdout carry the connection (tokens %h %p %r %n), or ``none``."""
    certificate_file: str | Sequence[str] | None = None
    """User certificate(s) to present with the matching identity."""
    server_alive_interval: float | None = None
    """Seconds between keepalive requests that expect an answer (0: off)."""
    server_alive_count_max: int | None = None
    """Unanswered keepalive intervals before the connection is declared dead."""
    compression: bool | None = None
    """Compress the connection (slow links)."""
    control_path: str | None = None
    """Control socket of a live OpenSSH master (``ssh -M``): when one listens there, the remote
    server runs through it and fleche-ssh logs in nowhere. ``none``: never."""
    host_key_alias: str | None = None
    """Name to look the host key up and record it under in known_hosts, instead of the host name
    and port (a tunnel, several servers on one host)."""
    check_host_ip: bool | None = None
    """Also check the server's address in known_hosts, and record it: warns of a key that differs
    for the address (not through a proxy or to loopback)."""
    revoked_host_keys: str | None = None
    """File of public keys (one per line) refused as host keys; if it cannot be read, every host
    is refused.  A binary KRL is refused as unreadable."""
    known_hosts_command: str | None = None
    """Command (absolute path, no shell) whose output is read as more known_hosts lines; tokens
    as for a path, and %f %H %I %K %t."""
    canonicalize_hostname: str | None = None
    """Complete a short host name with each CanonicalDomains suffix, connect to the first that
    resolves and read the config again for it: ``no``, ``yes`` (not through a proxy or jump
    host) or ``always``."""
    canonical_domains: str | Sequence[str] | None = None
    """Domain suffixes CanonicalizeHostname tries, in order."""
    canonicalize_fallback_local: bool | None = None
    """When no suffix resolves, connect to the name as written (``no``: refuse)."""
    canonicalize_max_dots: int | None = None
    """Names with more dots than this are taken as complete, not canonicalized."""
    canonicalize_permitted_cnames: str | Sequence[str] | None = None
    """``source:target`` pattern lists: a name matching *source* whose DNS alias (CNAME) matches
    *target* is replaced by that alias."""
    ciphers: str | None = None
    """Ciphers to offer, in order; ``+``, ``-`` or ``^`` before the list edits the default."""
    macs: str | None = None
    """Message authentication codes to offer, in order (``+``/``-``/``^`` as for Ciphers)."""
    kex_algorithms: str | None = None
    """Key exchange algorithms to offer, in order (``+``/``-``/``^`` as for Ciphers)."""
    host_key_algorithms: str | None = None
    """Host key algorithms to accept, in order (``+``/``-``/``^`` as for Ciphers)."""
    pubkey_accepted_algorithms: str | None = None
    """Signature algorithms a key (or certificate) may log in with; a key of another kind is not
    offered."""
    ca_signature_algorithms: str | None = None
    """Signature algorithms accepted from a CA that signs host certificates."""
    preferred_authentications: str | None = None
    """Login methods to try, in order, separated by commas."""
    pubkey_authentication: bool | None = None
    """Log in with keys (``unbound`` and ``host-bound`` mean yes)."""
    kbd_interactive_authentication: bool | None = None
    """Log in by answering the server's questions (one-time codes)."""
    password_authentication: bool | None = None
    """Log in with a password."""
    connection_attempts: int | None = None
    """Tries to connect, one second apart, before giving up."""
    address_family: str | None = None
    """Connect over IPv4 only (``inet``), IPv6 only (``inet6``) or either (``any``)."""
    bind_address: str | None = None
    """Local address to connect from (on a machine with several)."""
    bind_interface: str | None = None
    """Network interface to connect from, by an address of it in the family connected to (Linux
    only; BindAddress wins when both are set)."""
    proxy_use_fdpass: bool | None = None
    """The ProxyCommand hands over a connected socket (on its stdout, as ``SCM_RIGHTS``) and
    exits, instead of carrying the connection itself."""
    tcp_keep_alive: bool | None = None
    """Let the kernel probe an idle connection (TCP keepalive)."""
    control_master: str | None = None
    """``auto``: processes this one hands the cache to (pool workers) use its login, asking
    nothing.  ``no``: this process neither offers its login nor uses one offered.  ``yes``,
    ``ask`` and ``autoask`` read as ``auto``."""
    control_persist: float | None = None
    """Keep the login in a background process of fleche-ssh for this long after its last use
    (``10m``, ``8h``; ``yes``: until ``fleche-ssh logout``), for any of your processes: a
    second notebook or a restarted kernel asks no code."""
    config_file: str | None = None
    """An ssh config file to read instead of ``~/.ssh/config`` and ``/etc/ssh/ssh_config``, as
    ``ssh -F FILE``."""
    prompt: Any = field(default='auto', repr=False)
    """Who answers the questions of logging in (one-time codes, passwords, key passphrases,
    unknown host keys): ``"auto"``, ``"none"``, ``"module:function"``, or in Python a
    callable.  See :doc:`/two-factor-and-hpc`."""
    auth_timeout: float = 300.0
    """Seconds allowed for logging in, the time a person takes to type a code included.  Nothing
    waits longer than this for an answer."""
    channels: int = 1
    """How many remote server processes this cache may run at once, all on the one SSH
    connection.  The calls of several threads are pipelined on each (sent back to back,
    answered in order), so one is enough for many threads making small calls; more let remote
    work run in parallel (large loads and saves, slow lookups).  See :doc:`/performance`."""
    progress: Any = field(default='auto', repr=False)
    """How large saves and loads (4 MiB or more) show their progress: ``"auto"`` (a bar on a
    terminal's stderr or in the notebook, once a transfer has run a second; nothing in batch
    jobs and pool workers), ``"none"``, ``"module:function"``, or in Python a callable
    ``report(direction, bytes_done, total)``.  See :ref:`progress`."""
