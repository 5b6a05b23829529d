"""The bridge that makes stock fleche honour the ``fleche.caches`` entry-point group.

fleche 0.22's :func:`fleche.config.cache_from_config` knows one cache
``type``, ``"ssh"``; anything else falls through to a bare ``KeyError``.
:func:`install` wraps the two module functions so that

* a config dict whose ``type`` names an entry point of ``fleche.caches``
  builds that class with the other keys (as fleche does for ``"ssh"``);
* an unknown ``type`` raises an error listing the installed types;
* :func:`fleche.config.cache_to_config` serialises an instance of such a
  class as ``{"type": name, **cache.config()}``, before fleche's own
  ``SshCache`` branch would claim a subclass of it.

fleche calls both through the module attribute (and recurses through it
for stacks and pools), so replacing the attributes is enough.  When a
fleche release reads the group itself, the bridge steps aside.
"""

from __future__ import annotations

import importlib.metadata
import types
from collections.abc import Callable
from dataclasses import MISSING
from functools import cache
from typing import Any

GROUP = "fleche.caches"
#: Types fleche itself builds; never looked up as entry points.
BUILTIN_TYPES = ("ssh",)
#: The attribute the bridge sets on ``fleche.config`` once installed there.
INSTALLED = "_fleche_ssh_bridge"


@cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The group's entry points, read once per process.

    Scanning the installed distributions takes milliseconds, and
    ``cache_to_config`` asks for every cache of a stack or pool.  The one
    thing remembered is what was installed at the first ask, which holds
    in a forked child too; a plugin installed while the process runs is
    found from the next process on.
    """
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def _type_name(obj: Any) -> str | None:
    """The entry-point name of *obj*'s class, found without importing any plugin."""
    value = f"{type(obj).__module__}:{type(obj).__qualname__}"
    return next((name for name, ep in _entry_points().items() if ep.value == value), None)


def _reads_group_itself(module: types.ModuleType) -> bool:
    """True when fleche's own code mentions the group: then it needs no bridge."""

    def constants(code: types.CodeType) -> Any:
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                yield from constants(const)
            else:
                yield const

    funcs = [v for v in vars(module).values() if isinstance(v, types.FunctionType)
             and v.__module__ == module.__name__]
    return any(c == GROUP for f in funcs for c in constants(f.__code__))


def build(config: dict[str, Any]) -> Any:
    """Build the plugin cache a config dict names by its ``type``."""
    from .errors import ConfigError

    kind = config["type"]
    found = _entry_points().get(kind)
    if found is None:
        known = ", ".join(sorted({*BUILTIN_TYPES, *_entry_points()}))
        raise ConfigError(f"fleche.toml: unknown cache type {kind!r}; installed types: {known}")
    cls = found.load()
    keys = {k: v for k, v in config.items() if k != "type"}
    init = [f for f in getattr(cls, "__dataclass_fields__", {}).values() if f.init]
    accepted = {f.name for f in init}
    unknown = sorted(set(keys) - accepted) if accepted else []
    if unknown:
        raise ConfigError(
            f"fleche.toml: cache type {kind!r} has no key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(accepted))}"
        )
    missing = [f.name for f in init if f.name not in keys
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ConfigError(f"fleche.toml: cache type {kind!r} needs the key(s) "
                          f"{', '.join(missing)}")
    return cls(**keys)


def install(config_module: types.ModuleType) -> None:
    """Wrap ``cache_from_config`` / ``cache_to_config`` of *config_module* (idempotent)."""
    if getattr(config_module, INSTALLED, False) or _reads_group_itself(config_module):
        return
    from_config: Callable[[Any], Any] = config_module.cache_from_config
    to_config: Callable[[Any], Any] = config_module.cache_to_config

    def cache_from_config(d: Any) -> Any:
        if isinstance(d, dict) and d.get("type") not in (None, *BUILTIN_TYPES):
            return build(d)
        return from_config(d)

    def cache_to_config(c: Any) -> Any:
        name = _type_name(c)
        if name is not None:
            return {"type": name, **c.config()}
        return to_config(c)

    # Typed Any: a module and a function are open namespaces, which mypy does not model.
    replacements: tuple[tuple[str, Any, Callable[[Any], Any]], ...] = (
        ("cache_from_config", cache_from_config, from_config),
        ("cache_to_config", cache_to_config, to_config),
    )
    for name, new, old in replacements:
        new.__doc__ = old.__doc__
        new.__wrapped__ = old
        setattr(config_module, name, new)
    setattr(config_module, INSTALLED, True)
