"""Every key and OpenSSH keyword fleche-ssh understands, one row each.

Every way of setting an option ends up here: a line of ``~/.ssh/config``,
an ``-o Keyword=value`` (or ``-p``, ``-l``, ``-i`` ...) in ``ssh_options``,
and a snake_case key of :class:`~fleche_ssh.ParamikoCache`.  A row of
:data:`OPTIONS` says everything about one OpenSSH keyword: the cache key
that mirrors it, how its lines are read (:class:`Values`), how its text is
parsed, what a fleche.toml value of the key may be, its default, the
:class:`~fleche_ssh.config.target.Target` field it fills and how it is
expanded there, its ssh command-line flag, and its documentation.  The
keys that are no OpenSSH keyword (the stock cache's and fleche-ssh's own)
are rows of :data:`STOCK_KEYS` and :data:`OWN_KEYS`.

Nothing else lists keys or keywords.  The ssh_config evaluator, the
``ssh_options`` translator, the cache's type checks, the dataclass fields
of ``ParamikoCache`` and ``Target`` (:mod:`fleche_ssh.config.fields`),
``Target.describe()`` and the configuration reference all read these rows,
so adding a keyword is adding a row, and the behaviour behind it.  Code
names a keyword only where it acts on that one (``%p`` is the Port, a
ProxyJump is followed hop by hop).  What a row's fields mean is in
:mod:`fleche_ssh.config.rows`.

Keywords OpenSSH knows but fleche-ssh need not act on (connection sharing,
terminal and forwarding settings) are listed in :data:`NOT_NEEDED`: they are
accepted and logged at debug level.  Any other keyword in ``ssh_options``
is refused with an error naming it.  In an ssh_config file it is ignored,
so that files shared with ``ssh`` and other programs keep working, with a
log line naming it and its file and line
(:func:`~fleche_ssh.config.ignored.log_ignored`): at debug level, or, for
the keywords of :data:`UNHONOURED` that make ``ssh`` trust other host keys
or negotiate differently, at warning or info level, saying what ``ssh``
would have done.
"""

from __future__ import annotations

import logging

from .algorithms import algorithms
from .parsers import (
    HANDLER,
    PATHS,
    POSITIVE_SECONDS,
    WHOLE_NUMBER,
    attempts,
    choice,
    cname_rule,
    control_master,
    count,
    interval,
    path_check,
    persist,
    port,
    pubkey_switch,
    seconds,
    strings_check,
    text_check,
    yes_no,
)
from .rows import (
    COMMAND,
    MANY,
    ONE,
    UNIQUE,
    WORDS,
    Key,
    Keyword,
    Option,
    OwnKey,
    Unhonoured,
    Values,
)
from .tokens import (
    Computed,
    Written,
    command,
    control_paths,
    given_name,
    home_files,
    home_path,
    home_path_list,
    hostname,
    known_hosts_command,
    local_user,
    lowercase,
    no_words,
    path,
    path_list,
    paths,
)

# OpenSSH's default identities in OpenSSH's order, less the kinds Paramiko
# cannot load (security keys, XMSS, DSA): the key ssh offers first is offered first.
DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
#: ServerAliveInterval / ServerAliveCountMax when not configured: see liveness.py.
DEFAULT_ALIVE_INTERVAL = 15.0
DEFAULT_ALIVE_COUNT_MAX = 3
#: Seconds a human has for the whole login, one-time code included.
DEFAULT_AUTH_TIMEOUT = 300.0

OPTIONS: tuple[Option, ...] = (
    Option("HostName", "hostname", default=Computed(given_name), finish=hostname,
           default_doc="the host as given", doc="Real host name or address to connect to."),
    Option("User", "user", default=Computed(local_user),
           default_doc="your local user name (the password database's, as ssh takes it)",
           flag="-l USER", doc="Remote user name."),
    Option("Port", "port", port, default=22, flag="-p PORT", doc="Remote SSH port."),
    Option("IdentityFile", "identity_file", values=UNIQUE, check=PATHS,
           target_field="identity_files", finish=paths,
           default=home_files(*DEFAULT_IDENTITIES),
           default_doc=f"{', '.join(f'``{p}``' for p in DEFAULT_IDENTITIES)}, those that exist",
           flag="-i FILE", doc="Private key file(s) to offer, in order."),
    Option("IdentitiesOnly", "identities_only", yes_no, default=False,
           doc="Offer only the configured identity files, not every agent key."),
    Option("IdentityAgent", "identity_agent", finish=path,
           default_doc="the agent named by ``SSH_AUTH_SOCK`` (Pageant on Windows)",
           doc="Agent socket path, or ``none`` to use no agent."),
    Option("UserKnownHostsFile", "known_hosts_file", values=WORDS, check=PATHS,
           target_field="known_hosts_files", finish=path_list,
           default=Written(DEFAULT_KNOWN_HOSTS),
           doc="known_hosts file(s) to read and to record new hosts in."),
    Option("GlobalKnownHostsFile", "global_known_hosts_file", values=WORDS, check=PATHS,
           target_field="global_known_hosts_files", finish=home_path_list,
           default=DEFAULT_GLOBAL_KNOWN_HOSTS,
           doc="System-wide known_hosts file(s), read only."),
    Option("StrictHostKeyChecking", "strict_host_key_checking",
           choice("yes", "ask", "accept-new", "no", aliases={"off": "no", "true": "yes",
                                                             "false": "no"}),
           default="ask",
           doc="What to do with an unknown host key: yes, ask, accept-new or no."),
    Option("HashKnownHosts", "hash_known_hosts", yes_no, default=False,
           doc="Record new hosts in hashed form."),
    Option("ConnectTimeout", "connect_timeout", seconds,
           default_doc="none: connecting gives up after 30 seconds",
           doc="Seconds to wait for the TCP connection and the SSH handshake."),
    Option("BatchMode", "batch_mode", yes_no, default=False,
           doc="Never ask a human anything (as the ``none`` prompt handler)."),
    # The jump hosts are resolved into Targets of their own: see target.resolve.
    Option("ProxyJump", "proxy_jump", target_field="jump", target_type="Target | None",
           flag="-J JUMP",
           doc="Jump host(s) to go through, ``[user@]host[:port]`` separated by commas, "
               "or ``none``."),
    Option("ProxyCommand", "proxy_command", values=COMMAND, finish=command,
           doc="Command whose stdin/stdout carry the connection (tokens %h %p %r %n), "
               "or ``none``."),
    Option("CertificateFile", "certificate_file", values=UNIQUE, check=PATHS,
           target_field="certificate_files", finish=paths, default=(),
           doc="User certificate(s) to present with the matching identity."),
    Option("ServerAliveInterval", "server_alive_interval", interval,
           default=DEFAULT_ALIVE_INTERVAL,
           doc="Seconds between keepalive requests that expect an answer (0: off)."),
    Option("ServerAliveCountMax", "server_alive_count_max", count,
           default=DEFAULT_ALIVE_COUNT_MAX,
           doc="Unanswered keepalive intervals before the connection is declared dead."),
    Option("Compression", "compression", yes_no, default=False, flag="-C", flag_sets="yes",
           doc="Compress the connection (slow links)."),
    Option("ControlPath", "control_path", target_field="control_paths",
           target_type="tuple[str, ...]", finish=control_paths, default=(), flag="-S PATH",
           default_doc="none",
           doc="Control socket of a live OpenSSH master (``ssh -M``): when one listens "
               "there, the remote server runs through it and fleche-ssh logs in nowhere. "
               "``none``: never."),
    # Which host keys are trusted: see fleche_ssh.ssh.hostkeys.
    Option("HostKeyAlias", "host_key_alias", finish=lowercase,
           doc="Name to look the host key up and record it under in known_hosts, instead "
               "of the host name and port (a tunnel, several servers on one host)."),
    Option("CheckHostIP", "check_host_ip", yes_no, default=False,
           doc="Also check the server's address in known_hosts, and record it: warns of a "
               "key that differs for the address (not through a proxy or to loopback)."),
    Option("RevokedHostKeys", "revoked_host_keys", finish=home_path,
           doc="File of public keys (one per line) refused as host keys; if it cannot be "
               "read, every host is refused.  A binary KRL is refused as unreadable."),
    Option("KnownHostsCommand", "known_hosts_command", values=COMMAND,
           finish=known_hosts_command,
           doc="Command (absolute path, no shell) whose output is read as more known_hosts "
               "lines; tokens as for a path, and %f %H %I %K %t."),
    # Where: the name ssh settles on before reading its files again (config/canonical.py).
    Option("CanonicalizeHostname", "canonicalize_hostname",
           choice("no", "yes", "always", aliases={"true": "yes", "false": "no"}),
           default="no",
           doc="Complete a short host name with each CanonicalDomains suffix, connect to "
               "the first that resolves and read the config again for it: ``no``, ``yes`` "
               "(not through a proxy or jump host) or ``always``."),
    Option("CanonicalDomains", "canonical_domains", values=WORDS, check=PATHS, default=(),
           finish=no_words, doc="Domain suffixes CanonicalizeHostname tries, in order."),
    Option("CanonicalizeFallbackLocal", "canonicalize_fallback_local", yes_no, default=True,
           doc="When no suffix resolves, connect to the name as written (``no``: refuse)."),
    Option("CanonicalizeMaxDots", "canonicalize_max_dots", count, default=1,
           doc="Names with more dots than this are taken as complete, not canonicalized."),
    Option("CanonicalizePermittedCNAMEs", "canonicalize_permitted_cnames", cname_rule,
           values=WORDS, check=PATHS, default=(), finish=no_words,
           doc="``source:target`` pattern lists: a name matching *source* whose DNS "
               "alias (CNAME) matches *target* is replaced by that alias."),
    # What to negotiate: OpenSSH's list syntax on Paramiko's algorithms (algorithms.py).
    *(Option(keyword, key, target_type="Algorithms | None", finish=algorithms(keyword),
             aliases=aliases, default_doc=default_doc, doc=doc)
      for keyword, key, aliases, default_doc, doc in (
          ("Ciphers", "ciphers", (), "Paramiko's, AES-GCM first",
           "Ciphers to offer, in order; ``+``, ``-`` or ``^`` before the list edits the "
           "default."),
          ("MACs", "macs", (), "Paramiko's",
           "Message authentication codes to offer, in order (``+``/``-``/``^`` as for "
           "Ciphers)."),
          ("KexAlgorithms", "kex_algorithms", (), "Paramiko's",
           "Key exchange algorithms to offer, in order (``+``/``-``/``^`` as for Ciphers)."),
          ("HostKeyAlgorithms", "host_key_algorithms", (),
           "Paramiko's, those known_hosts holds for the host first",
           "Host key algorithms to accept, in order (``+``/``-``/``^`` as for Ciphers)."),
          ("PubkeyAcceptedAlgorithms", "pubkey_accepted_algorithms",
           ("PubkeyAcceptedKeyTypes",), "Paramiko's, certificates included",
           "Signature algorithms a key (or certificate) may log in with; a key of another "
           "kind is not offered."),
          ("CASignatureAlgorithms", "ca_signature_algorithms", (), "Paramiko's",
           "Signature algorithms accepted from a CA that signs host certificates."),
      )),
    # How to log in (auth.py).
    Option("PreferredAuthentications", "preferred_authentications",
           default_doc="``publickey,keyboard-interactive,password``",
           doc="Login methods to try, in order, separated by commas."),
    Option("PubkeyAuthentication", "pubkey_authentication", pubkey_switch, default=True,
           doc="Log in with keys (``unbound`` and ``host-bound`` mean yes)."),
    Option("KbdInteractiveAuthentication", "kbd_interactive_authentication", yes_no,
           default=True, aliases=("ChallengeResponseAuthentication",),
           doc="Log in by answering the server's questions (one-time codes)."),
    Option("PasswordAuthentication", "password_authentication", yes_no, default=True,
           doc="Log in with a password."),
    # The connection's own socket (connect.py).
    Option("ConnectionAttempts", "connection_attempts", attempts, default=1,
           doc="Tries to connect, one second apart, before giving up."),
    Option("AddressFamily", "address_family", choice("any", "inet", "inet6"), default="any",
           doc="Connect over IPv4 only (``inet``), IPv6 only (``inet6``) or either (``any``)."),
    Option("BindAddress", "bind_address",
           doc="Local address to connect from (on a machine with several)."),
    Option("BindInterface", "bind_interface",
           doc="Network interface to connect from, by an address of it in the family "
               "connected to (Linux only; BindAddress wins when both are set)."),
    Option("ProxyUseFdpass", "proxy_use_fdpass", yes_no, default=False,
           doc="The ProxyCommand hands over a connected socket (on its stdout, as "
               "``SCM_RIGHTS``) and exits, instead of carrying the connection itself."),
    Option("TCPKeepAlive", "tcp_keep_alive", yes_no, default=True,
           doc="Let the kernel probe an idle connection (TCP keepalive)."),
    Option("ControlMaster", "control_master", control_master, default="auto",
           doc="``auto``: processes this one hands the cache to (pool workers) use its "
               "login, asking nothing.  ``no``: this process neither offers its login nor "
               "uses one offered.  ``yes``, ``ask`` and ``autoask`` read as ``auto``."),
    Option("ControlPersist", "control_persist", persist, default_doc="no",
           doc="Keep the login in a background process of fleche-ssh for this long after its "
               "last use (``10m``, ``8h``; ``yes``: until ``fleche-ssh logout``), for any of "
               "your processes: a second notebook or a restarted kernel asks no code."),
)

#: The keys of fleche's own ``type = "ssh"`` cache, which mean the same here.
STOCK_KEYS: tuple[Key, ...] = (
    Key("host", text_check("a host name or ssh_config alias (text)"),
        "Where to connect: an alias from ``~/.ssh/config``, a host name, or ``user@name``."),
    Key("python", text_check("the remote interpreter's path or command name (text)"),
        "The remote Python, which must have ``fleche`` and ``cloudpickle`` installed.  A full "
        "path is the most reliable; a leading ``~/`` is expanded by the remote shell."),
    Key("workdir", path_check("a remote directory (text)"),
        "Remote directory to start the server in; its ``fleche.toml`` decides where results "
        "are stored."),
    Key("cache_name", text_check("a cache name (text)").optional(),
        "A named cache of the remote ``fleche.toml`` (its default cache when not set)."),
    Key("setup_commands", strings_check("a list of shell commands, one string each"),
        "Shell commands run on the remote before the server, joined with ``&&``, for "
        'example ``["module load python/3.11", "source ~/venv/bin/activate"]``.'),
    Key("ssh_options", strings_check("a list of strings, as on the ssh command line"),
        "Options as written for the ``ssh`` program; see :ref:`ssh-options` below."),
)

#: The keys of fleche-ssh itself, after the OpenSSH ones.
OWN_KEYS: tuple[OwnKey, ...] = (
    OwnKey("config_file", path_check("an ssh_config file path (text)"),
        "An ssh config file to read instead of ``~/.ssh/config`` and "
        "``/etc/ssh/ssh_config``, as ``ssh -F FILE``.", default=None, type="str | None"),
    OwnKey("prompt", HANDLER,
        "Who answers the questions of logging in (one-time codes, passwords, key "
        'passphrases, unknown host keys): ``"auto"``, ``"none"``, ``"module:function"``, '
        "or in Python a callable.  See :doc:`/two-factor-and-hpc`.",
        default="auto", type="Any", repr=False),
    OwnKey("auth_timeout", POSITIVE_SECONDS,
        "Seconds allowed for logging in, the time a person takes to type a code included.  "
        "Nothing waits longer than this for an answer.",
        default=DEFAULT_AUTH_TIMEOUT, type="float"),
    OwnKey("channels", WHOLE_NUMBER,
        "How many remote server processes this cache may run at once, all on the one SSH "
        "connection.  The calls of several threads are pipelined on each (sent back to back, "
        "answered in order), so one is enough for many threads making small calls; more let "
        "remote work run in parallel (large loads and saves, slow lookups).  See "
        ":doc:`/performance`.", default=1, type="int"),
    OwnKey("progress", HANDLER,
        'How large saves and loads (4 MiB or more) show their progress: ``"auto"`` (a bar '
        "on a terminal's stderr or in the notebook, once a transfer has run a second; nothing "
        'in batch jobs and pool workers), ``"none"``, ``"module:function"``, or in Python a '
        "callable ``report(direction, bytes_done, total)``.  See :ref:`progress`.",
        default="auto", type="Any", repr=False),
)

# Keywords that only matter to the ssh binary: connection sharing, which the
# process-wide transport pool replaces, and terminal or forwarding settings
# that a cache channel never uses.
NOT_NEEDED_KEYWORDS: tuple[str, ...] = (
    "RequestTTY", "ForwardX11",
    "ForwardX11Trusted", "ForwardAgent", "LogLevel", "EscapeChar", "ExitOnForwardFailure",
    "ClearAllForwardings", "VisualHostKey", "UpdateHostKeys", "SessionType", "StdinNull",
    "ForkAfterAuthentication",
)
NOT_NEEDED = frozenset(k.lower() for k in NOT_NEEDED_KEYWORDS)


_NO = frozenset({"no", "false"})

UNHONOURED: tuple[Unhonoured, ...] = (
    # Which host keys ssh trusts.
    Unhonoured("VerifyHostKeyDNS", "ssh would trust host keys published in DNS (SSHFP)",
               same=_NO),
    # How ssh logs in.
    Unhonoured("PKCS11Provider", "ssh would use keys held on a smart card or token",
               same=frozenset({"none"})),
    Unhonoured("GSSAPIAuthentication", "ssh would also log in with a Kerberos ticket",
               logging.INFO, same=_NO),
    Unhonoured("HostbasedAuthentication", "ssh would also log in as this machine",
               logging.INFO, same=_NO),
)

#: Keywords fleche-ssh neither acts on nor reports, whose lines are still kept as
#: OpenSSH keeps them (every forward; a command as written).
OTHER_KEYWORDS: tuple[Keyword, ...] = (
    *(Keyword(keyword, values=MANY)
      for keyword in ("LocalForward", "RemoteForward", "DynamicForward", "SendEnv", "SetEnv")),
    *(Keyword(keyword, values=COMMAND) for keyword in ("LocalCommand", "RemoteCommand")),
)

#: Each keyword and each of its older names, lowercased, to the keyword OpenSSH reads it as.
ALIASES: dict[str, str] = {a.lower(): o.keyword.lower() for o in OPTIONS for a in o.aliases}
BY_KEYWORD: dict[str, Option] = {o.keyword.lower(): o for o in OPTIONS}
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}
#: Every key of ``ParamikoCache``: the stock cache's, the OpenSSH keywords', its own.
KEYS: dict[str, Option | Key] = {
    **{k.key: k for k in STOCK_KEYS}, **BY_KEY, **{k.key: k for k in OWN_KEYS}}
#: How each keyword's values are kept, lowercased; :attr:`Values.ONE` for any not listed.
VALUES: dict[str, Values] = {
    row.keyword.lower(): row.values for row in (*OPTIONS, *UNHONOURED, *OTHER_KEYWORDS)
    if row.values is not ONE
}
UNHONOURED_BY_KEYWORD: dict[str, Unhonoured] = {u.keyword.lower(): u for u in UNHONOURED}
#: ssh's command-line flags that set a keyword, ``-p`` -> the Port row.
FLAGS: dict[str, Option] = {o.flag.split()[0]: o for o in OPTIONS if o.flag}
