"""Target resolution rules a user relies on: the ``%`` tokens of ControlPath, ``%h`` in
HostName, the last hop's host as ``%j``, the errors naming where a value came from, the
characters refused in a destination.

Pure logic, run with a throwaway ``$HOME`` and no system-wide file, as in test_target.py.
The local host name, uid and user name (the password database's entry for the uid), which
a test cannot choose, are set on ``socket``, ``os`` and the resolver's lookup.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from test_canonical import resolver

from fleche_ssh.config import target
from fleche_ssh.config.target import resolve
from fleche_ssh.errors import ConfigError


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LOGNAME", "not-the-local-user")
    monkeypatch.setattr(target, "password_user", lambda: "ada")
    monkeypatch.setattr(target, "SYSTEM_CONFIG", tmp_path / "etc" / "ssh_config")
    monkeypatch.setattr(target.socket, "gethostname", lambda: "node7.cluster.example")
    monkeypatch.setattr(target.os, "getuid", lambda: 1234)
    return home


def _config(home: Path, text: str) -> Path:
    path = home / ".ssh" / "config"
    path.write_text(text)
    return path


def _control_path(home: Path, host: str, text: str) -> str:
    _config(home, f"Host *\n    ControlPath {text}\n")
    (path,) = resolve(host).control_paths
    return path


@pytest.mark.parametrize(("tokens", "expected"), [
    ("%%", "%"),
    ("%d", "{home}"),
    ("%l", "node7.cluster.example"),
    ("%L", "node7"),
    ("%i", "1234"),
    ("%p", "22"),  # no Port anywhere: ssh's default
    ("%j", ""),  # no ProxyJump
], ids=["percent", "home", "local-host", "short-local-host", "uid", "port", "no-jump"])
def test_control_path_tokens(home, tokens, expected):
    assert _control_path(home, "db", f"/tmp/cm-{tokens}-x") == f"/tmp/cm-{expected}-x".format(
        home=home)


def test_percent_k_is_the_host_key_alias_lowercased_else_the_name_given(home):
    _config(home, "Host aliased\n    HostKeyAlias Shared.Key\nHost *\n"
                  "    ControlPath /tmp/cm-%k\n")
    assert resolve("aliased").control_paths == ("/tmp/cm-shared.key",)
    assert resolve("plain").control_paths == ("/tmp/cm-plain",)


@pytest.mark.parametrize(("jump", "expected"), [
    ("carol@b1.example:2201,dave@Last.Hop:2222", "Last.Hop"),
    ("b0.example,carol@b1.example,dave@b2.example", "b2.example"),
    ("ssh://erin@[2001:db8::7]:2200", "2001:db8::7"),
    ("none", ""),
    ("NONE", ""),
], ids=["user-and-port", "three-hops", "ipv6-url", "none", "none-upper"])
def test_percent_j_is_the_host_of_the_last_jump(home, jump, expected):
    _config(home, f"Host db\n    ProxyJump {jump}\n    ControlPath /tmp/cm-%j-x\n")
    assert resolve("db").control_paths == (f"/tmp/cm-{expected}-x",)


def test_describe_lists_the_jump_chain_first_hop_first(home):
    _config(home, "Host db\n    ProxyJump carol@b1.example:2201,dave@b2.example\n")
    rows = dict(resolve("db").describe())
    assert rows["proxyjump"] == "carol@b1.example:2201,dave@b2.example:22"


def test_hostname_expands_percent_h_to_the_name_given(home):
    _config(home, "Host work\n    HostName %h.lab.example.org\n")
    assert resolve("work").hostname == "work.lab.example.org"


def test_a_missing_config_file_names_the_key_or_the_option_that_gave_it(home, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as by_key:
        resolve("db", config_file=missing)
    assert str(by_key.value).startswith(f"config_file: ssh config file {str(missing)!r}")
    with pytest.raises(ConfigError) as by_option:
        resolve("db", ssh_options=["-F", str(missing)])
    assert str(by_option.value).startswith(f"ssh_options -F: ssh config file {str(missing)!r}")


class _PathLike:
    """A path object that is not a pathlib.Path: only its __fspath__ is the path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return "<a path object>"


def test_an_explicit_key_takes_any_path_like(home):
    found = resolve("db", explicit={"identity_file": [_PathLike("/keys/id_db")]})
    assert found.identity_files == ("/keys/id_db",)
    assert os.fspath(_PathLike("/x")) == "/x"


@pytest.mark.parametrize("host", ["db\x01x", "db\x1fx", "db\x7fx"],
                         ids=["ctrl-a", "unit-separator", "delete"])
def test_control_characters_in_a_destination_are_refused(home, host):
    with pytest.raises(ConfigError, match="not a valid SSH destination"):
        resolve(host)


def test_characters_just_outside_the_control_range_are_taken(home):
    assert resolve("db!x").hostname == "db!x"  # 33, after space
    assert resolve("db\x80x").hostname == "db\x80x"  # 128, after delete


def test_jump_hosts_resolve_hop_by_hop_each_with_its_own_settings(home):
    _config(home, "Host db\n    HostName db.internal\n    ProxyJump carol@b1:2201,b2\n"
                  "Host b2\n    HostName bastion2.example.org\n    User dave\n    Port 2222\n"
                  "Host b1\n    HostName bastion1.example.org\n")
    found = resolve("db")
    assert found.hostname == "db.internal" and found.jump is not None
    assert [hop.label for hop in found.chain()] == [
        "carol@bastion1.example.org:2201", "dave@bastion2.example.org:2222"]
    assert found.jump.jump is not None and found.jump.jump.jump is None


def test_proxy_jump_expands_the_destination_tokens(home):
    _config(home, "Host db\n    User alice\n    Port 2200\n    ProxyJump %r@gw-%h\n"
                  "Host gw-*\n    Port 2999\n")
    (hop,) = resolve("db").chain()
    assert hop.label == "alice@gw-db:2999"


def test_proxy_jump_percent_r_without_a_user_is_the_local_user(home):
    # ssh fills in the remote user from the password database before it expands
    # ProxyJump, so %r is never empty; the hop's own login defaults the same way.
    _config(home, "Host db\n    ProxyJump jump-for-%r\n")
    (hop,) = resolve("db").chain()
    assert hop.label == "ada@jump-for-ada:22"


def test_a_jump_host_is_canonicalized_with_the_lookup_given(home):
    """The hops use the caller's getaddrinfo too, so every name is looked up the same way."""
    _config(home, "Host db\n    ProxyJump gw\n"
                  "Host gw\n    CanonicalizeHostname yes\n    CanonicalDomains lab.example\n")
    lookup = resolver({"gw.lab.example": "gw.lab.example"})
    (hop,) = resolve("db", getaddrinfo=lookup).chain()
    assert hop.hostname == "gw.lab.example"
    assert lookup.asked == ["gw.lab.example."]


@pytest.mark.parametrize(("text", "host", "line", "words"), [
    ("Host work\n    User alice\n    HostName %p.lab.example.org\n", "work", 3, ["%p"]),
    ("Host *\n    ControlPath /tmp/cm-%x\n", "db", 2, ["ControlPath", "%x"]),
    ("Host *\n    IdentityFile ~/.ssh/id_%x\n", "db", 2, ["IdentityFile"]),
    ("Host db\n    ProxyJump gw-%d\n", "db", 2, ["ProxyJump"]),
    ("Host *\n    Port 2200\nMatch exec \"test -n %x\"\n    User bob\n", "db", 3,
     ["Match exec", "%x"]),
], ids=["hostname", "control-path", "identity-file", "proxy-jump", "match-exec"])
def test_an_unknown_token_names_the_file_and_line(home, text, host, line, words):
    path = _config(home, text)
    with pytest.raises(ConfigError) as refused:
        resolve(host)
    message = str(refused.value)
    assert f"{path}:{line}" in message
    for word in words:
        assert word in message


def test_a_proxy_command_wins_over_proxy_jump_and_none_stops_it(home):
    _config(home, "Host piped\n    ProxyCommand nc %h %p\n    ProxyJump gw\n"
                  "Host direct\n    ProxyJump none\nHost *\n    ProxyJump gw\n")
    piped = resolve("piped")
    assert piped.jump is None and piped.proxy_command == "nc piped 22"
    assert resolve("direct").jump is None


def test_a_jump_loop_is_refused_naming_the_chain_and_the_line(home):
    path = _config(home, "Host a\n    ProxyJump b\nHost b\n    ProxyJump a\n")
    with pytest.raises(ConfigError) as refused:
        resolve("a")
    message = str(refused.value)
    assert "ProxyJump loop: a -> b -> a" in message and f"{path}:" in message


def test_a_bad_jump_port_names_the_line_that_set_it(home):
    path = _config(home, "Host db\n    ProxyJump gw:http\n")
    with pytest.raises(ConfigError) as refused:
        resolve("db")
    assert str(refused.value).startswith(f"{path}:2: ProxyJump: 'gw:http' has an invalid port")


def test_a_user_at_the_destination_reaches_match_user_and_the_tokens(home):
    _config(home, "Match user root\n    Port 2022\nHost *\n    ControlPath /tmp/cm-%r-%u\n")
    found = resolve("root@db")
    assert (found.user, found.port) == ("root", 2022)
    assert found.control_paths == ("/tmp/cm-root-ada",)


def test_match_exec_runs_with_the_tokens_expanded(home, tmp_path):
    seen = tmp_path / "seen"
    _config(home, "Host db\n    HostName db.internal\n    User alice\n"
                  f"Match exec \"echo %h %n %r %p > {seen}\"\n    Port 2022\n")
    assert resolve("db").port == 2022
    assert seen.read_text() == "db.internal db alice 22\n"


def test_an_unknown_token_in_match_exec_names_match_exec(home):
    _config(home, "Match exec \"test %j\"\n    Port 2022\n")
    with pytest.raises(ConfigError, match=r"Match exec: unknown token %j"):
        resolve("db")


def test_three_hops_url_forms_and_ipv6_ports_resolve_in_order(home):
    _config(home, "Host db\n    ProxyJump ssh://carol@b1:2201,[2001:db8::7]:2200,me@corp@b3\n")
    assert [hop.label for hop in resolve("db").chain()] == [
        "carol@b1:2201", "ada@2001:db8::7:2200", "me@corp@b3:22"]


def test_percent_j_takes_the_host_after_the_last_at(home):
    _config(home, "Host db\n    ProxyJump me@corp@b3\n    ControlPath /tmp/cm-%j\n")
    assert resolve("db").control_paths == ("/tmp/cm-b3",)


def test_jump_hosts_are_read_from_the_config_file_given(home, tmp_path):
    given = tmp_path / "given_config"
    given.write_text("Host db\n    ProxyJump gw\nHost gw\n    HostName gw.example.org\n"
                     "    Port 2022\n")
    (hop,) = resolve("db", config_file=given).chain()
    assert hop.label == "ada@gw.example.org:2022"


@pytest.mark.parametrize(("jump", "expected"), [
    ("gw,", "ProxyJump 'gw,': empty jump host"),
    ("[::1]]:22", "ProxyJump: '[::1]]:22' is not [user@]host[:port]"),
    ("[::1", "ProxyJump: '[::1' is not [user@]host[:port]"),
], ids=["empty-hop", "two-brackets", "unclosed-bracket"])
def test_malformed_jump_hops_are_refused_naming_the_line(home, jump, expected):
    path = _config(home, f"Host db\n    ProxyJump {jump}\n")
    with pytest.raises(ConfigError) as refused:
        resolve("db")
    assert str(refused.value).startswith(f"{path}:2: ") and expected in str(refused.value)


def _jump_chain(home: Path, hops: int) -> None:
    _config(home, "".join(f"Host h{i}\n    ProxyJump h{i + 1}\n" for i in range(hops)))


def test_a_chain_of_sixteen_jumps_is_followed_and_seventeen_is_taken_for_a_loop(home):
    _jump_chain(home, target.MAX_JUMPS)
    assert len(resolve("h0").chain()) == 16
    _jump_chain(home, target.MAX_JUMPS + 1)
    with pytest.raises(ConfigError, match=r"ProxyJump loop: h0 -> h1 -> .* -> h17"):
        resolve("h0")


def test_include_is_relative_to_dot_ssh_for_the_user_file_and_a_given_file(home, tmp_path):
    (home / ".ssh" / "extra").write_text("Port 2044\n")
    _config(home, "Include extra\n")
    assert resolve("db").port == 2044
    given = tmp_path / "given_config"
    given.write_text("Include extra\n")
    assert resolve("db", config_file=given).port == 2044


def test_match_host_sees_hostname_with_percent_h_expanded(home):
    _config(home, "Host work\n    HostName %h.lab\nMatch host work.lab\n    Port 2022\n")
    assert resolve("work").port == 2022


def test_proxy_jump_tokens_fall_back_to_the_local_user_and_name_the_alias(home):
    _config(home, "Host db\n    HostName db.internal\n    ProxyJump %r@gw-%n\n")
    (hop,) = resolve("db").chain()
    assert hop.label == "ada@gw-db:22"


def test_proxy_jump_token_errors_name_the_keyword_and_the_line_once(home):
    path = _config(home, "Host db\n    ProxyJump gw-%d\n")
    with pytest.raises(ConfigError) as refused:
        resolve("db")
    assert str(refused.value).startswith(f"{path}:2: ProxyJump: unknown token %d")
    path = _config(home, "Host db\n    ProxyJump gw,\n")
    with pytest.raises(ConfigError) as refused:
        resolve("db")
    assert str(refused.value).count(f"{path}:2") == 1


def test_match_exec_errors_and_tokens_name_match_exec(home, tmp_path):
    _config(home, "Match exec \"test %j\"\n    Port 2022\n")
    with pytest.raises(ConfigError) as refused:
        resolve("db")
    assert ": Match exec: unknown token %j in 'test %j'" in str(refused.value)
    seen = tmp_path / "seen"
    _config(home, f"Match exec \"echo %u > {seen}\"\n    Port 2022\n")
    assert resolve("db").port == 2022 and seen.read_text() == "ada\n"


def test_a_loop_through_an_inherited_proxy_jump_names_each_line_once(home):
    path = _config(home, "Host db\n    ProxyJump gw\nHost *\n    ProxyJump gw2\n")
    with pytest.raises(ConfigError) as refused:
        resolve("db")
    assert str(refused.value).startswith(
        f"{path}:2: ProxyJump 'gw': {path}:4: ProxyJump 'gw2': "
        f"ProxyJump loop: db -> gw -> gw2 -> gw2.")


def test_an_unsupported_keyword_is_logged_for_the_host_and_line(home, caplog):
    path = _config(home, "Host db\n    VerifyHostKeyDNS yes\n")
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh"):
        resolve("db")
    assert (f"ssh config for db: {path}:2: VerifyHostKeyDNS yes is not supported by fleche-ssh"
            in caplog.text)


def test_two_words_for_one_identity_file_are_refused_naming_the_source(home):
    path = _config(home, "Host db\n    IdentityFile ~/.ssh/id_a ~/.ssh/id_b\n")
    with pytest.raises(ConfigError) as in_file:
        resolve("db")
    assert str(in_file.value).startswith(f"{path}:2: IdentityFile: expected one value")
    _config(home, "")  # the line above is refused for every host, as ssh refuses it
    with pytest.raises(ConfigError) as in_options:
        resolve("plain", ssh_options=["-o", "IdentityFile=x y"])
    assert str(in_options.value).startswith("ssh_options: IdentityFile: expected one value")
