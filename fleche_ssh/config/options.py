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
the keywords of :data:`UNHONOURED` that make ``ssh`` connect elsewhere,
trust other host keys or negotiate differently, at warning or info level,
saying what ``ssh`` would have done.
"""

from __future__ import annotations

import logging

from .parsers import (
    HANDLER,
    PATHS,
    POSITIVE_SECONDS,
    WHOLE_NUMBER,
    choice,
    count,
    interval,
    path_check,
    port,
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
    home_path_list,
    hostname,
    local_user,
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
    Option("User", "user", default=Computed(local_user), default_doc="your local user name",
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
        "How many remote server processes this cache may run at once, and so how many calls "
        "from different threads proceed in parallel.  All of them share the one SSH "
        "connection.", default=1, type="int"),
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
    "ControlMaster", "ControlPersist", "RequestTTY", "ForwardX11",
    "ForwardX11Trusted", "ForwardAgent", "LogLevel", "EscapeChar", "ExitOnForwardFailure",
    "ClearAllForwardings", "VisualHostKey", "UpdateHostKeys", "SessionType", "StdinNull",
    "ForkAfterAuthentication",
)
NOT_NEEDED = frozenset(k.lower() for k in NOT_NEEDED_KEYWORDS)


_NO = frozenset({"no", "false"})
_YES = frozenset({"yes", "true"})
_ALGORITHMS = "ssh would offer only (or also) the algorithms listed"

UNHONOURED: tuple[Unhonoured, ...] = (
    # Where ssh connects to, and from.
    Unhonoured("AddressFamily", "ssh would connect over IPv4 only (inet) or IPv6 only (inet6)",
               same=frozenset({"any"})),
    Unhonoured("BindAddress", "ssh would connect from this local address"),
    Unhonoured("BindInterface", "ssh would connect from the address of this interface"),
    Unhonoured("CanonicalizeHostname",
               "ssh would try the name with each CanonicalDomains suffix and connect to the "
               "first that resolves (fleche-ssh applies Match canonical blocks, but connects to "
               "the name as written)", same=_NO),
    Unhonoured("ProxyUseFdpass",
               "ssh would take a connected socket from the ProxyCommand instead of its output",
               same=_NO),
    # Which host keys ssh trusts.
    Unhonoured("HostKeyAlias", "ssh would look the host key up in known_hosts under this name"),
    Unhonoured("KnownHostsCommand", "ssh would also trust the host keys this command prints",
               values=COMMAND),
    Unhonoured("RevokedHostKeys", "ssh would refuse the host keys listed in this file"),
    Unhonoured("VerifyHostKeyDNS", "ssh would trust host keys published in DNS (SSHFP)",
               same=_NO),
    # How ssh logs in.
    Unhonoured("PKCS11Provider", "ssh would use keys held on a smart card or token",
               same=frozenset({"none"})),
    Unhonoured("GSSAPIAuthentication", "ssh would also log in with a Kerberos ticket",
               logging.INFO, same=_NO),
    Unhonoured("HostbasedAuthentication", "ssh would also log in as this machine",
               logging.INFO, same=_NO),
    Unhonoured("PreferredAuthentications", "ssh would try the login methods in this order",
               logging.INFO),
    *(Unhonoured(keyword, "ssh would not try this login method", logging.INFO, same=_YES)
      for keyword in ("PubkeyAuthentication", "PasswordAuthentication",
                      "KbdInteractiveAuthentication", "ChallengeResponseAuthentication")),
    # What ssh negotiates.
    *(Unhonoured(keyword, _ALGORITHMS, logging.INFO)
      for keyword in ("Ciphers", "MACs", "KexAlgorithms", "HostKeyAlgorithms",
                      "PubkeyAcceptedAlgorithms", "PubkeyAcceptedKeyTypes",
                      "CASignatureAlgorithms")),
    Unhonoured("ConnectionAttempts", "ssh would try to connect this many times", logging.INFO,
               same=frozenset({"1"})),
    Unhonoured("TCPKeepAlive", "ssh would not turn TCP keepalive on", logging.INFO, same=_YES),
    Unhonoured("CheckHostIP", "ssh would also check the host's address in known_hosts",
               logging.INFO, same=_NO),
)

#: Keywords fleche-ssh neither acts on nor reports, whose lines are still kept as
#: OpenSSH keeps them (every forward; a command as written).
OTHER_KEYWORDS: tuple[Keyword, ...] = (
    *(Keyword(keyword, values=MANY)
      for keyword in ("LocalForward", "RemoteForward", "DynamicForward", "SendEnv", "SetEnv")),
    *(Keyword(keyword, values=COMMAND) for keyword in ("LocalCommand", "RemoteCommand")),
)

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
