"""What Linux's ``/proc`` tells of a process: its state, its parent, its children, its I/O.

A process can end between listing ``/proc`` and reading one of its files,
so every reader here takes a vanished process as an answer: ``None``, or
left out of a listing.
"""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (the state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces and parentheses.
    # A process ending as its file is read can leave it empty: gone, as above.
    _, closed, after = text.rpartition(")")
    fields = after.split() if closed else []
    return fields or None


def state(pid: int) -> str | None:
    """The one-letter state of *pid* (``R``, ``S``, ``Z`` for a zombie...), None once it is gone."""
    fields = _stat(pid)
    return None if fields is None else fields[0]


def parent(pid: int) -> int | None:
    """The parent of *pid*, None once it is gone."""
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def children() -> dict[int, list[int]]:
    """Every process's children, by parent."""
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (ppid := parent(int(entry))) is not None:
            found.setdefault(ppid, []).append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    """The children of *pid*, theirs, and so on down."""
    tree, found, todo = children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def io_counter(pid: int, key: str) -> int | None:
    """A counter of ``/proc/PID/io`` (``rchar``: bytes read, stdin included; ``wchar``), or None."""
    try:
        lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    except OSError:
        return None
    return next(int(v) for k, v in (line.split(": ") for line in lines) if k == key)
