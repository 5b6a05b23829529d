"""Caches on the test sshd's ``testhost``, each test starting and ending with no transport.

A plain helper (not a fixture module): each test file wraps it in a fixture
of its own, so that no test inherits an authenticated transport, or a
``$HOME``, from another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fleche.remote import SshCache

from fleche_ssh import ParamikoCache
from fleche_ssh.ssh.pool import POOL


class CacheFactory:
    """Builds ParamikoCache (or stock SshCache) instances on ``testhost``; closes them all."""

    def __init__(self, client_home: Any, remote_dir: Any, remote_python: str) -> None:
        self.defaults = {"host": "testhost", "python": remote_python, "workdir": str(remote_dir)}
        self.stock_options = tuple(client_home.ssh_options_for_stock())
        self.made: list[SshCache] = []

    def __call__(self, cls: type[SshCache] = ParamikoCache, **keys: Any) -> Any:
        keys = {**self.defaults, **keys}
        if cls is SshCache:
            keys.setdefault("ssh_options", self.stock_options)
        self.made.append(cls(**keys))
        return self.made[-1]

    def __enter__(self) -> CacheFactory:
        POOL.close_all()
        return self

    def __exit__(self, *exc: object) -> None:
        for cache in self.made:
            cache.close()
        POOL.close_all()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll *predicate* until it holds or *timeout* seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
