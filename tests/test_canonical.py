"""CanonicalizeHostname against ``ssh -G``, both resolving names through one hosts file.

ssh and fleche-ssh each run in a private mount namespace whose
``/etc/hosts`` is :data:`HOSTS` and whose ``/etc/nsswitch.conf`` reads
only files, so a name resolves exactly when the test says so and no
lookup leaves the machine; nothing outside the namespace changes.
fleche-ssh runs there as a child Python resolving the host with the
default resolver, :func:`socket.getaddrinfo`.  The rules on their own are
tested with a resolver passed in.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import test_sshconfig
import test_target
from test_sshconfig import write

from fleche_ssh.config.target import resolve
from fleche_ssh.errors import HostNotFound

home = test_target.home
ssh_home = test_sshconfig.ssh_home
passwd_home = test_sshconfig.passwd_home

DATA = Path(__file__).parent / "data" / "canonical"
#: ssh looks each candidate up as a rooted name (``login1.cluster.example.org.``), which
#: the files backend matches only as written, so the names are listed both ways; the
#: first on a line is the canonical name a lookup reports (``data`` is an alias).
HOSTS = """\
127.0.0.1 localhost
192.0.2.10 login1.cluster.example.org login1.cluster.example.org.
192.0.2.11 login2.cluster.example.org login2.cluster.example.org.
192.0.2.12 real.storage.example.net data.cluster.example.org data.cluster.example.org.
"""
#: What some hosts settle on, so that the agreement is known to cover canonicalization.
SETTLED = {
    "login1": "login1.cluster.example.org", "LOGIN1": "login1.cluster.example.org",
    "data": "data.cluster.example.org", "alias-follow": "real.storage.example.net",
    "proxied": "login1", "proxied-always": "login1.cluster.example.org", "jumped": "login2",
    "unknown": "unknown",
}
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n"
#: Runs a command with /etc/passwd, /etc/hosts and /etc/nsswitch.conf replaced by the
#: three files given first, in a mount namespace that ends with the command.
WITH_FILES = ["unshare", "--mount", "sh", "-c",
              'mount --bind "$0" /etc/passwd && mount --bind "$1" /etc/hosts && '
              'mount --bind "$2" /etc/nsswitch.conf && shift 2 && exec "$@"']
FIELDS = ("hostname", "user", "port", "identitiesonly", "userknownhostsfile", "connecttimeout")
CHILD = """\
import json, sys
from fleche_ssh.config.target import resolve
try:
    t = resolve(sys.argv[2], config_file=sys.argv[1])
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
else:
    print(json.dumps({"hostname": t.hostname, "user": t.user, "port": str(t.port),
                      "identitiesonly": "yes" if t.identities_only else "no",
                      "userknownhostsfile": " ".join(t.known_hosts_files),
                      "connecttimeout": "none" if t.connect_timeout is None
                      else f"{t.connect_timeout:g}"}))
"""


def _cases(kind: str) -> list[str]:
    found = re.search(rf"^# {kind}: (.+)$", (DATA / "canonicalize.conf").read_text(),
                      re.MULTILINE)
    assert found, kind
    return found.group(1).split()


@pytest.fixture(scope="module")
def namespace_files(tmp_path_factory, ssh_home) -> list[str]:
    folder = tmp_path_factory.mktemp("resolver")
    (folder / "hosts").write_text(HOSTS)
    (folder / "nsswitch.conf").write_text(NSSWITCH)
    return [str(ssh_home[1]), str(folder / "hosts"), str(folder / "nsswitch.conf")]


def run(namespace_files, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WITH_FILES, *namespace_files, *argv], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def by_ssh(namespace_files, config: Path, host: str) -> dict[str, str] | None:
    done = run(namespace_files, ["ssh", "-G", "-F", str(config), host])
    if done.returncode != 0:
        return None
    printed = dict(line.partition(" ")[::2] for line in done.stdout.splitlines())
    return {field: printed[field] for field in FIELDS}


def by_fleche_ssh(namespace_files, config: Path, host: str) -> dict[str, str]:
    done = run(namespace_files, [sys.executable, "-c", CHILD, str(config), host])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("host", _cases("hosts"))
def test_canonical_names_agree_with_ssh(passwd_home, namespace_files, host):
    config = DATA / "canonicalize.conf"
    theirs = by_ssh(namespace_files, config, host)
    assert theirs is not None, f"ssh -G refused {host}"
    assert by_fleche_ssh(namespace_files, config, host) == theirs
    assert theirs["hostname"] == SETTLED.get(host, theirs["hostname"])


@pytest.mark.parametrize("host", _cases("refused"))
def test_names_ssh_cannot_resolve_are_refused(passwd_home, namespace_files, host):
    config = DATA / "canonicalize.conf"
    assert by_ssh(namespace_files, config, host) is None
    ours = by_fleche_ssh(namespace_files, config, host)
    assert ours["error"] == "HostNotFound", ours
    assert "Could not resolve host" in ours["message"]


def test_the_namespace_resolves_only_what_the_test_says(passwd_home, namespace_files):
    # The comparisons mean something only if both sides resolve through HOSTS.
    probe = "import socket; print(socket.getaddrinfo('login1.cluster.example.org', None)[0][4][0])"
    done = run(namespace_files, [sys.executable, "-c", probe])
    assert done.stdout.strip() == "192.0.2.10", done.stderr


# --- the rules, with a resolver the test passes in --------------------------------------


def resolver(known: dict[str, str]):
    """A getaddrinfo that knows *known* (name -> canonical name), and records each lookup."""
    asked: list[str] = []

    def getaddrinfo(name, port, family=0, type=0, proto=0, flags=0):
        asked.append(name)
        if name.rstrip(".") not in known:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, known[name.rstrip(".")],
                 ("192.0.2.1", 0))]

    getaddrinfo.asked = asked
    return getaddrinfo


def test_each_suffix_is_tried_in_order_and_the_first_that_resolves_wins(home):
    write(home / ".ssh" / "config",
          "CanonicalizeHostname yes\nCanonicalDomains a.example b.example c.example\n")
    lookup = resolver({"n1.b.example": "n1.b.example", "n1.c.example": "n1.c.example"})
    assert resolve("n1", getaddrinfo=lookup).hostname == "n1.b.example"
    assert lookup.asked == ["n1.a.example.", "n1.b.example."]


def test_names_with_more_dots_than_allowed_are_not_looked_up(home):
    write(home / ".ssh" / "config",
          "CanonicalizeHostname yes\nCanonicalDomains a.example\nCanonicalizeMaxDots 0\n")
    lookup = resolver({"n1.x.a.example": "n1.x.a.example"})
    assert resolve("n1.x", getaddrinfo=lookup).hostname == "n1.x"
    assert lookup.asked == []


def test_control_path_hashes_the_canonical_name(home):
    write(home / ".ssh" / "config",
          "CanonicalizeHostname yes\nCanonicalDomains a.example\nControlPath ~/cm-%h-%C\n")
    lookup = resolver({"n1.a.example": "n1.a.example"})
    canonical = resolve("n1", getaddrinfo=lookup)
    written = resolve("n1.a.example", getaddrinfo=lookup)
    assert canonical.control_paths == written.control_paths
    assert canonical.control_paths[0].startswith(f"{home}/cm-n1.a.example-")


def test_no_fallback_refuses_a_name_no_suffix_resolves(home):
    config = write(home / ".ssh" / "config", "CanonicalizeHostname yes\n"
                   "CanonicalDomains a.example\nCanonicalizeFallbackLocal no\n")
    with pytest.raises(HostNotFound) as refused:
        resolve("n1", getaddrinfo=resolver({}))
    assert f"CanonicalizeFallbackLocal is no ({config}:3;" in str(refused.value)
    assert f"CanonicalDomains suffix ({config}:2)" in str(refused.value)
