"""Careless and hostile input: configuration that is wrong, and files that are not what they seem.

* Any ``fleche.toml`` entry, ``ssh_options`` list, ssh_config text (or
  bytes) and host string either works or is refused with a
  :class:`~fleche_ssh.errors.ConfigError` naming the key, option, file and
  line, or value at fault; building a cache never connects (property-based,
  with Hypothesis).
* Values that are not documented as commands (``workdir``, ``python``,
  ``cache_name``, ``host``) never run anything on either shell, whatever
  quotes, ``;``, ``$()``, backticks or newlines they hold: proved with
  marker files against the real sshd.
* known_hosts and ssh_config paths that are huge, binary, a directory, a
  named pipe without a writer, or a link to ``/dev/zero`` or
  ``/dev/urandom`` cost bounded time and memory: an ssh_config is refused,
  a known_hosts file is skipped with a warning.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shlex
import socket
import time
import tracemalloc
from dataclasses import fields
from pathlib import Path

import fleche.config
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fleche_ssh import ParamikoCache
from fleche_ssh.config.options import OPTIONS
from fleche_ssh.errors import ConfigError, HostNotFound, RemoteCommandError, UnknownHostKey
from fleche_ssh.ssh import hostkeys

pytestmark = pytest.mark.timeout(120)

# The fixtures these tests use hold for every example: a home nothing writes to but
# the config file each example replaces, and a network that refuses.
PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture
def offline(tmp_path, monkeypatch, pool):
    """An empty ``$HOME``, and a network that fails any test that tries to connect."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to connect: {args}")

    def no_such_name(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(socket, "create_connection", refuse)
    # CanonicalizeHostname looks names up while resolving, as ssh -G does: offline, none is found.
    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    yield home
    assert len(pool) == 0


# -- strategies ------------------------------------------------------------------------------

KEYS = [f.name for f in fields(ParamikoCache) if f.init]
#: Words that mean something somewhere, so examples reach past the first check.
WORDS = ["yes", "no", "ask", "accept-new", "none", "22", "0", "-1", "65536", "1m", "1h30m",
         "2.5", "nan", "~", "~/.ssh/id_ed25519", "%h", "%p", "%r", "%z", "%", "a b", "'", '"',
         "\\", "#", "=", "*", "!x", "user@host", "host:22", "ssh://u@h:2", "a,b", "", " "]
words = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))
toml_scalars = st.one_of(words, st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans(),
                         st.datetimes())
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
entries = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10)),
                          toml_values, max_size=6)
hosts = st.one_of(st.sampled_from(["testhost", "user@host", "a@", "@b", "-oProxyCommand=x",
                                   "h;id", "[::1]", "%h", "x$(id)", "a`b`", "é.example"]),
                  st.text(max_size=30))

FLAGS = ["-p", "-l", "-i", "-J", "-F", "-o", "-C", "-T", "-x", "-v", "-L", "-4", "--", "-",
         "-oPort=22", "-p2222", "-lroot"]
KEYWORDS = [*(o.keyword for o in OPTIONS), "ControlMaster", "LogLevel", "Bogus", ""]
option_words = st.one_of(
    st.sampled_from(FLAGS),
    st.builds(lambda k, sep, v: f"{k}{sep}{v}", st.sampled_from(KEYWORDS),
              st.sampled_from(["=", " ", "", " = "]), words),
    st.text(max_size=12),
)

CONFIG_KEYWORDS = [*KEYWORDS, "Host", "Match", "Include", "SendEnv", "CanonicalizeHostname"]
MATCH_WORDS = ["all", "host", "user", "originalhost", "localuser", "canonical", "final",
               "!host", "bogus", "*", "testhost", "a,b", "'x"]  # never exec: it runs commands
config_lines = st.one_of(
    st.builds(lambda k, sep, v: f"{k}{sep}{v}", st.sampled_from(CONFIG_KEYWORDS),
              st.sampled_from([" ", "=", "\t", " = ", ""]), words),
    st.builds(lambda ws: "Match " + " ".join(ws), st.lists(st.sampled_from(MATCH_WORDS),
                                                          max_size=4)),
    st.text(max_size=40),
)
config_texts = st.lists(config_lines, max_size=12).map("\n".join)


def runs_nothing(text: str) -> bool:
    """Free text must not reach Match exec or Include a path outside the empty home."""
    lowered = text.lower()
    return "exec" not in lowered and not any(
        line.strip().lower().startswith("include") and "/" in line
        for line in lowered.splitlines())


# -- any configuration is built or refused, never crashes, never connects -------------------


def refusal(entry: dict) -> str | None:
    """The ConfigError message *entry* is refused with, or None if it builds and resolves."""
    try:
        cache = fleche.config.cache_from_config(entry)
        assert cache.host == entry["host"]
        cache.target()
    except ConfigError as e:
        return str(e)
    except HostNotFound as e:
        # A lookup the entry asked for (CanonicalizeHostname), which fails offline.
        assert "key canonicalize_" in str(e), str(e)
        return str(e)
    return None


def at_fault(entry: dict, message: str) -> list[str]:
    """The keys without which *entry* is no longer refused with *message*.

    Each key is left out in turn (``host`` is set to a valid one instead, as a
    cache needs one); a key is at fault if the refusal then changes.
    """
    keys = [k for k in entry if k != "type"] + ([] if "host" in entry else ["host"])
    faults = []
    for key in keys:
        changed = {k: v for k, v in entry.items() if k != key}
        if key == "host":
            changed["host"] = "testhost"
        if refusal(changed) != message:
            faults.append(key)
    return faults


@PROPERTY
@given(entry=entries, host=st.one_of(st.none(), hosts))
def test_any_fleche_toml_entry_builds_or_is_refused_naming_the_key(offline, entry, host):
    entry = {**entry, "type": "paramiko"}
    if host is not None:
        entry["host"] = host
    message = refusal(entry)
    if message is not None:
        faults = at_fault(entry, message)
        assert faults, message
        for key in faults:  # named as a word, not as part of another one
            assert re.search(rf"(?<!\w){re.escape(key)}(?!\w)", message), (key, message)


@PROPERTY
@given(options=st.lists(option_words, max_size=6))
def test_any_ssh_options_are_taken_or_refused_naming_them(offline, options):
    try:
        ParamikoCache(host="testhost", ssh_options=options).target()
    except ConfigError as e:
        message = str(e)
        assert ("ssh_options" in message or "ProxyJump" in message
                or any(o.strip() and o.strip() in message for o in options)), message


@PROPERTY
@given(content=st.one_of(config_texts.filter(runs_nothing).map(str.encode),
                         st.binary(max_size=300)),
       host=st.sampled_from(["testhost", "other", "u@testhost", "1.2.3.4"]))
def test_any_ssh_config_resolves_or_is_refused_naming_the_file(offline, content, host):
    path = offline / "ssh_config"
    path.write_bytes(content)
    try:
        ParamikoCache(host=host, config_file=str(path)).target()
    except (ConfigError, HostNotFound) as e:  # not found: a Canonicalize* line's lookup
        assert str(path) in str(e), str(e)


@PROPERTY
@given(host=hosts)
def test_any_host_string_resolves_or_is_refused_naming_it(offline, host):
    assume(host)
    try:
        target = ParamikoCache(host=host, config_file="none").target()
    except ConfigError as e:
        assert repr(host) in str(e), str(e)
    else:
        assert target.alias == host.rpartition("@")[2]


def test_a_wrong_type_names_the_key_and_what_it_takes(offline):
    # A string where a list belongs would otherwise run one command per character.
    with pytest.raises(ConfigError, match=r"setup_commands = 'module load python': expected "
                                          r"a list of shell commands"):
        fleche.config.cache_from_config(
            {"type": "paramiko", "host": "testhost", "setup_commands": "module load python"})
    with pytest.raises(ConfigError, match=r"port = \[22\]: expected a single value"):
        fleche.config.cache_from_config({"type": "paramiko", "host": "testhost", "port": [22]})
    with pytest.raises(ConfigError, match=r"'paramiko' needs the key\(s\) host"):
        fleche.config.cache_from_config({"type": "paramiko", "port": 22})


# -- values that are not commands never run ------------------------------------------------


def payloads(markers: Path) -> list[str]:
    """Ways a value could escape its quoting; each would create its own marker file."""
    return [
        f"$(touch {markers}/dollar)",
        f"`touch {markers}/backtick`",
        f";touch {markers}/semicolon;",
        f"'; touch {markers}/quote; '",
        f'"; touch {markers}/double-quote; "',
        f"\ntouch {markers}/newline\n",
        f" && touch {markers}/and",
        f" | touch {markers}/pipe",
        f"' $(touch {markers}/quoted-dollar) '",
    ]


#: For each value that names a path, the key it goes in, its prefix, and what the remote
#: shell says when no path of that exact name exists (the test sshd logs in as root).
MISSING_PATHS = {
    "workdir": ("workdir", "{remote_dir}/", "cd: {remote_dir}/{payload}"),
    "home-workdir": ("workdir", "~/", "cd: {home}/{payload}"),
    "python": ("python", "{tmp_path}/py", "{tmp_path}/py{payload}"),
}
#: How the remote command ends when the directory is missing (cd) or the command is.
EXIT_STATUS = {"workdir": "exited with status 1 before the server started",
               "python": "was not found (exit status 127)"}


@pytest.mark.parametrize("key", [*MISSING_PATHS, "cache_name"])
def test_values_that_are_not_commands_stay_inert(make, tmp_path, remote_dir, key):
    markers = tmp_path / "markers"
    markers.mkdir()
    if key == "cache_name":
        # All in one: the server starts and serves an empty cache of that name, which
        # shows the value arrived whole.
        value = "".join(payloads(markers))
        assert make(cache_name=value).info()["cache_name"] == value
    else:
        # One value each: the remote shell looks for a path of exactly that name, which
        # does not exist, and says so on stderr.
        name, prefix, path = MISSING_PATHS[key]
        places = {"remote_dir": remote_dir, "tmp_path": tmp_path,
                  "home": os.path.expanduser("~root")}
        for payload in payloads(markers):
            with pytest.raises(RemoteCommandError) as failed:
                make(**{name: prefix.format(**places) + payload}).info()
            message = str(failed.value)
            assert EXIT_STATUS[name] in message, message
            stderr = message.partition("\nremote stderr (last ")[2]
            said = path.format(**places, payload=payload)
            if name == "workdir" and "\n" in said:  # how bash's cd prints such a name
                said = said.replace("cd: ", "cd: $'").replace("\n", "\\n") + "'"
            assert f"{said}: No such file or directory" in stderr, message
    assert sorted(p.name for p in markers.iterdir()) == []


@pytest.mark.parametrize("key", ["workdir", "python"])
def test_such_values_reach_the_remote_verbatim(make, tmp_path, remote_dir, remote_python, key):
    markers = tmp_path / "markers"
    markers.mkdir()
    hostile = Path(f"{remote_dir}/{''.join(payloads(markers))}")
    if key == "workdir":
        hostile.mkdir(parents=True)
        (hostile / "fleche.toml").write_text((remote_dir / "fleche.toml").read_text())
        assert make(workdir=str(hostile)).info()["cwd"] == str(hostile)
    else:
        # A script, not a symlink: started through a link outside its venv, Python
        # would miss the venv's pyvenv.cfg and run as the base interpreter.  The script
        # writes down the name the remote shell ran it by, then runs the real one.
        invoked_as = tmp_path / "invoked-as"
        hostile.parent.mkdir(parents=True, exist_ok=True)
        hostile.write_text(f"#!/bin/sh\nprintf '%s' \"$0\" > {shlex.quote(str(invoked_as))}\n"
                           f'exec {shlex.quote(remote_python)} "$@"\n')
        hostile.chmod(0o700)
        assert make(python=str(hostile)).info()["python"] == remote_python
        assert invoked_as.read_text() == str(hostile)
    assert sorted(p.name for p in markers.iterdir()) == []


def test_a_host_cannot_smuggle_a_command_into_proxy_command(make, tmp_path):
    marker = tmp_path / "proxied"
    cache = make(host=f"x$(touch {marker})", proxy_command="nc %h %p")
    with pytest.raises(ConfigError, match="is not a valid SSH destination"):
        cache.info()
    assert not marker.exists()


# -- files that are not what they seem ------------------------------------------------------

HOSTILE_FILES = ["huge", "binary", "directory", "fifo", "dev-zero", "dev-urandom"]
#: Bounds for reading one hostile file.
QUICK = 3.0
SMALL = 4 << 20


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    """One of each: 50 MB of known_hosts lines, binary junk, a directory, a named pipe
    nobody writes to, and links to endless devices."""
    root = tmp_path_factory.mktemp("hostile-files")
    lines = "".join(f"{hostkeys.hash_name(f'node{i}.example')} ssh-ed25519 "
                    f"{base64.b64encode(os.urandom(51)).decode()}\n" for i in range(4000))
    with open(root / "huge", "w") as f:
        while f.tell() < 50 << 20:
            f.write(lines)
    (root / "binary").write_bytes(os.urandom(256 << 10) + b"\0")
    (root / "directory").mkdir()
    os.mkfifo(root / "fifo")
    (root / "dev-zero").symlink_to("/dev/zero")
    (root / "dev-urandom").symlink_to("/dev/urandom")
    return root


@contextlib.contextmanager
def measured():
    """Elapsed seconds and peak traced bytes of the block, as a dict filled on exit."""
    found: dict[str, float] = {}
    tracemalloc.start()
    started = time.monotonic()
    try:
        yield found
    finally:
        found["seconds"] = time.monotonic() - started
        found["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", HOSTILE_FILES)
def test_hostile_ssh_config_file_is_refused_quickly(offline, hostile_files, kind):
    path = hostile_files / kind
    with measured() as cost, pytest.raises(ConfigError) as refused:
        ParamikoCache(host="testhost", config_file=str(path)).target()
    assert cost["seconds"] < QUICK
    assert cost["peak"] < SMALL
    assert str(path) in str(refused.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_hostile_user_ssh_config_is_refused_quickly(offline, hostile_files, kind):
    user_config = offline / ".ssh" / "config"
    if kind == "fifo":
        os.mkfifo(user_config)
    else:
        user_config.mkdir()
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match=str(user_config)):
            ParamikoCache(host="testhost").target()
        assert time.monotonic() - started < QUICK
    finally:
        (user_config.rmdir if kind == "directory" else user_config.unlink)()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", HOSTILE_FILES)
def test_hostile_known_hosts_file_is_skipped(make, client_home, hostile_files, kind, caplog):
    path = hostile_files / kind
    cache = make(known_hosts_file=[str(path), str(client_home.known_hosts)])
    target = cache.target()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        types = hostkeys.known_key_types(target)
    assert time.monotonic() - started < QUICK
    with measured() as cost:  # apart: tracing allocations slows reading several times
        hostkeys.known_key_types(target)
    assert cost["peak"] < SMALL
    assert types  # the real file, listed after the hostile one, is still read
    said = " ".join(r.getMessage() for r in caplog.records)
    if kind == "huge":
        assert f"{path} is larger than 16 MiB; entries past that point are ignored" in said
    elif kind != "binary":
        assert f"{path} is not a regular file; skipped" in said

    started = time.monotonic()
    assert cache.contains("0" * 64) is False  # connects: verified against the real file
    assert time.monotonic() - started < 15


@pytest.mark.timeout(30)
def test_only_a_hostile_known_hosts_file_means_an_unknown_host(make, hostile_files):
    cache = make(known_hosts_file=str(hostile_files / "fifo"))
    started = time.monotonic()
    with pytest.raises(UnknownHostKey) as unknown:
        cache.info()
    assert time.monotonic() - started < QUICK * 2
    assert str(hostile_files / "fifo") in str(unknown.value)
