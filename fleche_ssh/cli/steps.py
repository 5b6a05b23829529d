"""The step runner both commands use, its output, and the steps they share.

A command is a table of :class:`Step` run by one loop, :func:`run_steps`:
each step is announced before it runs (so that anything it asks or prints
shows up under its title), then reports what it found as ``(name, value)``
rows and how long it took.  The first step that fails stops the run; its
error is printed with the fix.  fleche-ssh's own errors already end with
what to do, so a step's ``hint`` is only shown for other errors.

Nothing secret is printed: rows hold host names, paths, fingerprints,
method names and the remote cache's configuration, which the remote server
redacts itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Rows = list[tuple[str, str]]


@dataclass(frozen=True)
class Step:
    """One line of a command's table: a title, what to do, advice for foreign errors."""

    title: str
    run: Callable[[Any], Rows]
    hint: str = ""


def duration(seconds: float) -> str:
    """*seconds* as a person reads it: milliseconds below one second."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def say(text: str = "", indent: int = 0) -> None:
    """Print *text*, every line indented, flushed at once (a step may take a while)."""
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
        say(f"[{number}/{len(steps)}] {step.title}")
        started = time.monotonic()
        try:
            rows = step.run(state)
        except Exception as error:
            say(f"FAILED after {duration(time.monotonic() - started)}", 4)
            say(f"{type(error).__name__}: {error}", 6)
            if step.hint and not _own_error(error):
                say(f"likely fix: {step.hint}", 6)
            skipped = ", ".join(s.title for s in steps[number:])
            if skipped:
                say(f"not run: {skipped}", 4)
            return False
        width = max((len(name) for name, _ in rows), default=0)
        for name, value in rows:
            say(f"{name.ljust(width)}  {value}", 4)
        say(f"ok, took {duration(time.monotonic() - started)}", 4)
    return True


# -- steps both commands take: connecting and asking the remote server ----------------------


def _session_rows(session: Any) -> Rows:
    return [
        ("host key", session.host_key),
        ("verified by", session.host_key_verified),
        ("methods offered", ", ".join(session.auth.offered) or "none"),
        ("methods used", ", ".join(session.auth.used)),
        ("cipher", session.transport.remote_cipher),
    ]


def connect(state: Any) -> Rows:
    """Handshake, host key and login, pooled: the cache's own calls reuse this transport."""
    from ..ssh.pool import POOL

    state.session = POOL.session(state.target, state.cache.login(state.target))
    return _session_rows(state.session)


#: How ``info()`` keys are shown.
INFO_LABELS = {
    "python": "python", "fleche_version": "fleche", "cloudpickle_version": "cloudpickle",
    "hostname": "hostname", "pid": "pid", "cwd": "cwd", "cache": "cache",
    "read_only": "read only",
}


def _info_rows(info: dict[str, Any], keys: Sequence[str]) -> Rows:
    def shown(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    return [(INFO_LABELS[key], shown(info.get(key))) for key in keys]


def ask_server(keys: Sequence[str]) -> Callable[[Any], Rows]:
    """A step calling ``cache.info()`` (starting the remote server if needed), showing *keys*."""

    def step(state: Any) -> Rows:
        state.info = state.cache.info()
        return _info_rows(state.info, keys)

    return step


SERVER_HINT = (
    "the remote python must have fleche and cloudpickle installed (--python / python=), "
    "and workdir must exist; try `ssh HOST PYTHON -m fleche remote --serve` by hand."
)
