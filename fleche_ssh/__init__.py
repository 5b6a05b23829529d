"""fleche-ssh: reach a remote fleche cache over SSH, with Paramiko.

Write ``type = "paramiko"`` where a ``fleche.toml`` says ``type = "ssh"``;
no import is needed.  In Python, use :class:`ParamikoCache`.

The names below load on first use, so that importing the package (which
happens at every interpreter start, see :mod:`fleche_ssh._startup`)
costs nothing.
"""

from ._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .cache import ParamikoCache
    from .ssh.pool import close_all

_LAZY = {"ParamikoCache": "cache", "close_all": "ssh.pool", "errors": None}

__all__ = ["ParamikoCache", "__version__", "close_all", "errors"]


def __getattr__(name: str) -> "Any":
    if name not in _LAZY:
        raise AttributeError(f"module 'fleche_ssh' has no attribute {name!r}")
    import importlib

    module_name = _LAZY[name]
    if module_name is None:
        return importlib.import_module(f"{__name__}.{name}")
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
