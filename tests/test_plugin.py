"""The bridge into stock fleche: ``type = "paramiko"`` works with nothing but ``import fleche``.

What runs at interpreter start-up is checked in fresh interpreters, since
this test process has long since imported everything.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import fleche.caches
import fleche.config
import pytest

import fleche_ssh
from fleche_ssh import ParamikoCache, _startup, plugin
from fleche_ssh.errors import ConfigError

FLECHE_TOML = """\
[default]
cache = "solo"
root = true

[solo]
type = "paramiko"
host = "alice@hpc.example.org"
port = 2222
identity_file = ["~/.ssh/id_hpc", "~/.ssh/id_backup"]
strict_host_key_checking = "accept-new"
ssh_options = ["-o", "ControlMaster=auto"]
channels = 3

[[shared]]
template = "memory"

[[shared]]
type = "paramiko"
host = "bigpc"
cache_name = "shared"
python = "/opt/venv/bin/python"
workdir = "~/project"
"""

# Run in a fresh interpreter that only ever imports fleche.
LOAD_FROM_TOML = """\
import json, socket, sys

def refuse(*args, **kwargs):
    raise AssertionError("something tried to connect")

socket.create_connection = refuse
socket.socket.connect = refuse
socket.socket.connect_ex = refuse

import fleche
import fleche.config

solo = fleche.config.load_cache_config("solo")
default = fleche.config.load_cache_config()
shared = fleche.config.load_cache_config("shared")
print(json.dumps({
    "solo_type": type(solo).__module__ + "." + type(solo).__qualname__,
    "solo": fleche.config.cache_to_config(solo),
    "default_is_solo": default is solo,
    "shared_type": type(shared).__qualname__,
    "shared_layers": [type(c).__qualname__ for c in shared.stack],
    "shared": fleche.config.cache_to_config(shared),
}))
"""


def run_python(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder with a fleche.toml that stops fleche's config walk (``root = true``)."""
    home = tmp_path / "home"
    project = home / "project"
    project.mkdir(parents=True)
    (project / "fleche.toml").write_text(FLECHE_TOML)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return project


def test_import_fleche_alone_builds_paramiko_caches_without_connecting(project):
    done = run_python("-c", LOAD_FROM_TOML, cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    loaded = json.loads(done.stdout)

    assert loaded["solo_type"] == "fleche_ssh.cache.ParamikoCache"
    assert loaded["solo"] == {
        "type": "paramiko",
        "host": "alice@hpc.example.org",
        "port": 2222,
        "identity_file": ["~/.ssh/id_hpc", "~/.ssh/id_backup"],
        "strict_host_key_checking": "accept-new",
        "ssh_options": ["-o", "ControlMaster=auto"],
        "channels": 3,
    }
    assert loaded["default_is_solo"] is True
    assert loaded["shared_type"] == "CacheStack"
    assert loaded["shared_layers"] == ["Cache", "ParamikoCache"]
    assert loaded["shared"][1] == {"type": "paramiko", "host": "bigpc", "cache_name": "shared",
                                   "python": "/opt/venv/bin/python", "workdir": "~/project"}


def test_import_fleche_does_not_import_paramiko():
    done = run_python("-c", textwrap.dedent("""\
        import sys, fleche, fleche.config
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("paramiko", "fleche_ssh")))
        print(getattr(fleche.config.cache_from_config, "__wrapped__", None) is not None)
    """))
    assert done.returncode == 0, done.stderr
    modules, bridged = done.stdout.splitlines()
    assert modules == str(["fleche_ssh", "fleche_ssh._startup", "fleche_ssh._version",
                           "fleche_ssh.plugin"])
    assert bridged == "True"


def _import_tree(stderr: str) -> list[tuple[int, int, str]]:
    """``-X importtime`` lines as (depth, cumulative microseconds, module)."""
    rows = []
    for line in stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if found:
            rows.append((len(found.group(2)), int(found.group(1)), found.group(3)))
    return rows


def _subtree(rows: list[tuple[int, int, str]], name: str) -> set[str]:
    """*name* and everything imported while importing it (listed just before it, deeper)."""
    index = next(i for i, row in enumerate(rows) if row[2] == name)
    depth = rows[index][0]
    found = {name}
    for row in reversed(rows[:index]):
        if row[0] <= depth:
            break
        found.add(row[2])
    return found


def test_start_up_imports_only_three_tiny_modules():
    done = run_python("-X", "importtime", "-c", "pass")
    assert done.returncode == 0, done.stderr
    rows = _import_tree(done.stderr)
    imported = {name for _, _, name in rows}

    assert not any(name.split(".")[0] == "paramiko" for name in imported)
    assert {n for n in imported if n.split(".")[0] == "fleche_ssh"} == {
        "fleche_ssh", "fleche_ssh._version", "fleche_ssh._startup"}
    # Nothing else is imported on fleche-ssh's account.
    assert _subtree(rows, "fleche_ssh._startup") == {
        "fleche_ssh", "fleche_ssh._version", "fleche_ssh._startup"}


def test_a_program_that_never_imports_fleche_sees_nothing():
    done = run_python("-W", "error", "-c", textwrap.dedent("""\
        import json, sys
        finders = [type(f).__module__ + "." + type(f).__qualname__ for f in sys.meta_path]
        print(json.dumps({"finders": finders,
                          "fleche": sorted(m for m in sys.modules if m.startswith("fleche"))}))
    """))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    seen = json.loads(done.stdout)
    assert seen["finders"][0] == "fleche_ssh._startup.ConfigWatcher"
    assert seen["fleche"] == ["fleche_ssh", "fleche_ssh._startup", "fleche_ssh._version"]


@pytest.mark.parametrize("name", ["json", "fleche", "fleche.caches", "fleche_config", "config"])
def test_the_watcher_answers_for_nothing_but_fleche_config(name):
    assert _startup.ConfigWatcher().find_spec(name) is None


def test_the_watcher_answers_for_fleche_config():
    spec = _startup.ConfigWatcher().find_spec("fleche.config", fleche.__path__)
    assert spec is not None and spec.origin == fleche.config.__file__


def test_fleche_imported_before_the_start_up_hook_is_bridged_at_once():
    """As when an embedding application imports fleche before site's .pth files run."""
    done = run_python("-c", textwrap.dedent("""\
        import fleche_ssh._startup as startup
        startup.remove_watcher()
        import fleche.config
        before = fleche.config.cache_from_config
        startup.activate()
        print(before is fleche.config.cache_from_config.__wrapped__)
    """))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


# --- the bridge itself, in this process (fleche.config was bridged at import) -----------


def test_this_process_was_bridged_at_import():
    assert getattr(fleche.config, plugin.INSTALLED) is True
    assert fleche.config.cache_from_config.__wrapped__ is not None


@pytest.mark.parametrize("keys", [
    {},
    {"port": 2222, "user": "alice", "hostname": "10.0.0.7"},
    {"identity_file": ("~/.ssh/a", "~/.ssh/b"), "identities_only": True},
    {"known_hosts_file": ("/kh/one", "/kh two"), "strict_host_key_checking": "accept-new",
     "hash_known_hosts": True},
    {"ssh_options": ("-p", "2200", "-o", "ControlMaster=auto"), "config_file": "/etc/cfg"},
    {"cache_name": "shared", "python": "/opt/py", "workdir": "~/w",
     "setup_commands": ("module load python",)},
    {"connect_timeout": 7.5, "batch_mode": True, "prompt": "none", "auth_timeout": 60.0,
     "channels": 4},
])
def test_config_round_trip(keys):
    cache = ParamikoCache(host="hpc", **keys)
    config = fleche.config.cache_to_config(cache)

    assert config["type"] == "paramiko"
    assert config == {"type": "paramiko", "host": "hpc",
                      **{k: list(v) if isinstance(v, tuple) else v for k, v in keys.items()}}
    assert fleche.config.cache_from_config(config) == cache


def test_stack_round_trip():
    stack = fleche.config.cache_from_config(
        [{"template": "memory"}, {"type": "paramiko", "host": "hpc", "port": 2222}])
    assert isinstance(stack, fleche.caches.CacheStack)
    assert stack.stack[1] == ParamikoCache(host="hpc", port=2222)
    assert fleche.config.cache_from_config(fleche.config.cache_to_config(stack)) == stack


def test_stock_ssh_type_is_still_fleches():
    from fleche.remote import SshCache

    built = fleche.config.cache_from_config({"type": "ssh", "host": "h"})
    assert type(built) is SshCache
    assert fleche.config.cache_to_config(built) == {"type": "ssh", "host": "h"}


def test_unknown_type_lists_the_installed_types():
    with pytest.raises(ConfigError) as raised:
        fleche.config.cache_from_config({"type": "sshh", "host": "h"})
    message = str(raised.value)
    assert "'sshh'" in message
    assert re.search(r"installed types: .*paramiko", message)
    assert re.search(r"installed types: .*ssh", message)


def test_unknown_key_is_named_with_the_valid_ones():
    with pytest.raises(ConfigError) as raised:
        fleche.config.cache_from_config({"type": "paramiko", "host": "h", "prot": 22})
    message = str(raised.value)
    assert "prot" in message
    valid = message.split("valid keys: ")[1].split(", ")
    assert {"host", "port", "identity_file", "channels", "prompt"} <= set(valid)


def _fake_config_module(source: str) -> types.ModuleType:
    module = types.ModuleType("fake_fleche_config")
    exec(compile(textwrap.dedent(source), "<fake fleche.config>", "exec"), module.__dict__)
    return module


STOCK_FUNCTIONS = """\
def cache_from_config(d):
    return ("stock", d)

def cache_to_config(c):
    return ("stock", c)
"""


def test_steps_aside_when_fleche_reads_the_group_itself():
    module = _fake_config_module(STOCK_FUNCTIONS + textwrap.dedent("""\
        def _plugin_types():
            def load():
                from importlib.metadata import entry_points
                return entry_points(group="fleche.caches")
            return load()
    """))
    original = module.cache_from_config

    plugin.install(module)

    assert module.cache_from_config is original
    assert not hasattr(module, plugin.INSTALLED)


def test_install_is_idempotent():
    module = _fake_config_module(STOCK_FUNCTIONS)
    original = module.cache_from_config

    plugin.install(module)
    bridged = module.cache_from_config
    plugin.install(module)

    assert bridged is not original and bridged.__wrapped__ is original
    assert module.cache_from_config is bridged
    assert module.cache_from_config({"values": 1}) == ("stock", {"values": 1})
    assert isinstance(module.cache_from_config({"type": "paramiko", "host": "h"}), ParamikoCache)


# --- ParamikoCache as a configuration value ---------------------------------------------


def answer_nothing(title, instructions, prompts):
    return []


@pytest.mark.parametrize("keys", [
    {},
    {"port": 2222, "identity_file": ("~/.ssh/a",), "channels": 2},
    {"prompt": answer_nothing},
    {"prompt": "fleche_ssh.prompts:none"},
])
def test_pickles_as_its_configuration(keys):
    cache = ParamikoCache(host="hpc", **keys)

    copy = pickle.loads(pickle.dumps(cache))

    assert copy == cache
    assert copy.config() == cache.config()
    assert copy._conn is not cache._conn  # a fresh, unconnected connection object


@pytest.mark.parametrize("channels", [0, -1, 1.5, "2"])
def test_invalid_channels(channels):
    with pytest.raises(ConfigError, match=r"channels = .*expected a whole number >= 1"):
        ParamikoCache(host="hpc", channels=channels)


@pytest.mark.parametrize(("prompt", "expected"), [
    ("sometimes", "expected 'auto', 'none' or 'module:function'"),
    ("no_such_module_xyz:handler", "cannot import it"),
    ("json:no_such_function", "cannot import it"),
    ("json:__doc__", "is not callable"),
])
def test_invalid_prompt(prompt, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        ParamikoCache(host="hpc", prompt=prompt)


def test_invalid_ssh_options_are_refused_when_built():
    with pytest.raises(ConfigError, match="-L"):
        ParamikoCache(host="hpc", ssh_options=("-L", "8080:localhost:80"))


def test_lazy_exports():
    assert fleche_ssh.ParamikoCache is ParamikoCache
    assert fleche_ssh.errors.ConfigError is ConfigError
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fleche_ssh.nope  # noqa: B018
