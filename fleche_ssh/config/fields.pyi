# Generated from the rows of fleche_ssh/config/options.py by
# `python -m fleche_ssh.config.generate`; tests/test_options.py checks it is current.
"""The classes fields.py makes from the option rows at import time, written out."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleche.remote import SshCache

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
    """How many remote server processes this cache may run at once, and so how many calls from
    different threads proceed in parallel.  All of them share the one SSH connection."""
    progress: Any = field(default='auto', repr=False)
    """How large saves and loads (4 MiB or more) show their progress: ``"auto"`` (a bar on a
    terminal's stderr or in the notebook, once a transfer has run a second; nothing in batch
    jobs and pool workers), ``"none"``, ``"module:function"``, or in Python a callable
    ``report(direction, bytes_done, total)``.  See :ref:`progress`."""
