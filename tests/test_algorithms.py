"""OpenSSH's algorithm-list syntax: the one function, against ``ssh -G`` and on its own.

:func:`~fleche_ssh.config.algorithms.assemble` takes the default and the
supported names as arguments, so it is checked here with ssh's own: given
ssh's default list (``ssh -G`` with no config) and everything ssh knows
(``ssh -Q``), it must build exactly the list ``ssh -G`` prints for a line.
With fleche-ssh's defaults (Paramiko's algorithms, AES-GCM first) the same
function gives the lists the rows resolve to.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess

import paramiko
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleche_ssh.config.algorithms import PREFERRED_CIPHERS, SUPPORTED, assemble, prefer
from fleche_ssh.config.target import resolve
from fleche_ssh.errors import ConfigError

#: The ``ssh -Q`` query giving the names each keyword's patterns are matched against.
QUERIES = {"Ciphers": "cipher", "MACs": "mac", "KexAlgorithms": "kex",
           "HostKeyAlgorithms": "key-sig", "PubkeyAcceptedAlgorithms": "key-sig",
           "CASignatureAlgorithms": "sig"}


def _ssh(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("ssh") is None:
        pytest.fail("the OpenSSH client (ssh) is needed: apt-get install openssh-client")
    return subprocess.run(["ssh", *args], capture_output=True, text=True, timeout=20,
                          check=False, stdin=subprocess.DEVNULL)


def ssh_list(keyword: str, spec: str | None = None) -> list[str]:
    """The list ``ssh -G`` prints for *keyword* set to *spec* (ssh's default if None)."""
    options = [] if spec is None else ["-o", f"{keyword}={spec}"]
    done = _ssh("-G", "-F", "none", *options, "host.example")
    assert done.returncode == 0, done.stderr
    found = re.search(rf"^{keyword.lower()} (.*)$", done.stdout, re.MULTILINE)
    assert found, done.stdout
    return found.group(1).split(",") if found.group(1) else []


@pytest.fixture(scope="module")
def openssh() -> dict[str, tuple[list[str], list[str]]]:
    """Per keyword: ssh's default list and every name it knows, in its order."""
    return {keyword: (ssh_list(keyword), _ssh("-Q", query).stdout.split())
            for keyword, query in QUERIES.items()}


# Lines ssh accepts (it refuses wildcards in the Ciphers, MACs and KexAlgorithms
# lists it has to check name by name, but not after '-').
SPECS = [
    ("Ciphers", "aes256-ctr"),
    ("Ciphers", "aes256-ctr,aes128-gcm@openssh.com,aes256-ctr"),
    ("Ciphers", "+aes128-cbc"),
    ("Ciphers", "+aes128-ctr,3des-cbc"),
    ("Ciphers", "-aes*-ctr"),
    ("Ciphers", "-aes128-ctr,chacha20-poly1305@openssh.com"),
    ("Ciphers", "^aes256-gcm@openssh.com,aes128-cbc"),
    ("Ciphers", "-*cbc,!aes256-cbc"),
    ("Ciphers", "-aes*,!aes128-ctr"),  # a negated pattern keeps a name the others drop
    ("MACs", "hmac-sha2-512,hmac-sha1"),
    ("MACs", "+hmac-md5"),
    ("MACs", "-*etm@openssh.com"),
    ("MACs", "^hmac-sha2-512"),
    ("KexAlgorithms", "ecdh-sha2-nistp384,curve25519-sha256@libssh.org"),
    ("KexAlgorithms", "+diffie-hellman-group14-sha1"),
    ("KexAlgorithms", "-sntrup*,ecdh-*"),
    ("KexAlgorithms", "^diffie-hellman-group14-sha256"),
    ("HostKeyAlgorithms", "ssh-ed25519*"),
    ("HostKeyAlgorithms", "+ssh-rsa"),
    ("HostKeyAlgorithms", "-*-cert-v01@openssh.com,sk-*"),
    ("HostKeyAlgorithms", "^ecdsa-sha2-nistp256"),
    ("HostKeyAlgorithms", "rsa-sha2-?12,ecdsa-sha2-nistp*"),
    ("PubkeyAcceptedAlgorithms", "+ssh-rsa"),
    ("PubkeyAcceptedAlgorithms", "ssh-ed25519,ecdsa-sha2-nistp256-cert-v01@openssh.com"),
    ("PubkeyAcceptedAlgorithms", "-rsa-*"),
    ("CASignatureAlgorithms", "-ssh-ed25519"),
    ("CASignatureAlgorithms", "^rsa-sha2-256,ecdsa*"),
    ("CASignatureAlgorithms", "ssh-ed25519"),
]


@pytest.mark.parametrize(("keyword", "spec"), SPECS, ids=lambda v: v)
def test_assemble_builds_the_list_ssh_builds(openssh, keyword, spec):
    default, known = openssh[keyword]
    assert list(assemble(spec, default, known)) == ssh_list(keyword, spec)


@pytest.mark.parametrize(("keyword", "spec"), SPECS, ids=lambda v: v)
def test_the_resolved_list_edits_fleche_ssh_defaults_as_ssh_edits_its_own(
        openssh, keyword, spec):
    """What ssh adds is offered (if Paramiko has it), what ssh drops is not."""
    ssh_default, _ = openssh[keyword]
    theirs = ssh_list(keyword, spec)
    ours = getattr(resolve("h", config_file="none", ssh_options=["-o", f"{keyword}={spec}"]),
                   _FIELDS[keyword])
    paramiko_has = SUPPORTED[keyword]
    assert ours.written == spec
    # A plain list keeps its order, whatever the defaults; a pattern expands in the order
    # of the names the implementation has.
    if spec[0] not in "+-^" and not any(c in spec for c in "*?"):
        assert list(ours.names) == [n for n in theirs if n in paramiko_has]
    if spec[0] == "^":  # the names given first, in their order
        given_first = [n for n in assemble(spec[1:], (), theirs) if n in paramiko_has]
        assert list(ours.names[:len(given_first)]) == given_first
    assert set(theirs) & set(paramiko_has) <= set(ours.names)
    assert not (set(ssh_default) - set(theirs)) & set(ours.names)
    assert set(ours.names) <= set(paramiko_has)


_FIELDS = {"Ciphers": "ciphers", "MACs": "macs", "KexAlgorithms": "kex_algorithms",
           "HostKeyAlgorithms": "host_key_algorithms",
           "PubkeyAcceptedAlgorithms": "pubkey_accepted_algorithms",
           "CASignatureAlgorithms": "ca_signature_algorithms"}


def test_prefer_moves_the_names_given_to_the_front_in_their_order():
    """How fleche-ssh's cipher default puts GCM first, for any list."""
    assert prefer(("a", "b", "c", "d"), ("d", "x", "b")) == ("d", "b", "a", "c")
    assert prefer(("a", "b"), ()) == ("a", "b")


def test_the_defaults_are_what_a_paramiko_transport_offers_gcm_first():
    with socket.socket() as sock:
        transport = paramiko.Transport(sock)
        options = transport.get_security_options()
        assert SUPPORTED["Ciphers"][:2] == PREFERRED_CIPHERS
        assert sorted(SUPPORTED["Ciphers"]) == sorted(options.ciphers)
        assert SUPPORTED["MACs"] == options.digests
        assert SUPPORTED["KexAlgorithms"] == options.kex
        # Host certificates after the plain keys (connect.py puts them first when
        # known_hosts trusts a CA for the host).
        assert SUPPORTED["HostKeyAlgorithms"] == (
            *options.key_types, *(f"{k}-cert-v01@openssh.com" for k in options.key_types))
        transport.close()


def test_plus_keeps_gcm_first_and_a_plain_list_replaces_the_order():
    appended = resolve("h", config_file="none", ssh_options=["-o", "Ciphers=+aes256-ctr"]).ciphers
    assert appended.names == SUPPORTED["Ciphers"]
    assert appended.names[:2] == PREFERRED_CIPHERS
    plain = resolve("h", config_file="none",
                    ssh_options=["-o", "Ciphers=aes256-ctr,aes128-gcm@openssh.com"])
    assert plain.ciphers.names == ("aes256-ctr", "aes128-gcm@openssh.com")
    assert str(plain.ciphers) == "aes256-ctr,aes128-gcm@openssh.com"
    assert dict(plain.describe())["ciphers"] == "aes256-ctr,aes128-gcm@openssh.com"


def test_unset_lists_stay_unset():
    target = resolve("h", config_file="none")
    assert [getattr(target, f) for f in _FIELDS.values()] == [None] * len(_FIELDS)


def test_the_old_name_of_pubkey_accepted_algorithms_is_the_same_keyword(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host h\n    PubkeyAcceptedKeyTypes ssh-ed25519\n"
                      "    PubkeyAcceptedAlgorithms rsa-sha2-512\n")
    assert resolve("h", config_file=config).pubkey_accepted_algorithms.names == (
        "ssh-ed25519",)


def test_nothing_left_names_the_line_and_what_paramiko_supports(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host h\n    Ciphers chacha20-poly1305@openssh.com\n")
    with pytest.raises(ConfigError) as raised:
        resolve("h", config_file=config)
    message = str(raised.value)
    assert f"{config}:2: Ciphers chacha20-poly1305@openssh.com: no algorithm Paramiko " in message
    assert ", ".join(SUPPORTED["Ciphers"]) in message


@pytest.mark.parametrize(("keyword", "spec"), [
    ("HostKeyAlgorithms", "ssh-rsa"),
    ("KexAlgorithms", "diffie-hellman-group14-sha1,diffie-hellman-group1-sha1"),
    ("PubkeyAcceptedAlgorithms", "ssh-rsa-cert-v01@openssh.com"),
])
def test_only_sha1_asked_for_says_paramiko_has_none_and_points_to_type_ssh(keyword, spec):
    with pytest.raises(ConfigError) as raised:
        resolve("h", config_file="none", ssh_options=["-o", f"{keyword}={spec}"])
    assert "Paramiko 5 has no SHA-1 algorithms" in str(raised.value)
    assert 'type = "ssh"' in str(raised.value)


def test_sha1_added_to_the_default_is_logged_and_left_out(caplog):
    with caplog.at_level(logging.INFO, logger="fleche_ssh.options"):
        target = resolve("h", config_file="none", ssh_options=["-o", "HostKeyAlgorithms=+ssh-rsa"])
    assert target.host_key_algorithms.names == SUPPORTED["HostKeyAlgorithms"]
    assert not target.host_key_algorithms.as_written
    [line] = [r.getMessage() for r in caplog.records if r.name == "fleche_ssh.options"]
    assert "ssh_options: HostKeyAlgorithms: Paramiko 5 has no SHA-1" in line
    assert "ssh-rsa" in line and 'type = "ssh"' in line


def test_nothing_left_without_sha1_names_says_nothing_about_sha1(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host h\n    Ciphers chacha20-poly1305@openssh.com\n")
    with pytest.raises(ConfigError) as raised:
        resolve("h", config_file=config)
    assert str(raised.value) == (
        f"{config}:2: Ciphers chacha20-poly1305@openssh.com: no algorithm Paramiko supports "
        f"is left. Paramiko supports: {', '.join(SUPPORTED['Ciphers'])}.")


def test_only_sha1_asked_for_names_each_missing_algorithm():
    spec = "diffie-hellman-group14-sha1,diffie-hellman-group1-sha1"
    with pytest.raises(ConfigError) as raised:
        resolve("h", config_file="none", ssh_options=["-o", f"KexAlgorithms={spec}"])
    assert str(raised.value) == (
        f"ssh_options: KexAlgorithms {spec}: no algorithm Paramiko supports is left. "
        "Paramiko 5 has no SHA-1 algorithms (diffie-hellman-group1-sha1, "
        'diffie-hellman-group14-sha1); use the stock type = "ssh" cache for this host. '
        f"Paramiko supports: {', '.join(SUPPORTED['KexAlgorithms'])}.")


def test_sha1_left_out_is_logged_naming_each_one(caplog):
    with caplog.at_level(logging.INFO, logger="fleche_ssh.options"):
        resolve("h", config_file="none", ssh_options=["-o", "HostKeyAlgorithms=+ssh-rsa,ssh-dss"])
    assert [r.getMessage() for r in caplog.records if r.name == "fleche_ssh.options"] == [
        "ssh_options: HostKeyAlgorithms: Paramiko 5 has no SHA-1 algorithms, so ssh-dss, "
        'ssh-rsa is left out; a server that accepts nothing else needs the stock type = "ssh" '
        "cache"]


@pytest.mark.parametrize("spec", [
    "-ecdsa-sha2-nistp256,ssh-rsa", "ssh-ed25519", "^ssh-ed25519",
    "+Xssh-rsa",  # only the sign is taken off: a name that ends in ssh-rsa is not ssh-rsa
])
def test_a_list_that_asks_for_no_sha1_algorithm_logs_nothing(caplog, spec):
    """Removing an SHA-1 name with '-' asks for nothing: there is nothing to warn about."""
    with caplog.at_level(logging.INFO, logger="fleche_ssh.options"):
        target = resolve("h", config_file="none", ssh_options=["-o", f"HostKeyAlgorithms={spec}"])
    assert target.host_key_algorithms is not None
    assert [r.getMessage() for r in caplog.records if r.name == "fleche_ssh.options"] == []


def test_a_negated_name_outside_a_minus_list_is_refused():
    with pytest.raises(ConfigError, match="HostKeyAlgorithms: '!ssh-ed25519': a negated name"):
        resolve("h", config_file="none", ssh_options=["-o", "HostKeyAlgorithms=ssh-*,!ssh-ed25519"])


# --- the function on its own ----------------------------------------------------------------

NAMES = ["a-1", "a-2", "b-1", "b-2", "c", "cc"]
names = st.lists(st.sampled_from(NAMES), unique=True)
patterns = st.sampled_from([*NAMES, "a-*", "*-1", "?", "c?", "*", "zz", "b-?"])
lists = st.lists(patterns, max_size=5).map(",".join)


@given(names, names, lists)
def test_a_plain_list_is_the_supported_names_it_matches_once_each(default, supported, spec):
    got = assemble(spec, default, supported) if spec else None
    if got is not None:
        assert len(set(got)) == len(got)
        assert set(got) <= set(supported)
        items = [p for p in spec.split(",") if p]
        assert set(got) == {n for n in supported if any(_matches(p, n) for p in items)}
        if not any(c in spec for c in "*?"):
            assert list(got) == list(dict.fromkeys(p for p in items if p in supported))


def _matches(pattern: str, name: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."),
                        name) is not None


@given(names, lists)
def test_minus_keeps_the_default_order_and_drops_exactly_the_matches(default, spec):
    got = assemble(f"-{spec}", default, NAMES)
    patterns = [p for p in spec.split(",") if p]
    assert list(got) == [n for n in default if not any(_matches(p, n) for p in patterns)]


@given(names, lists)
def test_plus_starts_with_the_default_and_caret_with_the_names_given(default, spec):
    appended = assemble(f"+{spec}", default, NAMES)
    assert appended[:len(default)] == tuple(default)
    first = assemble(f"^{spec}", default, NAMES)
    assert set(first) == set(appended)
    given_first = assemble(spec, (), NAMES) if spec else ()
    assert first[:len(given_first)] == given_first


@given(names)
def test_an_empty_line_is_the_default(default):
    assert assemble("", default, NAMES) == tuple(default)
