"""The demo's throwaway world: keys, a server, a remote workdir and the cache that uses them.

Everything lives in one temporary directory and one :class:`DemoState`,
whose ``resources`` stack removes it all again, in reverse order: the
cache's channels, then the transport, then the server, then the files.
The one-time code is shown, as a phone would show it: it is the demo's one
exception to "nothing secret is printed", by design.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cli.steps import Rows, say
from . import keys


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


def _show_code(interactive: bool, code: str) -> None:
    """The server's ``on_code_requested``: show the code as a phone would."""
    say(f"Your one-time code is {code}", 4)
    if interactive:
        say("Type it at the prompt below (what you type is not shown).", 4)


def _code_handler(state: DemoState) -> Any:
    """``auto`` at a terminal (the user types the code, unechoed); else answer it ourselves."""
    from ..prompts import auto

    if state.interactive:
        return lambda title, instructions, prompts: auto(
            title, instructions, [(" " * 4 + text, echo) for text, echo in prompts])

    def answer(title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        say("stdin is not a terminal: answering the one-time code for you", 4)
        return [state.code for _ in prompts]

    return answer


def _demo_toml(workdir: str) -> str:
    """The remote fleche.toml: an on-disk cache in *workdir*, nothing merged from above it."""
    root = json.dumps(os.path.join(workdir, "cache"))
    return (f'[default]\ncache = "demo"\nroot = true\n\n'
            f'[demo]\ntemplate = "cloudpickle"\nroot = {root}\n')


def set_up(state: DemoState) -> Rows:
    """The demo's first step: make the world, pin its host key, build the cache on it."""
    import getpass
    import secrets
    import tempfile

    from ..cache import ParamikoCache
    from ..ssh.hostkeys import fingerprint
    from ..ssh.pool import close_all
    from .server import LoopbackServer

    tmp = state.resources.enter_context(tempfile.TemporaryDirectory(prefix="fleche-ssh-demo-"))
    paths = {name: os.path.join(tmp, name)
             for name in ("id_ed25519", "known_hosts", "ssh_config", "remote")}
    key = keys.client_key(paths["id_ed25519"])
    state.code = f"{secrets.randbelow(10**6):06d}"
    show_code = functools.partial(_show_code, state.interactive)
    server = state.resources.enter_context(LoopbackServer(
        authorized_key=key, one_time_code=state.code, on_code_requested=show_code))
    keys.private_file(paths["known_hosts"], f"{server.known_hosts_line()}\n".encode())
    keys.private_file(paths["ssh_config"], b"")
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
    state.resources.callback(close_all)
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
