"""HostKeyAlias, CheckHostIP, RevokedHostKeys and KnownHostsCommand against the real sshd.

Each case is run twice with the same settings: by fleche-ssh and by the
``ssh`` binary (``ssh -F CONFIG testhost true``), and both must accept or
refuse alike, and leave the same known_hosts lines.  A second port to the
same sshd is a relay (``benchmarks/relay.py``); for ``CheckHostIP``, which
ssh turns off for loopback, the relay listens on another address of this
machine.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import struct
import subprocess
from pathlib import Path

import pytest
import support as sshd_helpers
from support.processes import run_tool

from benchmarks.relay import DelayRelay
from fleche_ssh.errors import ChangedHostKey, HostKeyError, UnknownHostKey

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]

ALIAS = "cluster-login"


def info(make, client_home, **keys) -> dict:
    """A cache on ``testhost`` with *keys* connects and answers.

    It reads the one config file ``ssh`` is given (``-F``), not the system's too.
    """
    return make(config_file=str(client_home.config), **keys).info()


def ssh(client_home, *options: str) -> subprocess.CompletedProcess[str]:
    """The ssh binary with the same config (its paths are absolute) and options.

    ``HashKnownHosts no``, fleche-ssh's default, is given since Debian's ssh
    hashes new entries by default, so that both write names a test can compare.
    """
    argv = ["ssh", *client_home.ssh_options_for_stock(), "-o", "HashKnownHosts=no", *options,
            "testhost", "true"]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)


def known_names(client_home) -> list[str]:
    return sorted(line.split()[0] for line in client_home.known_hosts.read_text().splitlines()
                  if line.strip())


def alias_lines(client_home, name: str = ALIAS) -> str:
    return "".join(f"{name} {key}\n" for key in client_home.sshd.host_public_keys.values())


@pytest.fixture
def relay(sshd):
    """A second port to the test sshd."""
    with DelayRelay(target_port=sshd.port, one_way_delay=0) as second:
        yield second


# --- HostKeyAlias ----------------------------------------------------------------------


def test_host_key_alias_looks_the_key_up_under_the_alias(client_home, remote_dir, make, relay):
    client_home.known_hosts.write_text(alias_lines(client_home))
    port = str(relay.port)
    with pytest.raises(UnknownHostKey, match=f"127.0.0.1]:{port}"):
        info(make, client_home, port=relay.port)
    assert ssh(client_home, "-p", port).returncode == 255

    found = info(make, client_home, port=relay.port,
                 host_key_alias="Cluster-Login")
    assert found["cwd"] == str(remote_dir)
    assert ssh(client_home, "-p", port, "-o", "HostKeyAlias=Cluster-Login").returncode == 0


def test_a_new_host_is_recorded_under_the_alias_as_ssh_records_it(client_home, make, relay):
    recorded = []
    for run in ("fleche-ssh", "ssh"):
        client_home.known_hosts.write_text("")
        if run == "ssh":
            done = ssh(client_home, "-p", str(relay.port), "-o", "HostKeyAlias=New-Alias",
                       "-o", "StrictHostKeyChecking=accept-new")
            assert done.returncode == 0, done.stderr
        else:
            info(make, client_home, port=relay.port,
                 host_key_alias="New-Alias", strict_host_key_checking="accept-new")
        recorded.append(known_names(client_home))
    assert recorded[0] == recorded[1] == ["new-alias"]


def test_an_unknown_host_under_an_alias_says_how_to_record_it(client_home, remote_dir, make):
    client_home.known_hosts.write_text("")
    with pytest.raises(UnknownHostKey) as refused:
        info(make, client_home, host_key_alias=ALIAS)
    assert f"Host {ALIAS} is not in known_hosts" in str(refused.value)
    assert f"-o HostKeyAlias={ALIAS}" in str(refused.value)


# --- CheckHostIP -----------------------------------------------------------------------


def outside_address() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8, from the kernel's interfaces."""
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:  # SIOCGIFADDR: the interface's IPv4 address
                packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
        address = socket.inet_ntoa(packed[20:24])
        if not address.startswith("127."):
            return address
    return None


@pytest.fixture
def outside(sshd):
    """The test sshd seen at a non-loopback address of this machine."""
    address = outside_address()
    if address is None:
        reason = "CheckHostIP needs an IPv4 address outside 127.0.0.0/8 on this machine"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set, so not skipping: {reason}", pytrace=False)
        pytest.skip(reason)
    with DelayRelay(target_port=sshd.port, one_way_delay=0, host=address) as relay:
        yield relay


def check_ip_options(relay) -> tuple[list[str], dict]:
    """ssh options and fleche-ssh keys for: the address as HostName, the alias, CheckHostIP."""
    ssh_options = ["-o", f"HostName={relay.host}", "-p", str(relay.port), "-o",
                   f"HostKeyAlias={ALIAS}", "-o", "CheckHostIP=yes"]
    keys = {"hostname": relay.host, "port": relay.port, "host_key_alias": ALIAS,
            "check_host_ip": True}
    return ssh_options, keys


def test_check_host_ip_records_the_address_as_ssh_does(client_home, remote_dir, make,
                                                       outside):
    ssh_options, keys = check_ip_options(outside)
    recorded = []
    for run in ("fleche-ssh", "ssh"):
        client_home.known_hosts.write_text(alias_lines(client_home))
        if run == "ssh":
            done = ssh(client_home, *ssh_options)
            assert done.returncode == 0, done.stderr
        else:
            info(make, client_home, **keys)
        recorded.append(known_names(client_home))
    address = f"[{outside.host}]:{outside.port}"
    assert recorded[0] == recorded[1] == sorted([ALIAS, ALIAS, address])


def test_check_host_ip_is_off_for_loopback_as_in_ssh(client_home, remote_dir, make,
                                                     relay):
    client_home.known_hosts.write_text(alias_lines(client_home))
    info(make, client_home, port=relay.port, host_key_alias=ALIAS,
         check_host_ip=True)
    assert ssh(client_home, "-p", str(relay.port), "-o", f"HostKeyAlias={ALIAS}", "-o",
               "CheckHostIP=yes").returncode == 0
    assert known_names(client_home) == [ALIAS, ALIAS]


@pytest.mark.parametrize("policy", ["yes", "accept-new", "no"])
def test_an_address_with_another_key_is_refused_or_warned_of_as_ssh_does(
        client_home, remote_dir, make, outside, tmp_path, policy, caplog):
    others = [sshd_helpers.make_client_key(tmp_path / f"other_{kind}", key_type=kind)
              for kind in ("ed25519", "ecdsa")]
    address = f"[{outside.host}]:{outside.port}"
    client_home.known_hosts.write_text(
        alias_lines(client_home) + "".join(f"{address} {line}\n" for line in others))
    ssh_options, keys = check_ip_options(outside)

    done = ssh(client_home, *ssh_options, "-o", f"StrictHostKeyChecking={policy}")
    if policy == "no":
        assert done.returncode == 0, done.stderr
        assert "differs from the key for the IP address" in done.stderr
        with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
            info(make, client_home, strict_host_key_checking=policy,
                 **keys)
        assert f"differs from the key for the IP address '{address}'" in caplog.text
    else:
        assert done.returncode == 255 and "differs from the key for the IP" in done.stderr
        with pytest.raises(ChangedHostKey, match=f"the IP address '{re.escape(address)}'"):
            info(make, client_home, strict_host_key_checking=policy,
                 **keys)


# --- RevokedHostKeys -------------------------------------------------------------------


@pytest.mark.parametrize("listed", ["the server's keys", "another key", "no file"])
def test_revoked_host_keys_refuse_the_server_as_ssh_does(client_home, make, tmp_path, listed):
    revoked = tmp_path / "revoked_keys"
    if listed == "the server's keys":
        revoked.write_text("# revoked\n" + "".join(
            f"{key} old-host\n" for key in client_home.sshd.host_public_keys.values()))
    elif listed == "another key":
        revoked.write_text(sshd_helpers.make_client_key(tmp_path / "other") + "\n")
    done = ssh(client_home, "-o", f"RevokedHostKeys={revoked}")
    if listed == "another key":
        assert done.returncode == 0, done.stderr
        info(make, client_home, revoked_host_keys=str(revoked))
        return
    assert done.returncode == 255, done.stderr
    expected = "is revoked by" if listed == "the server's keys" else "cannot be read"
    with pytest.raises(HostKeyError, match=expected) as refused:
        info(make, client_home, revoked_host_keys=str(revoked))
    assert str(revoked) in str(refused.value)


def test_a_key_revocation_list_is_refused_as_not_read(client_home, remote_dir, make,
                                                      tmp_path):
    pub = tmp_path / "host.pub"
    pub.write_text(next(iter(client_home.sshd.host_public_keys.values())) + "\n")
    krl = tmp_path / "revoked.krl"
    run_tool(["ssh-keygen", "-q", "-k", "-f", str(krl), str(pub)])
    with pytest.raises(HostKeyError, match="binary key revocation list") as refused:
        info(make, client_home, revoked_host_keys=str(krl))
    assert "does not read" in str(refused.value)


# --- KnownHostsCommand -----------------------------------------------------------------

#: Every token a KnownHostsCommand accepts but %d (ssh takes the home from the password
#: database, fleche-ssh from $HOME, which the tests point at a throwaway one).
TOKENS = "%I %H %t %f %K %h %p %r %n %k %u %i %C %l %L %%"


def write_command(tmp_path: Path, lines: str, status: int = 0) -> tuple[Path, Path]:
    """A KnownHostsCommand that logs its arguments and prints *lines*."""
    log, printed = tmp_path / "invocations", tmp_path / "printed"
    printed.write_text(lines)
    script = tmp_path / "known-hosts-command"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\ncat {printed}\nexit {status}\n')
    script.chmod(0o755)
    return script, log


def test_known_hosts_command_runs_as_ssh_runs_it(client_home, remote_dir, make,
                                                  tmp_path):
    client_home.known_hosts.write_text("")
    script, log = write_command(tmp_path, "".join(
        f"{line}\n" for line in client_home.sshd.known_hosts_lines(hashed=False)))
    command = f"{script} {TOKENS}"

    done = ssh(client_home, "-o", f"KnownHostsCommand={command}")
    assert done.returncode == 0, done.stderr
    by_ssh = log.read_text().splitlines()
    log.unlink()
    info(make, client_home, known_hosts_command=command)
    ours = log.read_text().splitlines()

    assert [line.split()[0] for line in by_ssh] == ["ORDER", "HOSTNAME"]
    assert ours == by_ssh
    assert client_home.known_hosts.read_text() == ""  # trusted, not recorded


def test_a_failing_known_hosts_command_stops_the_connection_as_in_ssh(
        client_home, remote_dir, make, tmp_path):
    script, _ = write_command(tmp_path, "", status=3)
    assert ssh(client_home, "-o", f"KnownHostsCommand={script} %H").returncode == 255
    with pytest.raises(HostKeyError, match="exit status 3"):
        info(make, client_home, known_hosts_command=f"{script} %H")
