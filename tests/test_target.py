"""Resolving a host into a Target: aliases, defaults, precedence, ``ssh_options``.

Every test runs with a throwaway ``$HOME`` (``~/.ssh/config`` is the file
under test) and the system-wide file pointed at a path inside it, so
neither the developer's nor the machine's ssh configuration takes part.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import re
from pathlib import Path

import pytest

from fleche_ssh.config import target
from fleche_ssh.config.target import Target, resolve
from fleche_ssh.errors import ConfigError

#: The local user as ssh takes it, from the password database.
LOCAL_USER = pwd.getpwuid(os.getuid()).pw_name
#: What the ``home`` fixture puts in ``$LOGNAME`` and ``$USER``: another name, which
#: ssh does not take for the local user, and neither may fleche-ssh.
ENVIRONMENT_USER = "ada" if LOCAL_USER != "ada" else "grace"

ALIASES = """\
Host work
    HostName workstation.lab.example.org
    User alice
    Port 2202
    IdentityFile ~/.ssh/id_work
    IdentityFile ~/.ssh/id_backup
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_hosts.work
    StrictHostKeyChecking yes
    ConnectTimeout 15

Host gitlab
    HostName gitlab.example.com
    User git
    Port 2222
    User ignored-second-value

Host *
    User everyone
    Port 2999
    IdentityFile ~/.ssh/id_everywhere
    StrictHostKeyChecking accept-new
"""


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LOGNAME", ENVIRONMENT_USER)
    monkeypatch.setenv("USER", ENVIRONMENT_USER)
    monkeypatch.setattr(target, "SYSTEM_CONFIG", tmp_path / "etc" / "ssh_config")
    return home


@pytest.fixture
def aliases(home) -> Path:
    config = home / ".ssh" / "config"
    config.write_text(ALIASES)
    return config


def test_alias_gives_every_keyword(home, aliases):
    found = resolve("work")

    assert found.alias == "work"
    assert found.hostname == "workstation.lab.example.org"
    assert found.user == "alice"
    assert found.port == 2202
    # Block values first, then Host * adds its identity: IdentityFile accumulates.
    assert found.identity_files == (
        f"{home}/.ssh/id_work", f"{home}/.ssh/id_backup", f"{home}/.ssh/id_everywhere")
    assert found.identities_only is True
    assert found.known_hosts_files == (f"{home}/.ssh/known_hosts.work",)
    assert found.strict_host_key_checking == "yes"
    assert found.connect_timeout == 15.0
    assert found.label == "alice@workstation.lab.example.org:2202"
    assert found.known_hosts_name == "[workstation.lab.example.org]:2202"


def test_user_at_alias_beats_the_file(aliases):
    found = resolve("bob@work")
    assert (found.alias, found.user, found.hostname) == (
        "work", "bob", "workstation.lab.example.org")
    assert dict(found.origins)["user"] == "host 'bob@work'"


def test_first_value_wins_and_host_star_fills_the_rest(aliases):
    found = resolve("gitlab")
    assert (found.user, found.port, found.strict_host_key_checking) == ("git", 2222, "accept-new")

    other = resolve("elsewhere.example.net")
    assert (other.hostname, other.user, other.port) == ("elsewhere.example.net", "everyone", 2999)


def test_defaults_without_any_config(home):
    found = resolve("plain.example.org")

    assert found == Target(
        alias="plain.example.org",
        hostname="plain.example.org",
        port=22,
        user=LOCAL_USER,
        identity_files=tuple(f"{home}/.ssh/{name}" for name in ("id_rsa", "id_ecdsa",
                                                                 "id_ed25519")),
        identities_only=False,
        identity_agent=None,
        known_hosts_files=(f"{home}/.ssh/known_hosts", f"{home}/.ssh/known_hosts2"),
        global_known_hosts_files=("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"),
        strict_host_key_checking="ask",
        hash_known_hosts=False,
        connect_timeout=None,
        batch_mode=False,
        origins=(),
    )
    assert found.known_hosts_name == "plain.example.org"  # port 22: no brackets


def test_config_file_replaces_the_user_file(home, aliases, tmp_path):
    other = tmp_path / "other_config"
    other.write_text("Host work\n    Port 4000\n")

    found = resolve("work", config_file=other)

    assert (found.hostname, found.port, found.user) == ("work", 4000, LOCAL_USER)


def test_missing_config_file_is_an_error_naming_it(home, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nope"))):
        resolve("work", config_file=tmp_path / "nope")


@pytest.mark.parametrize("config_file", ["/dev/null", "none"])
def test_no_config_as_ssh_spells_it(home, aliases, config_file):
    assert resolve("work", config_file=config_file).port == 22
    assert resolve("work", ssh_options=["-F", config_file]).port == 22


# --- precedence: explicit keys > ssh_options > files ----------------------------------


def test_explicit_keys_beat_ssh_options_which_beat_the_file(home, aliases):
    options = ["-p", "3000", "-l", "from-options", "-o", "StrictHostKeyChecking=no"]

    from_options = resolve("work", ssh_options=options)
    assert (from_options.port, from_options.user, from_options.strict_host_key_checking) == (
        3000, "from-options", "no")
    assert from_options.hostname == "workstation.lab.example.org"  # the file still counts

    explicit = resolve("work", ssh_options=options,
                       explicit={"port": 4000, "user": None, "strict_host_key_checking": "ask"})
    assert (explicit.port, explicit.user, explicit.strict_host_key_checking) == (
        4000, "from-options", "ask")
    assert dict(explicit.origins)["port"] == "key port"
    assert dict(explicit.origins)["user"] == "ssh_options"
    assert dict(explicit.origins)["hostname"] == f"{aliases}:2"


def test_identity_files_accumulate_across_sources_in_order(home, aliases):
    found = resolve("work", ssh_options=["-i", "/opt/from-options"],
                    explicit={"identity_file": ("/opt/explicit-a", "/opt/explicit-b")})
    assert found.identity_files == (
        "/opt/explicit-a", "/opt/explicit-b", "/opt/from-options",
        f"{home}/.ssh/id_work", f"{home}/.ssh/id_backup", f"{home}/.ssh/id_everywhere")


def test_explicit_known_hosts_files_keep_every_path(home):
    found = resolve("h", explicit={"known_hosts_file": ("/a/known_hosts", "/b c/known hosts"),
                                   "global_known_hosts_file": (Path("/etc/kh"),)})
    assert found.known_hosts_files == ("/a/known_hosts", "/b c/known hosts")
    assert found.global_known_hosts_files == ("/etc/kh",)


@pytest.mark.parametrize(("key", "value", "field", "expected"), [
    ("identities_only", True, "identities_only", True),
    ("hash_known_hosts", True, "hash_known_hosts", True),
    ("batch_mode", False, "batch_mode", False),
    ("connect_timeout", 2.5, "connect_timeout", 2.5),
    ("port", "2022", "port", 2022),
    ("hostname", "10.1.2.3", "hostname", "10.1.2.3"),
    ("identity_agent", "~/agent.sock", "identity_agent", "{home}/agent.sock"),
    ("identity_file", "~/.ssh/only", "identity_files", ("{home}/.ssh/only",)),
])
def test_explicit_keys_take_python_values(home, key, value, field, expected):
    found = resolve("h", explicit={key: value})
    if isinstance(expected, str):
        expected = expected.format(home=home)
    elif isinstance(expected, tuple):
        expected = tuple(e.format(home=home) for e in expected)
    assert getattr(found, field) == expected


def test_invalid_explicit_value_names_the_key(home):
    with pytest.raises(ConfigError, match=r"key port: Port: expected a port"):
        resolve("h", explicit={"port": 0})


# --- ssh_options -------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "expected"), [
    (["-p", "2222"], {"port": 2222}),
    (["-p2222"], {"port": 2222}),
    (["-l", "carol"], {"user": "carol"}),
    (["-lcarol"], {"user": "carol"}),
    (["-i", "/k/one", "-i", "/k/two words"], {"identity_files": ("/k/one", "/k/two words")}),
    (["-i/k/glued"], {"identity_files": ("/k/glued",)}),
    (["-o", "Port=2201"], {"port": 2201}),
    (["-oPort=2201"], {"port": 2201}),
    (["-o", "Port 2201"], {"port": 2201}),
    (["-o", "port = 2201"], {"port": 2201}),
    (["-o", "User=first", "-o", "User=second"], {"user": "first"}),
    (["-o", "Port=1111", "-p", "2222"], {"port": 1111}),
    (["-o", "HostName=10.0.0.7"], {"hostname": "10.0.0.7"}),
    (["-o", "IdentitiesOnly=yes"], {"identities_only": True}),
    (["-o", "StrictHostKeyChecking=accept-new"], {"strict_host_key_checking": "accept-new"}),
    (["-o", "StrictHostKeyChecking=off"], {"strict_host_key_checking": "no"}),
    (["-o", "ConnectTimeout=1m30s"], {"connect_timeout": 90.0}),
    (["-o", "ConnectTimeout=none"], {"connect_timeout": None}),
    (["-o", "HashKnownHosts=yes"], {"hash_known_hosts": True}),
    (["-o", "BatchMode=yes"], {"batch_mode": True}),
    (["-o", "IdentityAgent=none"], {"identity_agent": "none"}),
    (["-o", 'UserKnownHostsFile="/kh one" /kh2'], {"known_hosts_files": ("/kh one", "/kh2")}),
    (["-o", "GlobalKnownHostsFile=/g1 /g2"], {"global_known_hosts_files": ("/g1", "/g2")}),
])
def test_ssh_options_translate(home, options, expected):
    found = resolve("h", ssh_options=options, config_file="none")
    assert {name: getattr(found, name) for name in expected} == expected


def test_ssh_options_F_reads_that_file(home, tmp_path):
    config = tmp_path / "cfg"
    config.write_text("Host h\n    User from-F\n")
    assert resolve("h", ssh_options=["-F", str(config)]).user == "from-F"
    # config_file (the key) wins over -F in ssh_options.
    assert resolve("h", ssh_options=["-F", str(config)], config_file="none").user == LOCAL_USER


def test_noop_flags_change_nothing(home, aliases):
    assert resolve("work", ssh_options=["-T", "-x", "-a", "-q", "-n"]) == resolve("work")


def test_4_and_6_choose_the_address_family_as_for_ssh(home, aliases):
    assert resolve("work", ssh_options=["-4"]).address_family == "inet"
    # As ssh -G shows: the last flag wins, and beats -o.
    assert resolve("work", ssh_options=["-6", "-4"]).address_family == "inet"
    assert resolve("work", ssh_options=["-o", "AddressFamily=inet6", "-4"]).address_family == (
        "inet")
    assert resolve("work").address_family == "any"


def test_connection_sharing_options_are_accepted_and_logged(home, aliases, caplog):
    """ControlPath says where a live OpenSSH master may listen, ControlMaster whether this
    process shares its login, ControlPersist how long a background process keeps it."""
    options = ["-o", "ControlMaster=auto", "-o", "ControlPath=~/.ssh/cm-%r@%h:%p",
               "-oControlPersist=10m"]
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.options"):
        found = resolve("work", ssh_options=options)

    plain = resolve("work")
    assert found.control_paths == (
        str(home / ".ssh" / f"cm-{plain.user}@{plain.hostname}:{plain.port}"),)
    assert found.control_master == "auto"
    assert found.control_persist == 600.0
    assert dataclasses.replace(found, control_paths=(), control_persist=None) == plain
    logged = [r.getMessage() for r in caplog.records if r.name == "fleche_ssh.options"]
    assert not any("not needed" in message for message in logged), logged


@pytest.mark.parametrize(("written", "kept"), [
    ("no", None), ("yes", float("inf")), ("0", float("inf")), ("10m", 600.0), ("2s", 2.0)])
def test_control_persist_reads_what_openssh_writes(home, aliases, written, kept):
    assert resolve("work", ssh_options=["-o", f"ControlPersist={written}"]).control_persist == kept


@pytest.mark.parametrize(("written", "read"), [
    ("auto", "auto"), ("no", "no"), ("yes", "auto"), ("ask", "auto"), ("autoask", "auto")])
def test_control_master_reads_what_openssh_writes(home, aliases, caplog, written, read):
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.options"):
        found = resolve("work", ssh_options=["-o", f"ControlMaster={written}"])
    assert found.control_master == read
    logged = [r.getMessage() for r in caplog.records if r.name == "fleche_ssh.options"]
    assert any("read as auto" in m for m in logged) == (written in ("yes", "ask", "autoask"))


def test_control_master_refuses_what_it_cannot_mean(home, aliases):
    with pytest.raises(ConfigError, match="expected auto or no"):
        resolve("work", ssh_options=["-o", "ControlMaster=sometimes"])


def test_control_path_from_a_flag_and_none(home, aliases):
    assert resolve("work", ssh_options=["-S", "/tmp/m.sock"]).control_paths == ("/tmp/m.sock",)
    assert resolve("work", ssh_options=["-o", "ControlPath=none"]).control_paths == ()
    assert resolve("work").control_paths == ()


@pytest.mark.parametrize(("options", "named"), [
    (["-L", "8080:x:80"], "'-L'"),
    (["-L8080:x:80"], "'-L8080:x:80'"),
    (["-o", "Tunnel=yes"], "-o Tunnel"),
    (["-oRemoteForward=8080 localhost:80"], "-o RemoteForward"),
    (["-v"], "'-v'"),
    (["-D", "1080"], "'-D'"),
    (["bastion"], "'bastion'"),
])
def test_unsupported_ssh_options_are_refused_by_name(home, options, named):
    with pytest.raises(ConfigError, match=re.escape(named)) as raised:
        resolve("h", ssh_options=options)
    assert "not supported by fleche-ssh" in str(raised.value)


@pytest.mark.parametrize(("options", "expected"), [
    (["-o", "Port=abc"], "ssh_options: Port: "),
    (["-p", "0"], "ssh_options: Port: expected a port between 1 and 65535"),
    (["-o", "StrictHostKeyChecking=maybe"], "ssh_options: StrictHostKeyChecking: expected one of"),
    (["-o", "ConnectTimeout=-3"], "ssh_options: ConnectTimeout: expected seconds"),
    (["-o", "IdentitiesOnly=sometimes"], "ssh_options: IdentitiesOnly: expected yes or no"),
    (["-o", "Port"], "ssh_options -o: expected Keyword=value, got 'Port'"),
    (["-o", 'User="unclosed'], "ssh_options: -o User: unterminated"),
    (["-p"], "ssh_options: -p needs a value"),
])
def test_invalid_ssh_option_values_name_keyword_and_source(home, options, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        resolve("h", ssh_options=options)


def test_invalid_file_value_names_keyword_file_and_line(home):
    config = home / ".ssh" / "config"
    config.write_text("Host h\n    StrictHostKeyChecking maybe\n")
    with pytest.raises(ConfigError) as raised:
        resolve("h")
    assert str(raised.value).startswith(f"{config}:2: StrictHostKeyChecking: expected one of")


@pytest.mark.parametrize("host", ["", "two words", "-oProxyCommand=x", "user@", "tab\there"])
def test_invalid_destinations_are_refused(home, host):
    with pytest.raises(ConfigError, match="host"):
        resolve(host)


# --- the Target itself --------------------------------------------------------------------


def test_targets_compare_and_hash_by_value(home, aliases):
    first, second = resolve("work"), resolve("work")
    assert first == second and hash(first) == hash(second)
    assert len({first, second, resolve("bob@work")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.port = 1  # type: ignore[misc]


def test_describe_rows(home, aliases):
    rows = resolve("work").describe()
    assert rows == [
        ("host", "work"),
        ("hostname", "workstation.lab.example.org"),
        ("user", "alice"),
        ("port", "2202"),
        ("identityfile",
         f"{home}/.ssh/id_work {home}/.ssh/id_backup {home}/.ssh/id_everywhere"),
        ("identitiesonly", "yes"),
        ("userknownhostsfile", f"{home}/.ssh/known_hosts.work"),
        ("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"),
        ("stricthostkeychecking", "yes"),
        ("hashknownhosts", "no"),
        ("connecttimeout", "15"),
        ("batchmode", "no"),
        ("serveraliveinterval", "15"),
        ("serveralivecountmax", "3"),
        ("compression", "no"),
        ("checkhostip", "no"),
        ("canonicalizehostname", "no"),
        ("canonicalizefallbacklocal", "yes"),
        ("canonicalizemaxdots", "1"),
        ("pubkeyauthentication", "yes"),
        ("kbdinteractiveauthentication", "yes"),
        ("passwordauthentication", "yes"),
        ("connectionattempts", "1"),
        ("addressfamily", "any"),
        ("proxyusefdpass", "no"),
        ("tcpkeepalive", "yes"),
        ("controlmaster", "auto"),
    ]


def test_describe_shows_identity_agent_and_omits_unset_timeout(home):
    rows = dict(resolve("h", explicit={"identity_agent": "none"}).describe())
    assert rows["identityagent"] == "none"
    assert "connecttimeout" not in rows
    assert dict(resolve("h", explicit={"connect_timeout": 2.5}).describe())[
        "connecttimeout"] == "2.5"


def test_the_proxy_command_key_is_the_command_as_written(home):
    for command in ("nc %h %p", "echo 'a b' 1>&2; exit 4", '/opt/my proxy/run "%h"'):
        found = resolve("h", explicit={"proxy_command": command}).proxy_command
        assert found == command.replace("%h", "h").replace("%p", "22")


def test_proxy_jump_and_proxy_command_keys_together_are_refused():
    from fleche_ssh import ParamikoCache

    with pytest.raises(ConfigError, match="proxy_jump and proxy_command"):
        ParamikoCache(host="h", proxy_jump="bastion", proxy_command="nc %h %p")
    assert ParamikoCache(host="h", proxy_jump="none", proxy_command="nc %h %p").proxy_command
