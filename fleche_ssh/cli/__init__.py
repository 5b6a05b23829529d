"""The ``fleche-ssh`` command: ``demo`` shows the whole flow, ``check`` diagnoses a host.

Both commands are a table of steps run by one loop, :func:`run_steps`: each
step is announced before it runs (so that anything it asks or prints shows
up under its title), then reports what it found as ``(name, value)`` rows
and how long it took.  The first step that fails stops the run; its error
is printed with the fix.  fleche-ssh's own errors already end with what to
do, so a step's ``hint`` is only shown for other errors.

Nothing secret is printed: rows hold host names, paths, fingerprints,
method names and the remote cache's configuration, which the remote server
redacts itself.  The demo's one-time code is the exception by design: it
stands in for the code a phone would show.

Heavy imports (fleche, paramiko) happen inside the commands, so that
``fleche-ssh --version`` and ``--help`` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__

Rows = list[tuple[str, str]]

#: ``contains`` calls timed for the round-trip figure.
ROUND_TRIPS = 20
#: Bytes saved and loaded back for the throughput figure.
PAYLOAD_BYTES = 8 << 20
#: What the demo's function sleeps, standing in for an expensive computation.
DEMO_WORK_SECONDS = 1.0


@dataclass(frozen=True)
class Step:
    """One line of a command's table: a title, what to do, advice for foreign errors."""

    title: str
    run: Callable[[Any], Rows]
    hint: str = ""


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _say(text: str = "", indent: int = 0) -> None:
    pad = " " * indent
    print("\n".join(pad + line for line in text.splitlines()) if text else "", flush=True)


def _own_error(error: BaseException) -> bool:
    """True for errors that carry their own advice: fleche-ssh's and fleche's connection errors."""
    from fleche.remote import RemoteConnectionError

    from ..errors import ConfigError

    return isinstance(error, (RemoteConnectionError, ConfigError))


def run_steps(steps: Sequence[Step], state: Any) -> bool:
    """Run *steps* in order on *state*, printing rows and times; False at the first failure."""
    for number, step in enumerate(steps, 1):
        _say(f"[{number}/{len(steps)}] {step.title}")
        started = time.monotonic()
        try:
            rows = step.run(state)
        except Exception as error:
            _say(f"FAILED after {_duration(time.monotonic() - started)}", 4)
            _say(f"{type(error).__name__}: {error}", 6)
            if step.hint and not _own_error(error):
                _say(f"likely fix: {step.hint}", 6)
            skipped = ", ".join(s.title for s in steps[number:])
            if skipped:
                _say(f"not run: {skipped}", 4)
            return False
        width = max((len(name) for name, _ in rows), default=0)
        for name, value in rows:
            _say(f"{name.ljust(width)}  {value}", 4)
        _say(f"ok, took {_duration(time.monotonic() - started)}", 4)
    return True


# -- shared steps: connecting and asking the remote server ---------------------------------


def _session_rows(session: Any) -> Rows:
    return [
        ("host key", session.host_key),
        ("verified by", session.host_key_verified),
        ("methods offered", ", ".join(session.auth.offered) or "none"),
        ("methods used", ", ".join(session.auth.used)),
        ("cipher", session.transport.remote_cipher),
    ]


def _connect(state: Any) -> Rows:
    """Handshake, host key and login, pooled: the cache's own calls reuse this transport."""
    from ..ssh import session as sessions

    state.session = sessions.get_session(state.target, state.cache.login(state.target))
    return _session_rows(state.session)


#: How ``info()`` keys are shown.
_INFO_LABELS = {
    "python": "python", "fleche_version": "fleche", "cloudpickle_version": "cloudpickle",
    "hostname": "hostname", "pid": "pid", "cwd": "cwd", "cache": "cache",
    "read_only": "read only",
}


def _info_rows(info: dict[str, Any], keys: Sequence[str]) -> Rows:
    def shown(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    return [(_INFO_LABELS[key], shown(info.get(key))) for key in keys]


def _ask_server(keys: Sequence[str]) -> Callable[[Any], Rows]:
    """A step calling ``cache.info()`` (starting the remote server if needed), showing *keys*."""

    def step(state: Any) -> Rows:
        state.info = state.cache.info()
        return _info_rows(state.info, keys)

    return step


_SERVER_HINT = (
    "the remote python must have fleche and cloudpickle installed (--python / python=), "
    "and workdir must exist; try `ssh HOST PYTHON -m fleche remote --serve` by hand."
)


# -- fleche-ssh check ----------------------------------------------------------------------


@dataclass
class CheckState:
    """What ``check`` learns, step by step (mutable: each step fills in a field)."""

    cache: Any
    target: Any = None
    session: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def _resolve(state: CheckState) -> Rows:
    state.target = state.cache.target()
    return state.target.describe()


def _tcp(state: CheckState) -> Rows:
    from ..ssh import session as sessions

    with contextlib.closing(sessions.open_socket(state.target)) as sock:
        peer = sock.getpeername()
    return [("connected to", f"{peer[0]} port {peer[1]}")]


def _round_trip(state: CheckState) -> Rows:
    key = "0" * 64
    times = []
    for _ in range(ROUND_TRIPS):
        started = time.perf_counter()
        state.cache.contains(key)
        times.append(time.perf_counter() - started)
    return [
        (f"median of {ROUND_TRIPS} contains()", _duration(statistics.median(times))),
        ("fastest, slowest", f"{_duration(min(times))}, {_duration(max(times))}"),
    ]


def _rate(seconds: float) -> str:
    return f"{PAYLOAD_BYTES / seconds / 1e6:.1f} MB/s ({_duration(seconds)})"


def _throughput(state: CheckState) -> Rows:
    if state.info.get("read_only"):
        return [("skipped", "the remote cache is read-only: nothing can be saved to time")]
    # Always the same bytes: the remote stores them once, however often check runs.
    payload = bytes(range(256)) * (PAYLOAD_BYTES // 256)
    started = time.perf_counter()
    digest = state.cache._rpc("save_value", payload)
    up = time.perf_counter() - started
    started = time.perf_counter()
    back = state.cache.load_value(digest)
    down = time.perf_counter() - started
    if back != payload:
        raise ValueError(f"the value loaded back differs from the {PAYLOAD_BYTES} bytes saved")
    size = f"{PAYLOAD_BYTES >> 20} MiB"
    return [(f"upload {size}", _rate(up)), (f"download {size}", _rate(down))]


CHECK_STEPS: tuple[Step, ...] = (
    Step("resolve the host", _resolve,
         "check the host name and your ssh config (~/.ssh/config, or -F FILE)."),
    Step("TCP connect", _tcp),
    Step("SSH handshake, host key and login", _connect),
    Step("start the remote fleche server", _ask_server(list(_INFO_LABELS)), _SERVER_HINT),
    Step("round trip", _round_trip, "the remote cache failed; see its error above."),
    Step("throughput", _throughput, "the remote cache failed; see its error above."),
)


def _paramiko_layers(cache: Any) -> list[Any]:
    """The ParamikoCache layers of *cache*: itself, or the members of a stack or pool."""
    from ..cache import ParamikoCache

    if isinstance(cache, ParamikoCache):
        return [cache]
    members = getattr(cache, "stack", None) or getattr(cache, "caches", None) or ()
    return [layer for member in members for layer in _paramiko_layers(member)]


def _host_keys(args: argparse.Namespace) -> dict[str, Any]:
    """The cache keys ``check HOST`` takes from its options."""
    return {"python": args.python, "workdir": args.workdir, "cache_name": args.cache_name,
            "prompt": args.prompt}


def _caches_to_check(args: argparse.Namespace) -> list[Any]:
    from ..cache import ParamikoCache

    if args.host is not None:
        given = {key: value for key, value in _host_keys(args).items() if value is not None}
        return [ParamikoCache(host=args.host, ssh_options=args.ssh_options, **given)]
    import fleche.config

    from .. import plugin
    from ..errors import ConfigError

    plugin.install(fleche.config)
    cache = fleche.config.load_cache_config(args.config_cache)
    layers = _paramiko_layers(cache)
    if not layers:
        raise ConfigError(
            f"cache {args.config_cache!r} ({type(cache).__name__}) has no type = \"paramiko\" "
            f"layer to check. Is {args.config_cache!r} defined in the fleche.toml nearest to "
            f"{os.getcwd()}?"
        )
    return layers


def check(args: argparse.Namespace) -> int:
    """``fleche-ssh check``: every step of reaching a remote cache, with timings."""
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO if args.verbose == 1 else logging.DEBUG,
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # As under ``python -m``: a prompt = "module:function" may name a module of this directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        caches = _caches_to_check(args)
    except Exception as error:
        _say(f"FAILED: {type(error).__name__}: {error}")
        return 1
    passed = 0
    for number, cache in enumerate(caches, 1):
        layer = f" (layer {number} of {len(caches)})" if len(caches) > 1 else ""
        _say(f"fleche-ssh check {cache.host}{layer}")
        try:
            passed += run_steps(CHECK_STEPS, CheckState(cache))
        finally:
            cache.close()
        _say()
    if passed == len(caches):
        _say(f"All checks passed for {', '.join(c.host for c in caches)}.")
        return 0
    _say(f"{len(caches) - passed} of {len(caches)} checked cache(s) failed; see above.")
    return 1


# -- fleche-ssh demo -----------------------------------------------------------------------


def _slow_square(x: int) -> int:
    """Stands in for an expensive computation."""
    time.sleep(DEMO_WORK_SECONDS)
    return x * x


@dataclass
class DemoState:
    """The demo's throwaway world: files, server, cache (mutable: filled in step by step)."""

    resources: contextlib.ExitStack
    interactive: bool
    code: str = ""
    cache: Any = None
    target: Any = None
    session: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    function: Any = None
    results: list[float] = field(default_factory=list)


def _private_file(path: str, data: bytes) -> None:
    """Write *data* to a new file only the user can read (ssh refuses group-readable keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _client_key(path: str) -> Any:
    """A fresh Ed25519 key in OpenSSH format at *path* (mode 600); returns it for paramiko."""
    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    )
    _private_file(path, pem)
    return paramiko.Ed25519Key.from_private_key_file(path)


def _show_code(interactive: bool, code: str) -> None:
    """The server's ``on_code_requested``: show the code as a phone would."""
    _say(f"Your one-time code is {code}", 4)
    if interactive:
        _say("Type it at the prompt below (what you type is not shown).", 4)


def _code_handler(state: DemoState) -> Any:
    """``auto`` at a terminal (the user types the code, unechoed); else answer it ourselves."""
    from ..prompts import auto

    if state.interactive:
        return lambda title, instructions, prompts: auto(
            title, instructions, [(" " * 4 + text, echo) for text, echo in prompts])

    def answer(title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        _say("stdin is not a terminal: answering the one-time code for you", 4)
        return [state.code for _ in prompts]

    return answer


def _demo_toml(workdir: str) -> str:
    """The remote fleche.toml: an on-disk cache in *workdir*, nothing merged from above it."""
    root = json.dumps(os.path.join(workdir, "cache"))
    return (f'[default]\ncache = "demo"\nroot = true\n\n'
            f'[demo]\ntemplate = "cloudpickle"\nroot = {root}\n')


def _set_up(state: DemoState) -> Rows:
    import getpass
    import secrets
    import tempfile

    from ..cache import ParamikoCache
    from ..demo.server import LoopbackServer
    from ..ssh import session as sessions
    from ..ssh.hostkeys import fingerprint

    tmp = state.resources.enter_context(tempfile.TemporaryDirectory(prefix="fleche-ssh-demo-"))
    paths = {name: os.path.join(tmp, name)
             for name in ("id_ed25519", "known_hosts", "ssh_config", "remote")}
    key = _client_key(paths["id_ed25519"])
    state.code = f"{secrets.randbelow(10**6):06d}"
    show_code = functools.partial(_show_code, state.interactive)
    server = state.resources.enter_context(LoopbackServer(
        authorized_key=key, one_time_code=state.code, on_code_requested=show_code))
    _private_file(paths["known_hosts"], f"{server.known_hosts_line()}\n".encode())
    _private_file(paths["ssh_config"], b"")
    os.mkdir(paths["remote"])
    with open(os.path.join(paths["remote"], "fleche.toml"), "w", encoding="utf-8") as f:
        f.write(_demo_toml(paths["remote"]))
    state.cache = ParamikoCache(
        host="127.0.0.1", port=server.port, user=getpass.getuser(),
        identity_file=(paths["id_ed25519"],), identities_only=True,
        # An empty file stands for "no system-wide known_hosts": only the pin counts.
        known_hosts_file=(paths["known_hosts"],), global_known_hosts_file=(os.devnull,),
        strict_host_key_checking="yes", config_file=paths["ssh_config"],
        python=sys.executable, workdir=paths["remote"], prompt=_code_handler(state),
    )
    # Unwound in reverse: the cache's channels, then the transport, then the server.
    state.resources.callback(sessions.close_all)
    state.resources.callback(state.cache.close)
    state.target = state.cache.target()
    return [
        ("server", f"127.0.0.1 port {server.port} (this machine only, removed at the end)"),
        ("server host key", f"{server.host_key.get_name()} {fingerprint(server.host_key)}"),
        ("pinned in", paths["known_hosts"]),
        ("client key", f"{paths['id_ed25519']} (Ed25519, mode 600)"),
        ("remote workdir", f"{paths['remote']} (its fleche.toml keeps the cache on disk)"),
        ("login", "public key, then a one-time code (as on HPC logins with 2FA)"),
    ]


def _timed_call(state: DemoState, where: str) -> Rows:
    import fleche

    started = time.perf_counter()
    with fleche.cache(state.cache):
        result = state.function(7)
    took = time.perf_counter() - started
    state.results.append(took)
    return [("result", f"slow_square(7) = {result}"), ("where", where)]


def _first_call(state: DemoState) -> Rows:
    import fleche

    state.function = fleche.fleche(_slow_square)
    return _timed_call(state, "computed here, result saved to the remote cache")


def _second_call(state: DemoState) -> Rows:
    return _timed_call(state, "served by the remote cache, not computed again")


DEMO_STEPS: tuple[Step, ...] = (
    Step("set up a throwaway SSH server, keys and remote workdir", _set_up),
    Step("connect: host key, public key, one-time code", _connect),
    Step("start the remote fleche server", _ask_server(("python", "fleche_version", "pid")),
         _SERVER_HINT),
    Step(f"first call: slow_square(7) sleeps {DEMO_WORK_SECONDS:g} s", _first_call),
    Step("second call: slow_square(7) again", _second_call),
    Step("ask the remote server about itself: cache.info()",
         _ask_server(("hostname", "pid", "cwd", "cache"))),
)

_REAL_HOST = """\
To use a real host, put this in your fleche.toml:

    [default]
    cache = "remote"

    [remote]
    type = "paramiko"
    host = "login.example.org"    # or an alias from ~/.ssh/config
    python = "python3"            # a python with fleche installed, on the remote
    workdir = "~/project"         # where the remote fleche.toml lives

then check it with: fleche-ssh check --cache remote"""


def demo(args: argparse.Namespace) -> int:
    """``fleche-ssh demo``: a cache behind a throwaway SSH server on this machine."""
    interactive = sys.stdin is not None and sys.stdin.isatty()
    _say("fleche-ssh demo: a function cached on a remote fleche server over SSH.")
    _say("The 'remote' is a throwaway SSH server on 127.0.0.1; everything is removed at the end.")
    if interactive:
        _say("You will type a one-time code, as with two-factor logins.")
    _say()
    try:
        with contextlib.ExitStack() as resources:
            state = DemoState(resources=resources, interactive=interactive)
            ok = run_steps(DEMO_STEPS, state)
    except Exception as error:  # a failure while cleaning up
        _say(f"FAILED: {type(error).__name__}: {error}")
        return 1
    if not ok:
        return 1
    first, second = state.results
    _say()
    _say(f"The second call took {_duration(second)} instead of {_duration(first)}: its result "
         f"came from the remote cache.")
    _say(_REAL_HOST)
    return 0


# -- command line --------------------------------------------------------------------------


class _SshOption(argparse.Action):
    """Collect ``-o/-p/-l/-i/-F`` in the order given, as ``ssh_options``."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), option_string, values])


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="fleche-ssh",
        description="Reach a remote fleche cache over SSH with Paramiko.",
    )
    top.add_argument("--version", action="version", version=f"fleche-ssh {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "demo", help="watch a cached function go through a throwaway SSH server on this machine",
        description="Start a throwaway SSH server on 127.0.0.1 and use it as a remote cache.",
    ).set_defaults(func=demo)
    sub = commands.add_parser(
        "check", help="check, step by step, that a host (or a configured cache) works",
        description="Resolve, connect, log in, start the remote fleche server and time it. "
                    "Exits 0 only if every step passed.",
    )
    sub.set_defaults(func=check, ssh_options=[])
    sub.add_argument("host", nargs="?", help="host name, user@host or ~/.ssh/config alias")
    sub.add_argument("--cache", dest="config_cache", metavar="NAME",
                     help="check cache NAME of the nearest fleche.toml instead of a HOST")
    sub.add_argument("--python", help="remote python (default: python3)")
    sub.add_argument("--workdir", help="remote directory to start the server in")
    sub.add_argument("--cache-name", help="named cache of the remote fleche.toml")
    sub.add_argument("-v", "--verbose", action="count", default=0,
                     help="log to stderr: -v connections, logins and the remote server's "
                          "stderr; -vv everything, Paramiko's protocol messages included")
    sub.add_argument("--prompt", metavar="HANDLER",
                     help="who answers login questions: auto (the default: this terminal), "
                          "none, or module:function, as the prompt key of the cache")
    for flag, meta in (("-o", "KEYWORD=VALUE"), ("-p", "PORT"), ("-l", "USER"),
                       ("-i", "IDENTITY_FILE"), ("-F", "CONFIG_FILE")):
        sub.add_argument(flag, dest="ssh_options", action=_SshOption, metavar=meta,
                         help=f"as for ssh {flag}")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    ssh = parser()
    args = ssh.parse_args(argv)
    if args.func is check and (args.host is None) == (args.config_cache is None):
        ssh.error("check needs either HOST or --cache NAME")
    if args.func is check and args.config_cache and (
        args.ssh_options or any(value is not None for value in _host_keys(args).values())
    ):
        ssh.error("with --cache, the settings come from fleche.toml: drop the HOST options")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _say("\ninterrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
