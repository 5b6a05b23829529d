"""``fleche-ssh check``: every step of reaching a remote cache, with timings.

It checks either one host given on the command line (with ``ssh``-like
options) or every ``type = "paramiko"`` layer of a cache in the nearest
``fleche.toml``, so that what is checked is what the user's code will use.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .steps import (
    INFO_LABELS,
    SERVER_HINT,
    Rows,
    Step,
    ask_server,
    connect,
    duration,
    run_steps,
    say,
)

#: ``contains`` calls timed for the round-trip figure.
ROUND_TRIPS = 20
#: Bytes saved and loaded back for the throughput figure.
PAYLOAD_BYTES = 8 << 20


@dataclass
class CheckState:
    """What ``check`` learns, step by step (mutable: each step fills in a field)."""

    cache: Any
    target: Any = None
    #: The live OpenSSH master the cache's channels go through, if there is one.
    master: Any = None
    session: Any = None
    info: dict[str, Any] = field(default_factory=dict)


class _Collected(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _resolve(state: CheckState) -> Rows:
    """The resolved target, and every keyword that applied but that fleche-ssh cannot act on.

    The latter are the log lines of :func:`~fleche_ssh.config.ignored.log_ignored`
    at info level and above (what ``ssh`` would have done differently), shown
    here whatever the log level, since they are the first suspects when
    ``ssh`` and fleche-ssh disagree.
    """
    handler = _Collected(logging.INFO)
    options_log = logging.getLogger("fleche_ssh.options")
    level = options_log.level
    options_log.addHandler(handler)
    if not options_log.isEnabledFor(logging.INFO):
        options_log.setLevel(logging.INFO)
    try:
        state.target = state.cache.target()
    finally:
        options_log.removeHandler(handler)
        options_log.setLevel(level)
    unsupported = [("not supported", r.getMessage().split(": ", 1)[-1]) for r in handler.records]
    return [*state.target.describe(), *unsupported]


def _master(state: CheckState) -> Rows:
    from ..wire.sources import live_master

    if not state.target.control_paths:
        return [("none", "no ControlPath: fleche-ssh logs in itself")]
    state.master = live_master(state.target)
    if state.master is None:
        return [("none listening at", " or ".join(state.target.control_paths)),
                ("so", "fleche-ssh logs in itself")]
    return [("through", f"OpenSSH master pid {state.master.pid} (ssh -O check)"),
            ("control socket", state.master.path),
            ("its connection", f"{state.target.label}, logged in by ssh: nothing to ask")]


def _unless_master(step: Step) -> Step:
    """*step*, skipped when another process holds the connection (it connected and logged in).

    That is a live OpenSSH master, or with ``control_persist`` the
    background holder: logging in here as well would ask a one-time code
    that the channel, going through the holder, never uses.
    """
    def run(state: CheckState) -> Rows:
        if state.master is not None:
            return [("skipped", f"the OpenSSH master (pid {state.master.pid}) is connected")]
        target = state.target
        if target.control_persist is not None and target.control_master != "no":
            return [("skipped", "control_persist: the background fleche-ssh process logs in")]
        return step.run(state)

    return Step(step.title, run, step.hint)


def _server(state: CheckState) -> Rows:
    """The remote server's own facts, and which login its channel came through."""
    rows = ask_server(list(INFO_LABELS))(state)
    sources = {process.source for process in state.cache._conn.idle_processes()}
    return [("channel through", "; ".join(sorted(sources))), *rows] if sources else rows


def _tcp(state: CheckState) -> Rows:
    from ..ssh.connect import open_socket

    with contextlib.closing(open_socket(state.target)) as sock:
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
        (f"median of {ROUND_TRIPS} contains()", duration(statistics.median(times))),
        ("fastest, slowest", f"{duration(min(times))}, {duration(max(times))}"),
    ]


def _rate(seconds: float) -> str:
    return f"{PAYLOAD_BYTES / seconds / 1e6:.1f} MB/s ({duration(seconds)})"


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
    return [(f"upload {size}", _rate(up)), (f"download {size}", _rate(down)),
            *_flow_control(state)]


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _flow_control(state: CheckState) -> Rows:
    """The round trip the channel measured, and the window that bounds each direction.

    A transfer moves at most one window per round trip: naming both says
    whether a slow figure is the link's distance or something else (the
    remote disk, a CPU, the bandwidth).
    """
    from ..wire.paramiko_process import ParamikoProcess

    processes = [process for process in state.cache._conn.idle_processes()
                 if isinstance(process, ParamikoProcess)]
    window = processes[0].window if processes else None
    if window is None or window.round_trip is None:
        return []
    rtt, server_window = window.round_trip, processes[0].server_window
    grown = f", grown from {_mib(window.floor)}" if window.size > window.floor else ""
    return [
        ("link round trip", f"{duration(rtt)} (measured on the channel)"),
        ("upload window", f"{_mib(server_window)} (the server's): at most "
                          f"{server_window / rtt / 1e6:.0f} MB/s at this round trip"),
        ("download window", f"{_mib(window.size)}{grown}: at most "
                            f"{window.size / rtt / 1e6:.0f} MB/s at this round trip"),
    ]


CHECK_STEPS: tuple[Step, ...] = (
    Step("resolve the host", _resolve,
         "check the host name and your ssh config (~/.ssh/config, or -F FILE)."),
    Step("OpenSSH master", _master,
         "a ControlPath socket that is not yours is refused: remove it, or set ControlPath "
         "none."),
    _unless_master(Step("TCP connect", _tcp)),
    _unless_master(Step("SSH handshake, host key and login", connect)),
    Step("start the remote fleche server", _server, SERVER_HINT),
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


def host_keys(args: argparse.Namespace) -> dict[str, Any]:
    """The cache keys ``check HOST`` takes from its options."""
    return {"python": args.python, "workdir": args.workdir, "cache_name": args.cache_name,
            "prompt": args.prompt}


def _caches_to_check(args: argparse.Namespace) -> list[Any]:
    from ..cache import ParamikoCache

    if args.host is not None:
        given = {key: value for key, value in host_keys(args).items() if value is not None}
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
        logging.basicConfig(level=logging.INFO if args.verbose == 1 else logging.DEBUG,
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # As under ``python -m``: a prompt = "module:function" may name a module of this directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        caches = _caches_to_check(args)
    except Exception as error:
        say(f"FAILED: {type(error).__name__}: {error}")
        return 1
    passed = 0
    for number, cache in enumerate(caches, 1):
        layer = f" (layer {number} of {len(caches)})" if len(caches) > 1 else ""
        say(f"fleche-ssh check {cache.host}{layer}")
        try:
            passed += run_steps(CHECK_STEPS, CheckState(cache))
        finally:
            cache.close()
        say()
    if passed == len(caches):
        say(f"All checks passed for {', '.join(c.host for c in caches)}.")
        return 0
    say(f"{len(caches) - passed} of {len(caches)} checked cache(s) failed; see above.")
    return 1
