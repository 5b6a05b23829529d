"""The remote side's fleche directory: a ``fleche.toml`` whose caches live on disk inside it."""

from __future__ import annotations

import json
from pathlib import Path


def write_remote_workdir(path: Path) -> Path:
    """A directory with a ``fleche.toml`` whose caches live inside it, on disk.

    * ``[default] cache = "remote"`` -- cloudpickle files under ``values/`` and
      ``calls/`` (survives across processes, so every ``--serve`` sees it);
    * ``readonly`` -- the same storage wrapped ``read_only = true``.

    ``root = true`` stops fleche's config walk here, so a stray ``fleche.toml``
    further up (``/tmp``, ``/``) or ``~/.config/fleche/cache.toml`` cannot leak in.
    """
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    (path / "values").mkdir(exist_ok=True)
    (path / "calls").mkdir(exist_ok=True)
    storage = (
        'values.type = "cloudpickle"\n'
        f"values.root = {json.dumps(str(path / 'values'))}\n"
        'calls.type = "cloudpickle"\n'
        f"calls.root = {json.dumps(str(path / 'calls'))}\n"
    )
    (path / "fleche.toml").write_text(
        "[default]\n"
        'cache = "remote"\n'
        "root = true\n"
        "\n[remote]\n" + storage + "\n[readonly]\n" + storage + "read_only = true\n"
    )
    return path
