"""StrictHostKeyChecking against a real sshd: each policy with an unknown or changed key."""

from __future__ import annotations

import logging
import subprocess
import threading

import pytest
from support.caches import wait_for

from fleche_ssh import ParamikoCache
from fleche_ssh.errors import ChangedHostKey, HostKeyError, UnknownHostKey, UnsupportedByParamiko

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]


def cache(client_home, remote_dir, remote_python, **keys) -> ParamikoCache:
    return ParamikoCache(host="testhost", python=remote_python, workdir=str(remote_dir), **keys)


def entries_for(client_home, port: int) -> list[str]:
    """Lines of known_hosts that ssh-keygen finds for the test host (hashed or not)."""
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{port}", "-f", str(client_home.known_hosts)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    return [ln for ln in found.stdout.splitlines() if ln and not ln.startswith("#")]


class Confirm:
    def __init__(self, answer: str):
        self.answer = answer
        self.questions: list[str] = []

    def __call__(self, title, instructions, prompts):
        self.questions += [text for text, _ in prompts]
        return [self.answer for _ in prompts]


def test_yes_refuses_an_unknown_host(client_home, remote_dir, remote_python):
    client_home.known_hosts.write_text("")
    with pytest.raises(UnknownHostKey) as refused:
        cache(client_home, remote_dir, remote_python).info()
    message = str(refused.value)
    assert f"[127.0.0.1]:{client_home.sshd.port}" in message
    assert "SHA256:" in message and "ssh-keyscan" in message
    assert client_home.known_hosts.read_text() == ""


@pytest.mark.parametrize("answer, accepted", [("yes", True), ("no", False)])
def test_ask_shows_the_fingerprint_and_obeys(client_home, remote_dir, remote_python, answer,
                                             accepted):
    client_home.known_hosts.write_text("")
    handler = Confirm(answer)
    c = cache(client_home, remote_dir, remote_python, strict_host_key_checking="ask",
              prompt=handler)
    if accepted:
        assert c.info()["cwd"] == str(remote_dir)
        assert len(entries_for(client_home, client_home.sshd.port)) == 1
    else:
        with pytest.raises(UnknownHostKey, match="not accepted"):
            c.info()
        assert client_home.known_hosts.read_text() == ""
    (question,) = handler.questions
    assert "SHA256:" in question and f"[127.0.0.1]:{client_home.sshd.port}" in question


def test_ask_with_nobody_to_ask_refuses_like_yes(client_home, remote_dir, remote_python):
    client_home.known_hosts.write_text("")
    c = cache(client_home, remote_dir, remote_python, strict_host_key_checking="ask",
              prompt="none")
    with pytest.raises(UnknownHostKey, match="ssh-keyscan"):
        c.info()


@pytest.mark.parametrize("hashed", [True, False])
def test_accept_new_records_the_host(client_home, remote_dir, remote_python, hashed, pool):
    client_home.known_hosts.write_text("")
    c = cache(client_home, remote_dir, remote_python, strict_host_key_checking="accept-new",
              hash_known_hosts=hashed)
    assert c.info()["cwd"] == str(remote_dir)

    text = client_home.known_hosts.read_text()
    assert text.startswith("|1|") is hashed
    assert (f"[127.0.0.1]:{client_home.sshd.port}" in text) is not hashed
    assert len(entries_for(client_home, client_home.sshd.port)) == 1
    pool.close_all()  # the recorded key now verifies under the strictest policy
    assert cache(client_home, remote_dir, remote_python).contains("0" * 64) is False


def test_no_connects_with_a_warning(client_home, remote_dir, remote_python, caplog):
    client_home.known_hosts.write_text("")
    caplog.set_level(logging.WARNING, logger="fleche_ssh.hostkeys")
    c = cache(client_home, remote_dir, remote_python, strict_host_key_checking="no")
    assert c.info()["cwd"] == str(remote_dir)
    assert "without verifying" in caplog.text


@pytest.mark.parametrize("policy", ["yes", "ask", "accept-new", "no"])
def test_a_changed_key_is_refused_under_every_policy(client_home, remote_dir, remote_python,
                                                     tmp_path, policy):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, timeout=30)
    keytype, blob = other.with_suffix(".pub").read_text().split()[:2]
    name = f"[127.0.0.1]:{client_home.sshd.port}"
    client_home.known_hosts.write_text(f"{name} {keytype} {blob}\n")

    c = cache(client_home, remote_dir, remote_python, strict_host_key_checking=policy,
              prompt=Confirm("yes"))
    with pytest.raises(ChangedHostKey) as refused:
        c.info()
    message = str(refused.value)
    assert name in message and "ssh-ed25519" in message and "SHA256:" in message
    assert f"{client_home.known_hosts}:1" in message
    assert "ssh-keygen -R" in message


def test_cert_authority_and_garbage_lines_do_not_disable_the_file(client_home, remote_dir,
                                                                  remote_python):
    good = client_home.known_hosts.read_text()
    client_home.known_hosts.write_text(
        "@cert-authority *.example.org ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIB9Zo3Xb5gpcC5ZXV0Qq5rUqvz5n6l7G0nZn9q3jYxGm\n"
        "this line is not a known_hosts entry\n"
        "\x00\x01 binary junk\n" + good
    )
    assert cache(client_home, remote_dir, remote_python).info()["cwd"] == str(remote_dir)


def test_revoked_key_is_refused(client_home, remote_dir, remote_python):
    keytype, blob = client_home.sshd.host_public_keys["ssh-ed25519"].split()[:2]
    with client_home.known_hosts.open("a") as f:
        f.write(f"@revoked * {keytype} {blob}\n")
    with pytest.raises(HostKeyError, match="revoked") as refused:
        cache(client_home, remote_dir, remote_python).info()
    assert "ssh-ed25519" in str(refused.value)


def test_ssh_rsa_only_server_is_explained(client_home, remote_dir, remote_python, tmp_path,
                                          client_key):
    from support import sshd as sshd_helpers

    rsa = tmp_path / "rsa_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)],
                   check=True, timeout=60)
    server = sshd_helpers.start_sshd(
        tmp_path / "sshd-rsa", authorized_keys=[client_key.public_line],
        extra_config=[f"HostKey {rsa}", "HostKeyAlgorithms ssh-rsa"],
    )
    try:
        c = ParamikoCache(host="127.0.0.1", port=server.port, user="root",
                          identity_file=str(client_home.identity), python=remote_python,
                          strict_host_key_checking="no")
        with pytest.raises(UnsupportedByParamiko) as refused:
            c.info()
        message = str(refused.value)
        assert "ssh-rsa" in message and 'type = "ssh"' in message
        # The failed handshake leaves no timer thread behind (Paramiko's would last 30 s).
        assert wait_for(lambda: not [t for t in threading.enumerate()
                                     if isinstance(t, threading.Timer)], timeout=2)
    finally:
        server.stop()
