"""The two clients under test, built the same way from the same keyword arguments.

``stock`` is fleche's own ``SshCache`` (one ``ssh`` subprocess per cache);
``fleche-ssh`` is ``ParamikoCache``.  ``reset`` runs after a cache is closed:
for ParamikoCache it drops the process-wide transport pool, so that the
next cache connects and authenticates from scratch instead of reusing
a live transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _stock(kwargs: dict[str, Any], channels: int) -> Any:
    from fleche.remote import SshCache

    return SshCache(**kwargs)


def _ours(kwargs: dict[str, Any], channels: int) -> Any:
    from fleche_ssh import ParamikoCache

    return ParamikoCache(**kwargs, channels=channels)


def _no_reset() -> None:
    return None


def _close_pool() -> None:
    from fleche_ssh import close_all

    close_all()


@dataclass(frozen=True)
class Impl:
    name: str
    build: Callable[[dict[str, Any], int], Any]
    reset: Callable[[], None]
    #: What a fresh interpreter imports before it can build this cache.
    module: str

    def make(self, kwargs: dict[str, Any], channels: int = 1) -> Any:
        return self.build(kwargs, channels)


STOCK = Impl("stock", _stock, _no_reset, "fleche.remote")
OURS = Impl("fleche-ssh", _ours, _close_pool, "fleche_ssh.cache")
IMPLS = {impl.name: impl for impl in (STOCK, OURS)}


def alternating(rep: int) -> tuple[Impl, Impl]:
    """Stock first on even repetitions, ours first on odd ones, so drift cancels."""
    return (STOCK, OURS) if rep % 2 == 0 else (OURS, STOCK)
