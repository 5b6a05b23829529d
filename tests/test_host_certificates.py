"""Host certificates (``@cert-authority`` in known_hosts), against a real sshd and ssh.

The fixture signs an sshd's host key with a CA made by ``ssh-keygen -s -h``
and serves it (``HostCertificate``); fleche-ssh and the ``ssh`` binary then
connect with a known_hosts holding only the CA line, and must agree.  What
makes a certificate invalid (type, principals, validity, a revoked CA) is
checked on real certificates from ``ssh-keygen`` with ``verify`` directly.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import paramiko
import pytest
import support as sshd_helpers
from support.processes import run_tool

from fleche_ssh.config.target import resolve
from fleche_ssh.errors import HostKeyError, UnknownHostKey
from fleche_ssh.ssh import hostkeys

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]


def sign(ca: Path, pub: Path, *options: str) -> str:
    """``ssh-keygen -s CA`` on *pub*; the certificate's ``type base64`` line."""
    run_tool(["ssh-keygen", "-q", "-s", str(ca), "-I", "test-host", *options, str(pub)])
    return pub.with_name(pub.name.removesuffix(".pub") + "-cert.pub").read_text().strip()


@pytest.fixture(scope="module")
def ca(tmp_path_factory, client_key) -> Path:
    """A CA key (``client_key`` for its check that ssh-keygen is installed)."""
    path = tmp_path_factory.mktemp("ca") / "host_ca"
    sshd_helpers.make_client_key(path, comment="host-ca")
    return path


def signed_sshd(workdir: Path, ca: Path, client_key, *options: str):
    host_key = workdir / "ssh_host_ed25519_key"
    sshd_helpers.make_client_key(host_key, comment="signed-host")
    sign(ca, host_key.with_name(host_key.name + ".pub"), "-h", *options)
    cert = host_key.with_name(host_key.name + "-cert.pub")
    return sshd_helpers.start_sshd(workdir, authorized_keys=[client_key.public_line],
                                   extra_config=[f"HostCertificate {cert}"])


def serving(server):
    """A fixture's body for *server*: it serves the module's tests, then stops."""
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certified(tmp_path_factory, ca, client_key):
    """An sshd whose ed25519 host key is certified for 127.0.0.1 for the next hour."""
    yield from serving(signed_sshd(tmp_path_factory.mktemp("sshd-cert"), ca, client_key,
                                   "-n", "127.0.0.1", "-V", "-5m:+1h"))


@pytest.fixture(scope="module")
def expired(tmp_path_factory, ca, client_key):
    yield from serving(signed_sshd(tmp_path_factory.mktemp("sshd-expired"), ca, client_key,
                                   "-n", "127.0.0.1", "-V", "20200101:20200102"))


def ca_line(ca: Path, marker: str = "@cert-authority",
            names: str = "127.0.0.1,[127.0.0.1]:*") -> str:
    """A known_hosts line trusting (or revoking) the CA for *names*."""
    kind, blob = ca.with_name(ca.name + ".pub").read_text().split()[:2]
    return f"{marker} {names} {kind} {blob}\n"


def connect_both(client_home, make, server, known: str) -> tuple[object, int]:
    """fleche-ssh's outcome (info, or the exception) and ssh's exit status, same settings."""
    client_home.known_hosts.write_text(known)
    options = ["-p", str(server.port), "-o", "StrictHostKeyChecking=yes"]
    done = subprocess.run(["ssh", *client_home.ssh_options_for_stock(), *options, "testhost",
                           "true"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    try:
        ours: object = make(port=server.port, config_file=str(client_home.config)).info()
    except HostKeyError as e:
        ours = e
    return ours, done.returncode


def test_a_certificate_from_a_trusted_ca_is_accepted_as_ssh_accepts_it(
        client_home, make, certified, ca, remote_dir):
    ours, ssh_status = connect_both(client_home, make, certified, ca_line(ca))
    assert ssh_status == 0
    assert isinstance(ours, dict) and ours["cwd"] == str(remote_dir)
    assert client_home.known_hosts.read_text() == ca_line(ca)  # nothing recorded


def test_a_ca_for_other_hosts_leaves_the_plain_key_unknown(client_home, make, certified, ca):
    ours, ssh_status = connect_both(client_home, make, certified,
                                    ca_line(ca, names="*.example.org"))
    assert ssh_status == 255
    assert isinstance(ours, UnknownHostKey)


def test_an_expired_certificate_is_refused_as_ssh_refuses_it(client_home, make, expired, ca):
    ours, ssh_status = connect_both(client_home, make, expired, ca_line(ca))
    assert ssh_status == 255
    assert isinstance(ours, HostKeyError) and "it has expired" in str(ours)


def test_a_revoked_ca_is_refused_as_ssh_refuses_it(client_home, make, certified, ca):
    ours, ssh_status = connect_both(client_home, make, certified,
                                    ca_line(ca) + ca_line(ca, "@revoked", "*"))
    assert ssh_status == 255
    assert isinstance(ours, HostKeyError) and "@revoked" in str(ours)


# --- what a certificate must hold, on real certificates ---------------------------------


@pytest.fixture
def host_key(tmp_path) -> Path:
    path = tmp_path / "host_key"
    sshd_helpers.make_client_key(path, comment="host")
    return path.with_name("host_key.pub")


def certified_key(line: str) -> paramiko.PKey:
    """The key as Paramiko hands it over when the server sent this certificate."""
    return paramiko.Ed25519Key(data=base64.b64decode(line.split()[1]))


def target(tmp_path: Path, ca: Path, **keys) -> object:
    known = tmp_path / "known_hosts"
    known.write_text(ca_line(ca, names="*.example.org"))
    return resolve("login1.example.org", config_file="none", explicit={
        "known_hosts_file": str(known), "global_known_hosts_file": "none",
        "strict_host_key_checking": "yes", **keys})


@pytest.mark.parametrize(("options", "problem"), [
    (["-h", "-n", "login1.example.org"], None),
    (["-h"], None),                                        # no principals: any name
    (["-h", "-n", "*.example.org"], None),
    (["-h", "-n", "login2.example.org"], "do not include login1.example.org"),
    (["-n", "login1.example.org"], "not a host certificate"),  # a user certificate
    (["-h", "-V", "+1d:+2d"], "not valid yet"),
    (["-h", "-V", "20200101:20200102"], "expired"),
])
def test_what_makes_a_host_certificate_invalid(tmp_path, ca, host_key, options, problem):
    key = certified_key(sign(ca, host_key, *options))
    if problem is None:
        assert hostkeys.verify(target(tmp_path, ca), key, ask=None).startswith(
            "host certificate 'test-host' signed by the CA")
    else:
        with pytest.raises(HostKeyError, match=problem):
            hostkeys.verify(target(tmp_path, ca), key, ask=None)


def test_a_ca_signature_algorithm_not_allowed_is_refused(tmp_path, ca, host_key):
    key = certified_key(sign(ca, host_key, "-h"))
    with pytest.raises(HostKeyError, match="signed it with ssh-ed25519, which "
                                           "CASignatureAlgorithms does not allow"):
        hostkeys.verify(target(tmp_path, ca, ca_signature_algorithms="ecdsa-sha2-nistp*"), key,
                        ask=None)
    allowed = target(tmp_path, ca, ca_signature_algorithms="^ecdsa-sha2-nistp256")
    assert hostkeys.verify(allowed, key, ask=None).startswith("host certificate")


def test_principals_are_checked_against_the_host_key_alias(tmp_path, ca, host_key):
    key = certified_key(sign(ca, host_key, "-h", "-n", "cluster"))
    with pytest.raises(HostKeyError, match=r"do not include login1\.example\.org"):
        hostkeys.verify(target(tmp_path, ca), key, ask=None)
    known = tmp_path / "known_hosts"
    aliased = target(tmp_path, ca, host_key_alias="cluster")
    known.write_text(ca_line(ca, names="cluster"))
    assert hostkeys.verify(aliased, key, ask=None).startswith("host certificate")


def test_a_certificate_whose_ca_revoked_host_keys_lists_is_refused(tmp_path, ca, host_key):
    # As ssh, which looks for a certificate's CA in RevokedHostKeys as well as for the key.
    key = certified_key(sign(ca, host_key, "-h"))
    revoked = tmp_path / "revoked"
    revoked.write_text(f"# retired CA\n{ca.with_name(ca.name + '.pub').read_text()}")
    assert hostkeys.verify(target(tmp_path, ca), key, ask=None).startswith("host certificate")
    with pytest.raises(HostKeyError, match=f"is revoked by {revoked}:2"):
        hostkeys.verify(target(tmp_path, ca, revoked_host_keys=str(revoked)), key, ask=None)


def test_a_certificate_signed_by_another_ca_is_its_plain_key(tmp_path, ca, host_key):
    other = tmp_path / "other_ca"
    sshd_helpers.make_client_key(other)
    key = certified_key(sign(other, host_key, "-h"))
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(target(tmp_path, ca), key, ask=None)


def test_known_hosts_with_a_ca_asks_for_certificates_first(tmp_path, ca):
    found = hostkeys.known_key_types(target(tmp_path, ca))
    assert found[0].endswith("-cert-v01@openssh.com")
