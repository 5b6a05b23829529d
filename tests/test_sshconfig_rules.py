"""The ssh_config rules a user relies on, each case checked once against ``ssh -G``.

Host patterns (wildcards, backtracking, case), ``Keyword=value``, which of
ProxyJump and ProxyCommand wins, and the limits on what is read, each
naming the file and line.  The expected values are what OpenSSH 9.2's
``ssh -G -F FILE HOST`` printed for the same file.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
import test_target
from test_canonical import resolver
from test_sshconfig import write

from fleche_ssh.config import sshconfig
from fleche_ssh.config.target import resolve
from fleche_ssh.errors import ConfigError

home = test_target.home

PATTERNS = """\
Host a*bc
    Port 1001
Host *a
    Port 1002
Host x?y*z
    Port 1003
Host **q
    Port 1004
Match host REAL.Example.ORG
    Port 1005
Match originalhost MiXed
    Port 1006
Match user Bob
    Port 1007
Host *
    Port=1999
"""


@pytest.mark.parametrize(("host", "port"), [
    ("abxbc", 1001),   # the * has to give back the "bc" it first took
    ("abcx", 1999),    # text after the last literal: no match
    ("aaa", 1002),
    ("xqyzzz", 1003),
    ("xqyz", 1003),
    ("xyz", 1999),     # ? needs one character
    ("q", 1004),
    ("abq", 1004),
    ("real.example.org", 1005),   # Match host folds case
    ("MIXED", 1006),              # so does Match originalhost
    ("mixed", 1006),
    ("Bob@h", 1007),              # Match user does not
    ("bob@h", 1999),
])
def test_host_patterns_choose_the_block_ssh_chooses(home, host, port):
    write(home / ".ssh" / "config", PATTERNS)
    assert resolve(host).port == port


def test_pattern_list_needs_a_positive_match_and_no_negated_one():
    match = sshconfig.match_pattern_list
    assert match(["web*", "!web-old"], "web1")
    assert not match(["web*", "!web-old"], "web-old")
    assert not match(["!web-old", "web*"], "web-old")  # the order does not matter
    assert not match(["!other"], "web1")                # a negation alone matches nothing
    assert match(["WEB*"], "web1")
    assert not match(["WEB*"], "web1", fold_case=False)
    assert not match(["web1"], "WEB1", fold_case=False)


def test_proxy_jump_none_leaves_a_later_proxy_command_free(home):
    # ssh -G: proxycommand "nc %h %p" for j; no proxyjump for k.
    write(home / ".ssh" / "config",
          "Host j\n    ProxyJump none\n    ProxyCommand nc %h %p\n"
          "Host k\n    ProxyCommand none\n    ProxyJump gw\n")
    assert resolve("j").proxy_command == "nc j 22"
    found = resolve("k")
    assert (found.proxy_command, found.jump) == (None, None)


@pytest.mark.parametrize("line", ["Port=2201", "Port = 2201", "Port =2201", "Port\t2201",
                                  "  port 2201  # trailing comment"])
def test_keyword_and_value_may_be_joined_by_equals_or_blanks(home, line):
    write(home / ".ssh" / "config", f"Host *\n{line}\n")
    assert resolve("h").port == 2201


def test_the_first_value_and_its_line_win(home):
    config = write(home / ".ssh" / "config",
                   "Host h\n    port 2201\nHost *\n    Port 2202\n")
    found = resolve("h")
    assert found.port == 2201
    assert dict(found.origins)["port"] == f"{config}:2"


def test_a_key_file_named_twice_is_offered_once(home):
    write(home / ".ssh" / "config",
          "Host h\n    IdentityFile ~/k1\n    IdentityFile ~/k2\nHost *\n    IdentityFile ~/k1\n")
    assert resolve("h").identity_files == (f"{home}/k1", f"{home}/k2")


@pytest.mark.parametrize(("text", "message"), [
    ("Host *\n    Port\n", ":2: Port needs a value"),
    ("Host *\n    =2201\n", ":2: cannot parse '=2201'"),
    ('Host *\n    User "ada\n', ":2: unterminated \" quote in"),
    ("Host *\n    Port 22\0\n", ": ssh config file contains NUL"),
], ids=["keyword-without-value", "not-keyword-and-value", "unclosed-quote", "nul-byte"])
def test_a_malformed_file_is_refused_with_file_and_line(home, text, message):
    config = write(home / ".ssh" / "config", text)
    with pytest.raises(ConfigError, match=re.escape(f"{config}{message}")):
        resolve("h")


@pytest.mark.timeout(10)  # the failure this guards against is a hang
def test_a_named_pipe_is_refused_without_waiting_for_a_writer(home):
    config = home / ".ssh" / "config"
    os.mkfifo(config)
    with pytest.raises(ConfigError, match=re.escape(f"{config}: ssh config file is a named")):
        resolve("h")


def test_an_unreadable_file_is_refused_with_the_reason(home):
    # A directory in an Include glob cannot be read as a file.
    write(home / ".ssh" / "config", "Include sub\n")
    (home / ".ssh" / "sub").mkdir()
    with pytest.raises(ConfigError, match=re.escape(
            f"{home}/.ssh/sub: cannot read ssh config file: Is a directory")):
        resolve("h")


def test_a_device_is_read_only_up_to_the_limit(home, monkeypatch):
    monkeypatch.setattr(sshconfig, "MAX_CONFIG_BYTES", 1000)
    write(home / ".ssh" / "config", "Include /dev/zero\n")
    with pytest.raises(ConfigError, match=re.escape(
            "/dev/zero: ssh config file is larger than 1000 bytes")):
        resolve("h")


def test_a_file_exactly_at_the_limit_is_read(home, monkeypatch):
    text = "Host *\n    Port 2201\n"
    monkeypatch.setattr(sshconfig, "MAX_CONFIG_BYTES", len(text))
    write(home / ".ssh" / "config", text)
    assert resolve("h").port == 2201


def test_includes_may_nest_to_the_limit_and_no_deeper(home, monkeypatch):
    monkeypatch.setattr(sshconfig, "MAX_INCLUDE_DEPTH", 2)
    ssh = home / ".ssh"
    write(ssh / "config", "Include one\n")
    write(ssh / "one", "Include two\n")
    write(ssh / "two", "Port 2201\n")
    assert resolve("h").port == 2201

    write(ssh / "two", "Include three\n")
    write(ssh / "three", "Port 2202\n")
    with pytest.raises(ConfigError, match=re.escape(f"{ssh}/three: Include nested more than 2")):
        resolve("h")


def test_include_takes_several_patterns_and_absolute_paths(home, tmp_path):
    write(tmp_path / "elsewhere", "User from-absolute\n")
    write(home / ".ssh" / "b", "Port 2201\n")
    write(home / ".ssh" / "config", f"Include missing-* b {tmp_path}/elsewhere\n")
    found = resolve("h")
    assert (found.port, found.user) == (2201, "from-absolute")


def test_match_criteria_errors_name_the_criterion(home):
    config = write(home / ".ssh" / "config", "Match !colour x\n    Port 2201\n")
    with pytest.raises(ConfigError, match=re.escape(
            f"{config}:1: Match criterion '!colour' is not supported by fleche-ssh "
            "(supported: all, canonical, final, exec, host, originalhost, user, localuser).")):
        resolve("h")
    # "Match all user" is refused too, for combining "all" (see test_sshconfig.py).
    write(config, "Match host h user\n")
    with pytest.raises(ConfigError, match=re.escape(f"{config}:1: Match user needs an argument")):
        resolve("h")


def test_every_match_criterion_must_hold(home):
    write(home / ".ssh" / "config",
          "Match originalhost h user nobody\n    Port 2201\n"
          "Match originalhost h !user nobody\n    Port 2202\n")
    assert resolve("h").port == 2202


def test_match_user_falls_back_to_the_login_then_the_local_user(home, monkeypatch):
    local = test_target.LOCAL_USER
    write(home / ".ssh" / "config", f"Match user {local}\n    Port 2201\n")
    assert resolve("h").port == 2201            # the password database's name, not $LOGNAME
    assert resolve("bob@h").port == 22
    write(home / ".ssh" / "config", "Host h\n    User ada\nMatch user ada\n    Port 2201\n")
    monkeypatch.setenv("LOGNAME", "someone-else")
    assert resolve("h").port == 2201


def test_match_exec_that_cannot_start_does_not_match(home, monkeypatch):
    monkeypatch.setattr(sshconfig.subprocess, "run", _cannot_start)
    write(home / ".ssh" / "config", "Match exec true\n    Port 2201\n")
    assert resolve("h").port == 22


def _cannot_start(*args, **kwargs):
    raise FileNotFoundError("/bin/sh")


def test_match_exec_sees_the_hostname_on_the_final_pass_lowercased(home):
    write(home / ".ssh" / "config",
          "Host h\n    HostName Real.Example.ORG\n"
          'Match final exec "test %h = real.example.org"\n    Port 2201\n')
    assert resolve("h").port == 2201


@pytest.mark.parametrize(("value", "canonical"), [
    ("yes", True), ("always", True), ("YES", True), ("no", False)])
def test_canonicalize_hostname_asks_for_the_second_pass(home, value, canonical):
    write(home / ".ssh" / "config",
          f"Host *\n    CanonicalizeHostname {value}\nMatch canonical\n    Port 2201\n")
    assert (resolve("h").port == 2201) is canonical


def test_a_canonical_name_is_said_to_come_from_the_canonicalize_hostname_line(home):
    """The target's origins name the line that made the name, as for any HostName."""
    config = write(home / ".ssh" / "config",
                   "Host *\n    CanonicalizeHostname yes\n    CanonicalDomains a.example\n")
    found = resolve("n1", getaddrinfo=resolver({"n1.a.example": "n1.a.example"}))
    assert found.hostname == "n1.a.example"
    assert dict(found.origins)["hostname"] == f"{config}:2"


def test_host_lines_see_the_hostname_on_the_final_pass(home):
    write(home / ".ssh" / "config",
          "Host h\n    HostName real.example.org\nMatch final\n"
          "Host real.example.org\n    HostName ignored.example.org\n    User on-final\n")
    found = resolve("h")
    assert (found.user, found.hostname) == ("on-final", "real.example.org")


@pytest.mark.parametrize(("host", "user"), [
    ("aa", "patt"), ("baaa", test_target.LOCAL_USER),   # a pattern without * matches the
    ("db", "patt"), ("xbdb", test_target.LOCAL_USER),   # whole name only
    ("web", "patt"),                   # a trailing * matches nothing too
])
def test_a_pattern_matches_the_whole_name(home, host, user):
    write(home / ".ssh" / "config", "Host aa db web*\n    User patt\n")
    assert resolve(host).user == user


def test_match_exec_sees_the_hostname_as_written_on_the_first_pass(home):
    write(home / ".ssh" / "config",
          "Host h\n    HostName Real.Example.ORG\n"
          'Match exec "test %h = Real.Example.ORG"\n    Port 2201\n')
    assert resolve("h").port == 2201


def test_a_proxy_jump_set_first_beats_a_later_proxy_command(home):
    # ssh -G: proxyjump gw, no proxycommand.
    write(home / ".ssh" / "config",
          "Host j2\n    ProxyJump gw\nHost *\n    ProxyCommand nc %h %p\n")
    found = resolve("j2")
    assert (found.proxy_command, found.jump.alias) == (None, "gw")


def test_negated_all_never_matches_and_a_bare_hash_is_a_comment(home):
    # ssh -G: port 2202.
    write(home / ".ssh" / "config", "Match !all\n    Port 2201\nHost *\n    #\n    Port 2202\n")
    assert resolve("h").port == 2202


def test_match_localuser_is_case_sensitive(home):
    write(home / ".ssh" / "config",
          f"Match localuser {test_target.LOCAL_USER.upper()}\n    Port 2203\n")
    assert resolve("h").port == 22


def test_match_exec_output_does_not_reach_the_terminal(home, capfd):
    write(home / ".ssh" / "config",
          'Match exec "echo to-stdout; echo to-stderr >&2"\n    Port 2201\n')
    assert resolve("h").port == 2201
    assert capfd.readouterr() == ("", "")


def test_a_command_is_kept_as_written_and_other_values_unquoted(home):
    write(home / ".ssh" / "config",
          "Host h\n    ProxyCommand sh -c 'nc %h %p'\n    User \"quoted\"\n")
    found = resolve("h")
    assert (found.proxy_command, found.user) == ("sh -c 'nc h 22'", "quoted")


def test_bytes_that_are_not_utf8_in_a_comment_are_read_past(home):
    (home / ".ssh" / "config").write_bytes(b"# caf\xe9\nHost *\n    Port 2201\n")
    assert resolve("h").port == 2201


def test_hostname_first_given_on_the_final_pass_changes_nothing(home):
    # ssh -G: hostname h.
    write(home / ".ssh" / "config", "Match final\n    HostName elsewhere.example.org\n")
    assert resolve("h").hostname == "h"


def test_a_relative_include_on_the_final_pass_starts_in_dot_ssh(home):
    write(home / ".ssh" / "final.conf", "Port 2201\n")
    write(home / ".ssh" / "config", "Match final\n    Include final.conf\n")
    assert resolve("h").port == 2201


def test_match_exec_cannot_read_the_callers_input(home, tmp_path):
    config = write(tmp_path / "config", 'Match exec "read line"\n    Port 2201\n')
    assert resolve("h", config_file=config).port == 22  # pytest's own stdin is empty
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from fleche_ssh.config.target import resolve; "
         "print(resolve('h', config_file=sys.argv[1]).port)", str(config)],
        input="a line the command must not see\n", capture_output=True, text=True,
        timeout=60, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout.strip() == "22"


def test_an_ignored_keyword_is_judged_by_its_words_not_its_raw_text(home, caplog):
    # "no" is what fleche-ssh does anyway: a debug line, whatever quoting or comment follows.
    write(home / ".ssh" / "config", 'Host *\n    VerifyHostKeyDNS "no"  # as everywhere\n')
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.options"):
        resolve("h")
    assert [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "fleche_ssh.options"] == [
        (logging.DEBUG, f"ssh config for h: {home}/.ssh/config:2: VerifyHostKeyDNS is not "
                        "supported by fleche-ssh, ignored")]
