"""``fleche-ssh demo``: a function cached on a remote fleche server over SSH, on this machine.

The demo is a table of steps for :func:`fleche_ssh.cli.steps.run_steps`:
set up the throwaway world (:mod:`.world`), log in, start the remote
server, call a slow function twice, and ask the server about itself.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from ..cli.steps import SERVER_HINT, Rows, Step, ask_server, connect, duration, run_steps, say
from .world import DemoState, set_up

#: What the demo's function sleeps, standing in for an expensive computation.
DEMO_WORK_SECONDS = 1.0


def slow_square(x: int) -> int:
    """Stands in for an expensive computation."""
    time.sleep(DEMO_WORK_SECONDS)
    return x * x


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

    state.function = fleche.fleche(slow_square)
    return _timed_call(state, "computed here, result saved to the remote cache")


def _second_call(state: DemoState) -> Rows:
    return _timed_call(state, "served by the remote cache, not computed again")


DEMO_STEPS: tuple[Step, ...] = (
    Step("set up a throwaway SSH server, keys and remote workdir", set_up),
    Step("connect: host key, public key, one-time code", connect),
    Step("start the remote fleche server", ask_server(("python", "fleche_version", "pid")),
         SERVER_HINT),
    Step(f"first call: slow_square(7) sleeps {DEMO_WORK_SECONDS:g} s", _first_call),
    Step("second call: slow_square(7) again", _second_call),
    Step("ask the remote server about itself: cache.info()",
         ask_server(("hostname", "pid", "cwd", "cache"))),
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
    say("fleche-ssh demo: a function cached on a remote fleche server over SSH.")
    say("The 'remote' is a throwaway SSH server on 127.0.0.1; everything is removed at the end.")
    if interactive:
        say("You will type a one-time code, as with two-factor logins.")
    say()
    try:
        with contextlib.ExitStack() as resources:
            state = DemoState(resources=resources, interactive=interactive)
            ok = run_steps(DEMO_STEPS, state)
    except Exception as error:  # a failure while cleaning up
        say(f"FAILED: {type(error).__name__}: {error}")
        return 1
    if not ok:
        return 1
    first, second = state.results
    say()
    say(f"The second call took {duration(second)} instead of {duration(first)}: its result "
        f"came from the remote cache.")
    say(_REAL_HOST)
    return 0
