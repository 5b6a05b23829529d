"""A second process's first call: how long until its exec channel is open, and until it answers.

Usage: ``secondprobe.py IMPL KWARGS_JSON`` (run by ``measure.second_process``),
where IMPL is ``stock`` or ``fleche-ssh``.  Prints one JSON line:
``{"channel_open": s, "first_answer": s}``, both from just before the
cache is built.

Imports happen before anything is timed.  Seeing "channel open" costs the
normal path nothing:

* fleche-ssh: the one place a remote server's process comes from,
  ``open_process`` as :mod:`fleche_ssh.wire.server` calls it, is wrapped
  here, in this probe only; it returns once the channel is open and its
  command sent, whichever source gave it (a login held elsewhere, an
  OpenSSH master, or a login of its own).
* stock: ``ssh -v`` writes ``Sending command`` when its session channel is
  confirmed, and a mux client ``master session id`` when its master has
  opened one; fleche forwards ssh's stderr to the ``fleche.remote.host``
  logger line by line, where a handler notes the first such line's time.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

#: The lines of ``ssh -v`` that say the session channel is open (own connection, or a master's).
OPENED = ("Sending command", "master session id")


class _Opened(logging.Handler):
    """Notes the time of the first record saying the channel is open."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.at is None and any(line in record.getMessage() for line in OPENED):
            self.at = time.perf_counter()


def stock(kwargs: dict[str, Any]) -> tuple[float, list[float | None]]:
    from fleche.remote import SshCache

    seen = _Opened()
    ssh = logging.getLogger("fleche.remote.host")
    ssh.setLevel(logging.INFO)
    ssh.propagate = False
    ssh.addHandler(seen)
    kwargs = {**kwargs, "ssh_options": [*kwargs["ssh_options"], "-v"]}
    started = time.perf_counter()
    cache = SshCache(**kwargs)
    cache.info()
    answered = time.perf_counter()
    cache.close()
    return started, [seen.at, answered]


def ours(kwargs: dict[str, Any]) -> tuple[float, list[float | None]]:
    from fleche_ssh import ParamikoCache
    from fleche_ssh.wire import server

    opened: list[float] = []
    real = server.open_process

    def timed(cache: Any, command: str) -> Any:
        process = real(cache, command)
        opened.append(time.perf_counter())
        return process

    server.open_process = timed  # type: ignore[assignment]
    started = time.perf_counter()
    cache = ParamikoCache(**kwargs)
    cache.info()
    answered = time.perf_counter()
    cache.close()
    return started, [opened[0] if opened else None, answered]


def main(argv: list[str]) -> int:
    impl, kwargs = argv[0], json.loads(argv[1])
    started, (opened, answered) = {"stock": stock, "fleche-ssh": ours}[impl](kwargs)
    if opened is None or answered is None:
        raise SystemExit(f"{impl}: the channel's opening was not seen")
    print(json.dumps({"channel_open": opened - started, "first_answer": answered - started}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
