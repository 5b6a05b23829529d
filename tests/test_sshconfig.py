"""ssh_config evaluation, checked against OpenSSH's own resolver and on its own.

The realistic files in ``tests/data/ssh_configs/`` are resolved twice: by
fleche-ssh and by the ``ssh`` binary.  ``ssh -G`` prints what it resolved;
``ssh -v`` shows what ``-G`` leaves raw: the identity and certificate files
after token expansion, and the ProxyCommand as it runs it.  A ProxyJump is
followed hop by hop, each hop resolved by ``ssh -G`` with the options ssh
gives the ``ssh -W`` it runs for it.  ``ssh`` takes ``~`` and ``%d`` from
the password database, so those comparisons run it with a password
database that names a throwaway home for this user, and set ``$HOME`` to
the same directory; every other test here uses a throwaway ``$HOME`` of its own.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import subprocess
import time
from pathlib import Path

import pytest
import test_target

from fleche_ssh.config import sshconfig
from fleche_ssh.config.algorithms import SUPPORTED, assemble
from fleche_ssh.config.options import (
    DEFAULT_ALIVE_INTERVAL,
    NOT_NEEDED,
    UNHONOURED,
    UNHONOURED_BY_KEYWORD,
)
from fleche_ssh.config.target import Target, resolve
from fleche_ssh.errors import ConfigError

# A throwaway $HOME with the system file moved inside it, and $LOGNAME and $USER set to
# ENVIRONMENT_USER, which is not the local user.
home = test_target.home
LOCAL_USER = test_target.LOCAL_USER
ENVIRONMENT_USER = test_target.ENVIRONMENT_USER

DATA = Path(__file__).parent / "data" / "ssh_configs"
# Replaced in the copies: the copy's folder, and the same as a path relative to ~/.ssh.
PLACEHOLDER = "@HERE@"
RELATIVE_PLACEHOLDER = "@SSHREL@"
# Default identities ssh lists that Paramiko cannot load (security keys, XMSS, DSA):
# fleche-ssh leaves them out of its defaults on purpose.
NOT_LOADABLE_DEFAULTS = ("id_ecdsa_sk", "id_ed25519_sk", "id_xmss", "id_dsa")
# ``ssh -G`` prints StrictHostKeyChecking yes/no as true/false.
SSH_G_POLICY = {"true": "yes", "false": "no"}
# $SHELL for ``ssh -v`` runs: ssh runs a ProxyCommand as ``$SHELL -c "exec COMMAND"``
# (after logging it), which this ends at once; ``Match exec`` commands still run.
PROBE_SHELL = '#!/bin/sh\ncase "$2" in "exec "*) exit 1;; esac\nexec /bin/sh "$@"\n'
_HOP = re.compile(r"^(?:(?P<user>[^@]*)@)?(?:\[(?P<address>[^]]+)\]|(?P<host>[^:]+))"
                  r"(?::(?P<port>\d+))?$")


def _cases() -> list[tuple[str, str]]:
    """(file, destination) pairs from each data file's ``# hosts:`` line."""
    cases = []
    for path in sorted(DATA.glob("*.conf")):
        found = re.search(r"^# hosts: (.+)$", path.read_text(), re.MULTILINE)
        assert found, f"{path.name} lists no hosts to resolve"
        cases += [(path.name, host) for host in found.group(1).split()]
    return cases


#: Runs a command (here ``ssh``) in a private mount namespace whose ``/etc/passwd`` is the
#: file given first: the namespace ends with the command, nothing outside it changes.
WITH_PASSWD = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/passwd && exec "$@"']
#: The password database ``_ssh`` gives ssh; set by ``passwd_home``.
_passwd: Path | None = None


@pytest.fixture(scope="module")
def ssh_home(tmp_path_factory) -> tuple[Path, Path]:
    """A throwaway home, and a password database naming it as this user's home.

    ``ssh`` reads ``~`` and ``%d`` from the password database, not from
    ``$HOME`` (only its ``Include`` globs go by ``$HOME``), so ``_ssh`` gives
    it this database in a private mount namespace, where ``~/.ssh`` exists
    for relative ``Include`` lines to start from.  The real home is never
    read or written.  Mounting needs root, as the test servers do.
    """
    home = tmp_path_factory.mktemp("passwd-home")
    (home / ".ssh").mkdir(mode=0o700)
    me = pwd.getpwuid(os.getuid())
    mine = ":".join([me.pw_name, "x", str(me.pw_uid), str(me.pw_gid), me.pw_gecos, str(home),
                     me.pw_shell])
    others = [line for line in Path("/etc/passwd").read_text().splitlines()
              if line.split(":")[2:3] != [str(me.pw_uid)]]
    passwd = tmp_path_factory.mktemp("passwd") / "passwd"
    passwd.write_text("\n".join([mine, *others]) + "\n")
    seen = subprocess.run([*WITH_PASSWD, str(passwd), "getent", "passwd", str(me.pw_uid)],
                          capture_output=True, text=True, timeout=20, check=False)
    if seen.stdout.strip() != mine:
        pytest.fail(f"cannot give ssh a throwaway home (a private mount namespace needs root): "
                    f"{seen.stderr.strip()}", pytrace=False)
    return home, passwd


@pytest.fixture(scope="module")
def configs(tmp_path_factory, ssh_home) -> Path:
    """The data files, copied with their placeholders replaced, and the probe shell."""
    root = tmp_path_factory.mktemp("ssh_configs")
    relative = os.path.relpath(root, ssh_home[0] / ".ssh")
    for path in DATA.rglob("*"):
        if path.is_file():
            copy = root / path.relative_to(DATA)
            copy.parent.mkdir(parents=True, exist_ok=True)
            text = path.read_text().replace(PLACEHOLDER, str(root))
            copy.write_text(text.replace(RELATIVE_PLACEHOLDER, relative))
    shell = root / "probe-shell"
    shell.write_text(PROBE_SHELL)
    shell.chmod(0o755)
    return root


@pytest.fixture
def passwd_home(monkeypatch, ssh_home, client_key) -> Path:
    """``$HOME`` and the login name as ``ssh`` (run by ``_ssh``) sees them.

    The variables that name a login are set to another name than the
    password database's: ssh takes the local user (the default User,
    ``%u``, ``Match localuser``) from the database, so fleche-ssh agrees
    with it only if it does too.  ``client_key`` is requested for its check
    that the OpenSSH client is installed.
    """
    home, passwd = ssh_home
    monkeypatch.setenv("HOME", str(home))
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, ENVIRONMENT_USER)
    monkeypatch.setitem(globals(), "_passwd", passwd)
    return home


def _ssh(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``ssh`` with the password database of ``passwd_home``."""
    assert _passwd is not None, "run ssh only in tests that use the passwd_home fixture"
    return subprocess.run([*WITH_PASSWD, str(_passwd), "ssh", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=20, check=False, env=env)


def ssh_G(config: Path, host: str, options: list[str] = ()) -> dict[str, list[str]]:
    done = _ssh(["-G", "-F", str(config), *options, host])
    assert done.returncode == 0, done.stderr
    printed: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        printed.setdefault(keyword, []).append(value)
    return printed


def ssh_loaded_files(config: Path, host: str,
                     options: list[str] = ()) -> tuple[list[str], list[str]]:
    """The identity and certificate files ssh would offer, expanded, as ``ssh -v`` loads them.

    ``ProxyCommand=false`` (given first, so that it beats any ProxyJump;
    ``ProxyUseFdpass=no`` so that ssh reads its output) gives ssh a
    connection that closes at once, after it has loaded (and
    logged) its files; nothing goes on the network.  ``-J`` changes no file
    and cannot be combined with it, so it is left out.
    """
    loud = []  # -q would silence the log read here
    rest = list(options)
    while rest:
        option = rest.pop(0)
        if option == "-J":
            rest.pop(0)
        elif option != "-q" and not option.startswith("-J"):
            loud.append(option)
    done = _ssh(["-v", "-F", str(config), "-o", "ProxyCommand=false",
                 "-o", "ProxyUseFdpass=no", *loud, "-o", "BatchMode=yes", host])
    logged = re.findall(r"^debug1: identity file (.+) type -?\d+$", done.stderr, re.MULTILINE)
    assert logged, done.stderr
    # Each key is followed by its certificate ("<key>-cert"), which is not a key.
    keys = [f for i, f in enumerate(logged) if not (i and f == logged[i - 1] + "-cert")]
    certificates = re.findall(r"^debug1: certificate file (.+) type -?\d+$", done.stderr,
                              re.MULTILINE)
    return [f for f in keys if os.path.basename(f) not in NOT_LOADABLE_DEFAULTS], certificates


def ssh_proxy_command(config: Path, host: str, options: list[str], shell: Path) -> str:
    """The ProxyCommand as ssh runs it, tokens expanded (``ssh -v`` logs it first)."""
    done = _ssh(["-v", "-F", str(config), *options, "-o", "BatchMode=yes", host],
                env={**os.environ, "SHELL": str(shell)})
    found = re.search(r"^debug1: Executing proxy command: exec (.*)$", done.stderr, re.MULTILINE)
    assert found, done.stderr
    return found.group(1)


def ssh_jump_chain(config: Path, host: str, options: list[str] = ()) -> list[str]:
    """The hops ssh goes through to reach *host*, first hop first, as ``user@host:port``.

    ssh reaches the last hop of a ProxyJump list by running ``ssh -l USER
    -p PORT -J EARLIER_HOPS -F CONFIG HOP``, which may have a ProxyJump of
    its own.  ``-G`` prints the list with ``[]`` around numeric addresses.
    """
    spec = ssh_G(config, host, options).get("proxyjump")
    if spec is None:
        return []
    earlier, _, last = spec[0].rpartition(",")
    hop = _HOP.match(last)
    assert hop, spec
    name = hop["address"] or hop["host"]
    hop_options = [*(["-l", hop["user"]] if hop["user"] else []),
                   *(["-p", hop["port"]] if hop["port"] else []),
                   *(["-J", earlier] if earlier else [])]
    printed = ssh_G(config, name, hop_options)
    label = f"{printed['user'][0]}@{printed['hostname'][0]}:{printed['port'][0]}"
    return [*ssh_jump_chain(config, name, hop_options), label]


#: The algorithm keywords, their Target fields, and the ``ssh -Q`` query listing every
#: name ssh matches their patterns against.
ALGORITHMS = {"Ciphers": ("ciphers", "cipher"), "MACs": ("macs", "mac"),
              "KexAlgorithms": ("kex_algorithms", "kex"),
              "HostKeyAlgorithms": ("host_key_algorithms", "key-sig"),
              "PubkeyAcceptedAlgorithms": ("pubkey_accepted_algorithms", "key-sig"),
              "CASignatureAlgorithms": ("ca_signature_algorithms", "sig")}
_openssh_lists: dict[str, tuple[list[str], list[str]]] = {}


def openssh_lists() -> dict[str, tuple[list[str], list[str]]]:
    """Per algorithm keyword, ssh's default list and every name it knows, in its order."""
    if not _openssh_lists:
        printed = subprocess.run(["ssh", "-G", "-F", "none", "h"], capture_output=True,
                                 text=True, timeout=20, check=True).stdout
        defaults = dict(line.partition(" ")[::2] for line in printed.splitlines())
        for keyword, (_, query) in ALGORITHMS.items():
            known = subprocess.run(["ssh", "-Q", query], capture_output=True, text=True,
                                   timeout=20, check=True).stdout.split()
            _openssh_lists[keyword] = (defaults[keyword.lower()].split(","), known)
    return _openssh_lists


def algorithm_lists(ours: Target) -> dict[str, list[str]]:
    """Per algorithm keyword, the list ssh would build from the line we resolved.

    Built by our list function from ssh's own default and names, so it must be
    what ``ssh -G`` prints exactly: the same line won (first value, ``Match``,
    the old keyword names) and the syntax means the same.  What our lists are
    made of, Paramiko's names on fleche-ssh's defaults, is checked by
    :func:`assert_lists_edit_our_defaults`.
    """
    lists = {}
    for keyword, (field_name, _) in ALGORITHMS.items():
        default, known = openssh_lists()[keyword]
        chosen = getattr(ours, field_name)
        lists[keyword.lower()] = list(
            assemble(chosen.written, default, known) if chosen is not None else default)
    return lists


def assert_lists_edit_our_defaults(ours: Target, theirs: dict[str, list[str]]) -> None:
    """Each list set offers what ssh adds (that Paramiko has) and nothing ssh takes away."""
    for keyword, (field_name, _) in ALGORITHMS.items():
        chosen = getattr(ours, field_name)
        if chosen is None:
            continue
        ssh_list = theirs[keyword.lower()][0].split(",")
        ssh_default = openssh_lists()[keyword][0]
        paramiko_has = SUPPORTED[keyword]
        assert set(ssh_list) & set(paramiko_has) <= set(chosen.names), keyword
        assert not (set(ssh_default) - set(ssh_list)) & set(chosen.names), keyword
        # A plain list keeps its order; a pattern expands in the order of the names the
        # implementation has, which are Paramiko's here and OpenSSH's there.
        plain = not any(c in chosen.written for c in "+-^*?")
        if plain:
            assert list(chosen.names) == [n for n in ssh_list if n in paramiko_has], keyword


def as_ssh_G(ours: Target) -> dict[str, object]:
    """Our resolution in the terms of the comparison below."""
    return {
        **algorithm_lists(ours),
        "preferredauthentications": ours.preferred_authentications,
        "pubkeyauthentication": ours.pubkey_authentication,
        "kbdinteractiveauthentication": ours.kbd_interactive_authentication,
        "passwordauthentication": ours.password_authentication,
        "connectionattempts": ours.connection_attempts,
        "addressfamily": ours.address_family,
        "bindaddress": ours.bind_address,
        "bindinterface": ours.bind_interface,
        "proxyusefdpass": ours.proxy_use_fdpass,
        "tcpkeepalive": ours.tcp_keep_alive,
        "hostname": ours.hostname,
        "user": ours.user,
        "port": ours.port,
        "identityfile": list(ours.identity_files),
        "certificatefile": list(ours.certificate_files),
        "identitiesonly": ours.identities_only,
        "identityagent": ours.identity_agent,
        # ssh -G joins the files with blanks (even one whose name has a blank).
        "userknownhostsfile": " ".join(ours.known_hosts_files),
        "globalknownhostsfile": " ".join(ours.global_known_hosts_files),
        "stricthostkeychecking": ours.strict_host_key_checking,
        "hashknownhosts": ours.hash_known_hosts,
        "connecttimeout": ours.connect_timeout,
        "batchmode": ours.batch_mode,
        "proxyjump": [hop.label for hop in ours.chain()],
        "proxycommand": ours.proxy_command,
        "serveraliveinterval": ours.server_alive_interval,
        "serveralivecountmax": ours.server_alive_count_max,
        "compression": ours.compression,
        "hostkeyalias": ours.host_key_alias,
        "checkhostip": ours.check_host_ip,
        "revokedhostkeys": ours.revoked_host_keys,
        "knownhostscommand": ours.known_hosts_command,
        "canonicalizehostname": ours.canonicalize_hostname,
        "canonicaldomains": list(ours.canonical_domains),
        "canonicalizefallbacklocal": ours.canonicalize_fallback_local,
        "canonicalizemaxdots": ours.canonicalize_max_dots,
        "canonicalizepermittedcnames": list(ours.canonicalize_permitted_cnames),
    }


def assert_agrees_with_ssh(config: Path, host: str, options: list[str] = (), *,
                           shell: Path) -> Target:
    ours = resolve(host, config_file=config, ssh_options=options)
    theirs = ssh_G(config, host, options)

    def one(keyword: str) -> str | None:
        return theirs.get(keyword, [None])[0]

    def no_file(files: str) -> str:
        return "" if files == "none" else files

    def words(text: str) -> list[str]:
        return [] if text == "none" else text.split()

    identities, certificates = ssh_loaded_files(config, host, options)
    timeout, policy, interval = one("connecttimeout"), one("stricthostkeychecking"), float(
        one("serveraliveinterval"))
    if "serveraliveinterval" not in dict(ours.origins):
        # Unset: ssh sends no keepalives (every 300 s in BatchMode), fleche-ssh sends
        # them at its own default (see liveness.py).
        assert interval == (300 if one("batchmode") == "yes" else 0)
        interval = DEFAULT_ALIVE_INTERVAL
    expected = {
        **{keyword.lower(): theirs[keyword.lower()][0].split(",") for keyword in ALGORITHMS},
        "preferredauthentications": one("preferredauthentications"),
        # ssh -G prints yes as "true", and "unbound" or "host-bound" as they are.
        "pubkeyauthentication": one("pubkeyauthentication") != "false",
        "kbdinteractiveauthentication": one("kbdinteractiveauthentication") == "yes",
        "passwordauthentication": one("passwordauthentication") == "yes",
        "connectionattempts": int(one("connectionattempts")),
        "addressfamily": one("addressfamily"),
        "bindaddress": one("bindaddress"),
        "bindinterface": one("bindinterface"),
        "proxyusefdpass": one("proxyusefdpass") == "yes",
        "tcpkeepalive": one("tcpkeepalive") == "yes",
        "hostname": one("hostname"),
        "user": one("user"),
        "port": int(one("port")),
        "identityfile": identities,
        "certificatefile": certificates,
        "identitiesonly": one("identitiesonly") == "yes",
        "identityagent": one("identityagent"),
        # ``none`` is no file; ssh expands ``~`` in the global files when it reads them.
        "userknownhostsfile": no_file(one("userknownhostsfile")),
        "globalknownhostsfile": " ".join(
            os.path.expanduser(f) for f in no_file(one("globalknownhostsfile")).split()),
        "stricthostkeychecking": SSH_G_POLICY.get(policy, policy),
        "hashknownhosts": one("hashknownhosts") == "yes",
        "connecttimeout": None if timeout == "none" else float(timeout),
        "batchmode": one("batchmode") == "yes",
        "proxyjump": ssh_jump_chain(config, host, options),
        "proxycommand": one("proxycommand") and ssh_proxy_command(config, host, options, shell),
        "serveraliveinterval": interval,
        "serveralivecountmax": int(one("serveralivecountmax")),
        "compression": one("compression") == "yes",
        "hostkeyalias": one("hostkeyalias"),
        "checkhostip": one("checkhostip") == "yes",
        # ssh 9 expands ``~`` in the file when it reads it, and no token.
        "revokedhostkeys": one("revokedhostkeys") and os.path.expanduser(
            one("revokedhostkeys")),
        # Printed as written: the data files give it only the tokens of the host key,
        # which ssh fills in when it runs the command (test_known_hosts_command.py).
        "knownhostscommand": (None if one("knownhostscommand") in (None, "none")
                              else one("knownhostscommand")),
        # ssh -G prints yes as true, no as false.
        "canonicalizehostname": SSH_G_POLICY.get(one("canonicalizehostname"),
                                                 one("canonicalizehostname")),
        "canonicaldomains": words(one("canonicaldomains")),
        "canonicalizefallbacklocal": one("canonicalizefallbacklocal") == "yes",
        "canonicalizemaxdots": int(one("canonicalizemaxdots")),
        # Printed with this spelling, source:target rules separated by blanks.
        "canonicalizepermittedcnames": words(one("canonicalizePermittedcnames")),
    }
    assert as_ssh_G(ours) == expected
    assert_lists_edit_our_defaults(ours, theirs)
    return ours


@pytest.mark.parametrize(("name", "host"), _cases())
def test_data_file_resolves_as_openssh_does(configs, passwd_home, name, host):
    assert_agrees_with_ssh(configs / name, host, shell=configs / "probe-shell")


@pytest.fixture
def key_files(configs) -> list[str]:
    """Two existing key files (ssh drops a missing ``-i`` file, a missing ``-o`` one not)."""
    paths = [configs / "k one", configs / "k2"]
    for path in paths:
        path.write_text("")
    return [str(p) for p in paths]


SSH_OPTIONS = [
    ["-p", "2222"],
    ["-p2222"],
    ["-l", "carol"],
    ["-lcarol"],
    ["-o", "Port=2201"],
    ["-oUser=dave"],
    ["-o", "User erin"],
    ["-o", "User=first", "-o", "User=second"],
    ["-o", "Port=1111", "-p", "2222"],
    ["-p", "2222", "-o", "Port=1111"],
    ["-o", "HostName=elsewhere.example.org"],
    ["-o", "StrictHostKeyChecking=accept-new"],
    ["-o", "StrictHostKeyChecking no"],
    ["-o", "ConnectTimeout=1m"],
    ["-o", "IdentitiesOnly=yes"],
    ["-o", 'UserKnownHostsFile="/tmp/known hosts" /tmp/kh2'],
    ["-o", "IdentityFile=~/.ssh/id_%h_%r"],
    ["-o", "ControlMaster=auto", "-o", "ControlPath=~/.ssh/cm-%r@%h:%p", "-o",
     "ControlPersist=10m"],
    ["-T", "-x", "-q", "-4"],
    ["-J", "jump.example.org"],
    ["-J", "hop@first.example.org:2200,second.example.org"],
    ["-o", "ProxyJump=ssh://hop@[192.0.2.9]:2201"],
    ["-J", "[2001:db8::5]:2222"],
    ["-o", "ProxyJump=none"],
    ["-o", "ProxyCommand=nc -w 10 %h %p"],
    ["-J", "jump.example.org", "-o", "ProxyCommand=nc %h %p"],
    ["-C"],
    ["-o", "Compression=yes"],
    ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=1"],
    ["-o", "CertificateFile=~/.ssh/cert-%h-%r.pub"],
    ["-o", "IdentityAgent=~/.ssh/agent.%C"],
    ["-o", "BatchMode=yes", "-o", "HashKnownHosts=yes"],
    ["-o", "GlobalKnownHostsFile=/etc/k1 ~/k2"],
    ["-o", "Ciphers=+aes128-cbc", "-o", "MACs=^hmac-sha2-512"],
    ["-o", "KexAlgorithms=-ecdh-*", "-o", "HostKeyAlgorithms=ssh-ed25519"],
    ["-o", "PubkeyAcceptedKeyTypes=+ssh-rsa", "-o", "CASignatureAlgorithms=ssh-ed25519"],
    ["-o", "PreferredAuthentications=keyboard-interactive,publickey"],
    ["-o", "ChallengeResponseAuthentication=no", "-o", "PasswordAuthentication=no"],
    ["-o", "PubkeyAuthentication=host-bound"],
    ["-6"],
    ["-4", "-o", "AddressFamily=inet6"],
    ["-o", "BindAddress=127.0.0.2", "-o", "ConnectionAttempts=4"],
    ["-o", "BindInterface=eth1", "-o", "BindAddress=127.0.0.3"],
    ["-o", "TCPKeepAlive=no", "-o", "ProxyUseFdpass=yes"],
    ["-o", "HostKeyAlias=Shared-Login", "-o", "CheckHostIP=yes"],
    ["-o", "RevokedHostKeys=~/.ssh/revoked", "-o", "KnownHostsCommand=/opt/kh %I %H"],
    ["-o", "KnownHostsCommand=none"],
]


@pytest.mark.parametrize("options", SSH_OPTIONS, ids=" ".join)
@pytest.mark.parametrize("host", ["work", "unlisted.example.net"])
def test_ssh_options_mean_what_they_mean_to_ssh(configs, passwd_home, options, host):
    assert_agrees_with_ssh(configs / "01_laptop_aliases.conf", host, options,
                           shell=configs / "probe-shell")


def test_identity_flags_mean_what_they_mean_to_ssh(configs, passwd_home, key_files):
    options = ["-i", key_files[0], f"-i{key_files[1]}"]
    ours = assert_agrees_with_ssh(configs / "01_laptop_aliases.conf", "work", options,
                                  shell=configs / "probe-shell")
    assert ours.identity_files[:2] == tuple(key_files)


def test_F_in_ssh_options_reads_that_file(configs, passwd_home):
    options = ["-F", str(configs / "02_host_star_defaults.conf")]
    ours = resolve("db", ssh_options=options)
    theirs = ssh_G(configs / "02_host_star_defaults.conf", "db")
    assert (ours.hostname, ours.port, ours.user) == (
        theirs["hostname"][0], int(theirs["port"][0]), theirs["user"][0])
    assert (ours.hostname, ours.port, ours.user) == ("db.internal", 5022, "everyone")


def test_J_after_another_proxy_is_refused_as_ssh_refuses_it(configs, passwd_home):
    config = configs / "01_laptop_aliases.conf"
    for options, expected in [
        (["-o", "ProxyCommand=none", "-J", "jump.example.org"], "cannot be combined"),
        (["-o", "ProxyJump=a", "-J", "b"], "only one -J"),
        (["-J", "a", "-J", "b"], "only one -J"),
    ]:
        assert _ssh(["-G", "-F", str(config), *options, "work"]).returncode == 255, options
        with pytest.raises(ConfigError, match=expected):
            resolve("work", config_file=config, ssh_options=options)


@pytest.mark.parametrize(("line", "options", "ssh_says", "we_say"), [
    ("HostName %d.example.org", [], "unknown key %d", "HostName: unknown token %d"),
    ("ProxyCommand nc %h %u", [], "unknown key %u", "ProxyCommand: unknown token %u"),
    ("IdentityFile ~/.ssh/id_%j", ["-o", "ProxyCommand=false"], "unknown key %j",
     "IdentityFile: unknown token %j"),
    ("CertificateFile ${FLECHE_SSH_UNSET}/c", ["-o", "ProxyCommand=false"],
     "${FLECHE_SSH_UNSET}", "environment variable FLECHE_SSH_UNSET is not set"),
])
def test_what_ssh_refuses_is_refused_with_file_and_line(configs, passwd_home, tmp_path, line,
                                                        options, ssh_says, we_say):
    config = write(tmp_path / "config", f"Host h\n    {line}\n")
    done = _ssh(["-v", "-F", str(config), *options, "-o", "BatchMode=yes", "h"],
                env={**os.environ, "SHELL": str(configs / "probe-shell")})
    assert done.returncode == 255 and ssh_says in done.stderr, done.stderr

    with pytest.raises(ConfigError, match=re.escape(we_say)) as raised:
        resolve("h", config_file=config)
    assert f"{config}:2" in str(raised.value)


def test_proxy_jump_tokens_expand_as_ssh_expands_them(configs, passwd_home, tmp_path):
    config = write(tmp_path / "config",
                   "Host *.inner\n    User alice\n    ProxyJump %r@jump-%n.example.org\n")
    ran = ssh_proxy_command(config, "node.inner", [], configs / "probe-shell")
    # ssh runs "ssh -l USER -F CONFIG -W '[%h]:%p' HOST" with the tokens expanded.
    user, host = re.search(r"-l (\S+) .* (\S+)$", ran).groups()

    jump = resolve("node.inner", config_file=config).jump
    assert (jump.alias, jump.user) == (host, user) == ("jump-node.inner.example.org", "alice")


# --- the file format on its own, with a throwaway $HOME --------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_include_is_relative_to_dot_ssh_and_globbed_in_order(home):
    write(home / ".ssh" / "config", "Include conf.d/*.conf\nHost *\n    Port 2999\n")
    write(home / ".ssh" / "conf.d" / "20-second.conf",
          "Host box\n    User second\n    IdentityFile ~/.ssh/id_second\n")
    write(home / ".ssh" / "conf.d" / "10-first.conf",
          "Host box\n    HostName box.example.org\n    IdentityFile ~/.ssh/id_first\n")
    write(home / ".ssh" / "conf.d" / "ignored.txt", "Host box\n    User not-included\n")

    found = resolve("box")

    assert (found.hostname, found.user, found.port) == ("box.example.org", "second", 2999)
    assert found.identity_files == (str(home / ".ssh/id_first"), str(home / ".ssh/id_second"))
    assert dict(found.origins)["hostname"] == f"{home}/.ssh/conf.d/10-first.conf:2"


def test_include_inside_a_host_block_applies_only_there(home):
    write(home / ".ssh" / "config",
          "Host special\n    Include ~/.ssh/special.conf\nHost *\n    User everyone\n")
    write(home / ".ssh" / "special.conf", "User special-user\n")

    assert resolve("special").user == "special-user"
    assert resolve("ordinary").user == "everyone"


def test_user_file_beats_the_system_file_whose_includes_start_in_its_folder(home, tmp_path):
    write(tmp_path / "etc" / "ssh_config", "Include sys.d/*\nHost *\n    User system-user\n")
    write(tmp_path / "etc" / "sys.d" / "ports", "Host *\n    Port 2022\n    User sys-d-user\n")
    write(home / ".ssh" / "config", "Host mine\n    User my-user\n")

    assert (resolve("mine").user, resolve("mine").port) == ("my-user", 2022)
    assert (resolve("other").user, resolve("other").port) == ("sys-d-user", 2022)


def test_include_loop_is_refused_with_the_file(home):
    config = write(home / ".ssh" / "config", "Include ~/.ssh/config\n")

    with pytest.raises(ConfigError, match="Include nested more than") as raised:
        resolve("anything")
    assert str(config) in str(raised.value)


@pytest.mark.parametrize(("pattern", "matching", "not_matching"), [
    ("* !bastion", ["web", "db.example.org"], ["bastion"]),
    ("*.example.org !*.dmz.example.org", ["a.example.org"], ["x.dmz.example.org", "a.org"]),
    # Host lines compare case-sensitively, as ssh's do.
    ("node?? !node00", ["node01", "node42"], ["node00", "node100", "node1", "NODE42"]),
    ("!secret", [], ["secret", "anything"]),
])
def test_negated_host_patterns(home, pattern, matching, not_matching):
    write(home / ".ssh" / "config", f"Host {pattern}\n    Port 2345\n")
    for host in matching:
        assert resolve(host).port == 2345, host
    for host in not_matching:
        assert resolve(host).port == 22, host


@pytest.mark.parametrize(("criteria", "host", "matched"), [
    ("host real.example.org", "alias", True),     # after HostName
    ("host alias", "alias", False),
    ("originalhost alias", "alias", True),        # as typed
    ("originalhost real.example.org", "alias", False),
    ("user bob", "bob@alias", True),
    ("user bob", "alias", False),
    ("user alias-user", "alias", False),          # User is set later in the file
    (f"localuser {LOCAL_USER}", "alias", True),
    (f"localuser nobody,{LOCAL_USER}", "alias", True),
    (f"!localuser {LOCAL_USER}", "alias", False),
    (f"localuser {ENVIRONMENT_USER}", "alias", False),  # $LOGNAME is not the local user
    ("all", "alias", True),
    ('exec "test %h = real.example.org"', "alias", True),
    ('exec "test %n = other"', "alias", False),
    ("exec false", "alias", False),
    ("final", "alias", True),                     # on the second pass
    ("!final", "alias", True),                    # on the first pass
])
def test_match_criteria(home, criteria, host, matched):
    write(home / ".ssh" / "config",
          "Host alias\n    HostName real.example.org\n"
          f"Match {criteria}\n    Port 2345\n"
          "Host alias\n    User alias-user\n")
    assert (resolve(host).port == 2345) is matched


def test_match_exec_is_bounded_in_time(home, monkeypatch):
    monkeypatch.setattr(sshconfig, "MATCH_EXEC_TIMEOUT", 0.5)
    write(home / ".ssh" / "config", 'Match exec "sleep 30"\n    Port 2345\n')

    started = time.monotonic()
    found = resolve("slow")

    assert found.port == 22  # a command that times out does not match
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("line", "expected"), [
    ("Match colour blue", "Match criterion 'colour' is not supported"),
    ("Match host", "Match host needs an argument"),
    ("Match", "Match needs criteria"),
    ('IdentityFile "~/.ssh/unclosed', "unterminated"),
    ("User two words", "User: expected one value"),
    ("StrictHostKeyChecking maybe", "StrictHostKeyChecking: expected one of yes, ask"),
    ("Port 99999", "Port: expected a port between 1 and 65535"),
    ("ConnectTimeout soon", "ConnectTimeout: expected seconds"),
    ("IdentitiesOnly perhaps", "IdentitiesOnly: expected yes or no"),
    ("IdentityFile ~/.ssh/%z", "unknown token %z"),
])
def test_invalid_lines_are_refused_with_file_and_line(home, line, expected):
    config = write(home / ".ssh" / "config", f"# comment\n\nHost *\n    {line}\n")

    with pytest.raises(ConfigError, match=re.escape(expected)) as raised:
        resolve("anything")
    assert f"{config}:4" in str(raised.value)


@pytest.mark.parametrize(("lines", "ssh_says", "we_say"), [
    ("Host other\n    Port nonsense\n", "Bad port", "Port: expected a port"),
    ("Match originalhost other\n    ConnectTimeout soon\n", "invalid time value",
     "ConnectTimeout: expected seconds"),
    ("Host other\n    Include @INC@\n", "integer value invalid",
     "ServerAliveCountMax: expected a whole"),
    ("Host *\n    User first\nHost *\n    User two words\n", "extra arguments at end of line",
     "User: expected one value"),
    ("Host other\n    IdentitiesOnly\n", "no argument after keyword",
     "IdentitiesOnly needs a value"),
    # A keyword fleche-ssh has no row for still needs a value where it applies.
    ("Host *\n    ForwardX11\n", "no argument after keyword", "ForwardX11 needs a value"),
    # A keyword's old name is checked as its new one is.
    ("Host other\n    ChallengeResponseAuthentication perhaps\n", 'unsupported option "perhaps"',
     "KbdInteractiveAuthentication: expected yes or no"),
])
def test_values_are_checked_in_every_block_as_ssh_checks_them(passwd_home, tmp_path, lines,
                                                             ssh_says, we_say):
    # Also in a block that does not apply, and after the value that is used, and in a
    # file included where nothing applies: ssh parses every line it reads.
    included = write(tmp_path / "included", "Host *\n    ServerAliveCountMax many\n")
    config = write(tmp_path / "config", "# comment\n" + lines.replace("@INC@", str(included)))
    bad = included if "@INC@" in lines else config
    number = 2 if "@INC@" in lines else len(lines.splitlines()) + 1
    done = _ssh(["-G", "-F", str(config), "this"])
    assert done.returncode == 255 and ssh_says in done.stderr, done.stderr

    with pytest.raises(ConfigError, match=re.escape(we_say)) as raised:
        resolve("this", config_file=config)
    assert str(raised.value).startswith(f"{bad}:{number}: ")


MATCH_LINES = [
    # (Match line, what ssh -G says of it: None when it accepts the file)
    ("all host x", "'all' cannot be combined"),
    ("all all", "'all' cannot be combined"),
    ("canonical final all", "'all' cannot be combined"),
    ("localuser root originalhost this all", "'all' cannot be combined"),
    ("host this all", None),             # one criterion before "all" passes, as ssh counts
    ("final all", None),
    ("all # a comment", None),
    ("!all", None),
    ("host", "Bad Match condition"),
    ("host this user", "Bad Match condition"),
    ("exec", "Bad Match condition"),
    ("tagged x", "Bad Match condition"),  # OpenSSH 9.4 criteria, unknown to 9.2 and to us
    ("host x,this !user nobody", None),
]


@pytest.mark.parametrize(("criteria", "ssh_says"), MATCH_LINES)
def test_match_lines_are_refused_where_ssh_refuses_them(passwd_home, tmp_path, criteria,
                                                        ssh_says):
    config = write(tmp_path / "config", f"# comment\nMatch {criteria}\n    Port 2201\n")
    done = _ssh(["-G", "-F", str(config), "this"])
    if ssh_says is None:
        assert done.returncode == 0, done.stderr
        port = int(re.search(r"^port (\d+)$", done.stdout, re.MULTILINE).group(1))
        assert resolve("this", config_file=config).port == port
        return
    assert done.returncode == 255 and ssh_says in done.stderr, done.stderr
    with pytest.raises(ConfigError) as raised:
        resolve("this", config_file=config)
    assert str(raised.value).startswith(f"{config}:2: Match ")


def test_match_exec_is_not_run_once_the_line_has_failed(home, tmp_path):
    ran = tmp_path / "ran"
    write(home / ".ssh" / "config",
          f'Match originalhost other exec "touch {ran}"\n    Port 2201\n'
          f'Match originalhost this exec "touch {ran}"\n    Port 2202\n')
    assert resolve("other").port == 2201 and ran.exists()
    ran.unlink()
    assert resolve("this").port == 2202 and ran.exists()
    ran.unlink()
    assert resolve("third").port == 22 and not ran.exists()


def test_a_bad_token_in_a_skipped_match_exec_is_refused_with_file_and_line(passwd_home,
                                                                           tmp_path):
    config = write(tmp_path / "config", 'Host *\n    Port 2022\nMatch host x exec "test %z"\n')
    done = _ssh(["-G", "-F", str(config), "this"])
    assert done.returncode == 255 and "%z" in done.stderr, done.stderr
    with pytest.raises(ConfigError, match=re.escape(
            f"{config}:3: Match exec: unknown token %z in 'test %z'")):
        resolve("this", config_file=config)


def test_an_include_loop_is_refused_even_under_a_block_that_does_not_apply(passwd_home,
                                                                          tmp_path):
    config = write(tmp_path / "config", "Host other\n    Include %s\nHost *\n    Port 2022\n")
    config.write_text(config.read_text() % config)
    done = _ssh(["-G", "-F", str(config), "this"])
    assert done.returncode == 255 and "Too many recursive" in done.stderr, done.stderr
    with pytest.raises(ConfigError, match="Include nested more than 16 deep") as raised:
        resolve("this", config_file=config)
    assert f"included from {config}:2" in str(raised.value)


def test_a_keyword_fleche_ssh_does_not_know_is_not_checked(home):
    # ssh refuses a keyword it does not know; fleche-ssh reads files shared with other
    # programs (Apple's UseKeychain), so it only logs one that applies.
    write(home / ".ssh" / "config", "Host other\n    UseKeychain\nHost *\n    Frobnicate x\n")
    assert resolve("this").port == 22


def logged(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "fleche_ssh.options"]


def test_ignored_keywords_are_logged_once_each_with_file_and_line(home, caplog):
    config = write(home / ".ssh" / "config",
                   "Host other\n"
                   "    BindAddress 192.0.2.99\n"
                   "Host box\n"
                   "    HostName box.example.org\n"
                   "    ForwardAgent yes\n"
                   "    VerifyHostKeyDNS yes\n"
                   "    GSSAPIAuthentication yes\n"
                   "    PKCS11Provider none\n"
                   "    UseKeychain yes\n"
                   "Host *\n"
                   "    ForwardAgent no\n"
                   "    VerifyHostKeyDNS ask\n"
                   "    Port 2022\n")
    dns = UNHONOURED_BY_KEYWORD["verifyhostkeydns"].effect
    kerberos = UNHONOURED_BY_KEYWORD["gssapiauthentication"].effect
    unsupported = "is not supported by fleche-ssh, ignored"

    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.options"):
        found = resolve("box")

    assert (found.hostname, found.port) == ("box.example.org", 2022)
    where = f"ssh config for box: {config}"
    assert logged(caplog) == [
        (logging.DEBUG, f"{where}:5: ForwardAgent is not needed by fleche-ssh, ignored"),
        (logging.WARNING, f"{where}:6: VerifyHostKeyDNS yes {unsupported}; {dns}"),
        (logging.INFO, f"{where}:7: GSSAPIAuthentication yes {unsupported}; {kerberos}"),
        # "none" is what fleche-ssh does anyway.
        (logging.DEBUG, f"{where}:8: PKCS11Provider {unsupported}"),
        (logging.DEBUG, f"{where}:9: UseKeychain {unsupported}"),
    ]


def test_each_resolution_and_each_jump_host_logs_its_own_lines(home, caplog):
    config = write(home / ".ssh" / "config",
                   "Host inner\n    ProxyJump gw\nHost *\n    VerifyHostKeyDNS yes\n")
    with caplog.at_level(logging.INFO, logger="fleche_ssh.options"):
        resolve("inner")
        resolve("inner")
    assert [message.split(":")[0] for _, message in logged(caplog)] == [
        "ssh config for inner", "ssh config for gw"] * 2
    assert all(f"{config}:4: VerifyHostKeyDNS yes" in message for _, message in logged(caplog))


@pytest.mark.parametrize("row", UNHONOURED, ids=lambda row: row.keyword)
def test_keywords_that_change_the_connection_are_logged_at_their_level(home, caplog, row):
    same = sorted(row.same)[:1]
    write(home / ".ssh" / "config",
          f"Host h\n    {row.keyword} something-else\nHost h2\n"
          + "".join(f"    {row.keyword} {value}\n" for value in same))
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.options"):
        resolve("h")
        resolve("h2")
    lines = logged(caplog)
    assert row.level >= logging.INFO
    assert lines[0] == (row.level, f"ssh config for h: {home}/.ssh/config:2: {row.keyword} "
                                   f"something-else is not supported by fleche-ssh, ignored; "
                                   f"{row.effect}")
    # A value asking for what fleche-ssh does anyway is only a debug line.
    assert [level for level, _ in lines[1:]] == [logging.DEBUG] * len(same)


@pytest.mark.parametrize("keyword", sorted(NOT_NEEDED))
def test_keywords_fleche_ssh_does_not_need_are_logged_as_such(home, caplog, keyword):
    write(home / ".ssh" / "config", f"Host *\n    {keyword} whatever\n    User known\n")
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.options"):
        assert resolve("anything").user == "known"
    assert logged(caplog) == [
        (logging.DEBUG, f"ssh config for anything: {home}/.ssh/config:2: {keyword} is not "
                        "needed by fleche-ssh, ignored")]


def test_honoured_keywords_and_inactive_blocks_log_nothing(home, caplog):
    write(home / ".ssh" / "config",
          "Host other\n    ProxyJumpish x\n    HostKeyAlias elsewhere\n"
          "Host *\n    User known\n    Port 2022\n    Compression yes\n")
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.options"):
        assert resolve("anything").user == "known"
    assert logged(caplog) == []


def test_tokens_and_tilde(home):
    write(home / ".ssh" / "config",
          "Host tok\n"
          "    HostName %h.example.com\n"
          "    User remote\n"
          "    Port 2200\n"
          "    IdentityFile ~/.ssh/%r@%h:%p\n"
          "    IdentityFile /keys/%u/%n/%d/100%%\n"
          "    UserKnownHostsFile ~/kh/%h %d/kh/%n_%p\n")

    found = resolve("tok")

    assert found.hostname == "tok.example.com"
    assert found.identity_files == (
        f"{home}/.ssh/remote@tok.example.com:2200",
        f"/keys/{LOCAL_USER}/tok/{home}/100%",
    )
    assert found.known_hosts_files == (f"{home}/kh/tok.example.com", f"{home}/kh/tok_2200")


def test_windows_paths_keep_their_backslashes(home):
    write(home / ".ssh" / "config",
          "Host win\n"
          "    IdentityFile C:\\Users\\Ada Lovelace\\.ssh\\id_ed25519\n"
          '    UserKnownHostsFile "C:\\Users\\Ada Lovelace\\.ssh\\known_hosts" D:\\kh\n')
    # The unquoted path with a blank is two words: ssh refuses it, and so do we.
    with pytest.raises(ConfigError, match="IdentityFile: expected one value"):
        resolve("win")

    write(home / ".ssh" / "config",
          "Host win\n"
          '    IdentityFile "C:\\Users\\Ada Lovelace\\.ssh\\id_ed25519"\n'
          '    UserKnownHostsFile "C:\\Users\\Ada Lovelace\\.ssh\\known_hosts" D:\\kh\n')
    found = resolve("win")
    assert found.identity_files == ("C:\\Users\\Ada Lovelace\\.ssh\\id_ed25519",)
    assert found.known_hosts_files == ("C:\\Users\\Ada Lovelace\\.ssh\\known_hosts", "D:\\kh")


@pytest.mark.parametrize("text", [
    "plain", "two words", 'quote"inside', "back\\slash", "trailing\\", "", "#hash", "tab\there",
    "C:\\Users\\me",
])
def test_join_words_round_trips(text):
    words = [text, "second"]
    assert sshconfig.split_words(sshconfig.join_words(words)) == words


def test_oversized_file_is_refused(home):
    config = write(home / ".ssh" / "config", "#" * (sshconfig.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="more than fleche-ssh reads") as raised:
        resolve("anything")
    assert str(config) in str(raised.value)
