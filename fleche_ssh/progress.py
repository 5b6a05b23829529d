"""Progress of large transfers: a bar where a person watches, a callable, and a log line.

A frame of :data:`LARGE` bytes or more (a big ``save_value`` or
``load_value``) is a :class:`Transfer`.  It is fed by the byte counter of
the remote-process seam (:attr:`~fleche_ssh.wire.process.RemoteProcess.counter`),
so it sees the same bytes whether they go over our own transport, a shared
login or an OpenSSH master.  What it reports to is the cache's ``progress``
key:

* ``"auto"``: a bar, drawn by tqdm, only where someone looks: on stderr when
  it is a terminal, in the cell's output in a Jupyter kernel (a widget with
  ipywidgets, else a text line redrawn in place), never in a pool worker
  (:func:`~fleche_ssh.prompts.in_worker`: eight bars interleaved on the
  parent's terminal help nobody) and never in a batch job.  tqdm is the
  ecosystem's standard bar: one front end for terminals and notebooks, with
  rate and time left, that people already recognise and configure.  It
  appears only once a transfer has run :data:`DELAY` seconds, so quick
  calls draw nothing.
* ``"none"``: nothing.
* a callable, or ``"module:function"`` naming one, called as
  ``report(direction, bytes_done, total)`` with ``direction`` ``"sent"`` or
  ``"received"``: ``bytes_done`` only grows, and the last call of a
  transfer that completes has ``bytes_done == total``.

Whatever the key, at most one report per :data:`INTERVAL` seconds (plus
the last), and an INFO line on the ``fleche_ssh`` logger when a transfer
ends, with its size, time and rate.  Only sizes are reported: never a byte
of what is sent.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .prompts import in_kernel, in_worker, is_terminal, resolve_named

logger = logging.getLogger("fleche_ssh")

#: Frames at least this large are transfers: reported, drawn, logged.
LARGE = 4 << 20
#: Seconds a transfer runs before its bar appears (tqdm's ``delay``).
DELAY = 1.0
#: Least time between two reports of one transfer: at most ten a second.
INTERVAL = 0.1

#: ``report(direction, bytes_done, total)``.
Reporter = Callable[[str, int, int], object]


def _auto(direction: str, done: int, total: int) -> None:
    """Marker for ``"auto"``; a :class:`Transfer` draws a bar of its own instead."""


def _none(direction: str, done: int, total: int) -> None:
    """Report nothing."""


BUILTIN: dict[str, Reporter] = {"auto": _auto, "none": _none}


def resolve_progress(spec: str | Reporter) -> Reporter:
    """The reporter a ``progress`` key names: built-in, ``module:function`` or a callable."""
    return resolve_named("progress", spec, BUILTIN)


def _bar_here() -> bool:
    """Whether ``"auto"`` draws: a person watches this process's stderr or notebook."""
    if in_worker():
        return False
    return in_kernel() or is_terminal(sys.stderr)


def _tqdm() -> Any:
    """tqdm's ``auto`` front end, imported on first use (it is not needed for small calls).

    In a kernel without ipywidgets it warns once that widgets are missing and
    draws text instead; the text line is what is wanted there, so the
    warning is not shown.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm


class _Bar:
    """A tqdm bar on stderr (or the notebook's cell): bytes, rate and time left."""

    def __init__(self, direction: str, total: int, host: str) -> None:
        self._done = 0
        shape: dict[str, int] = {}
        if not in_kernel():
            # tqdm draws nothing on a terminal that reports no size (a bare pty, some
            # CI runners); shutil falls back to $COLUMNS and $LINES, else 80x24.
            size = shutil.get_terminal_size()
            shape = {"ncols": size.columns, "nrows": size.lines}
        self._bar = _tqdm()(
            total=total, desc=f"{host} {direction}", unit="iB", unit_scale=True,
            unit_divisor=1024, delay=DELAY, mininterval=INTERVAL, file=sys.stderr,
            leave=True, **shape,
        )

    def __call__(self, direction: str, done: int, total: int) -> None:
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        self._bar.close()


@dataclass(frozen=True)
class Progress:
    """How one cache reports its transfers: the resolved ``progress`` key and the host."""

    host: str
    report: Reporter = _auto

    def start(self, direction: str, total: int, done: int = 0) -> Transfer:
        """A transfer of *total* bytes, *done* of them moved already."""
        sink: Reporter | None = None
        bar: _Bar | None = None
        if self.report is _auto:
            if _bar_here():
                bar = _Bar(direction, total, self.host)
                sink = bar
        elif self.report is not _none:
            sink = self.report
        return Transfer(direction, total, self.host, sink, bar, done=min(done, total))


@dataclass(eq=False)
class Transfer:
    """One large frame on the move: counts its bytes, reports them, logs when it ends."""

    direction: str
    total: int
    host: str
    sink: Reporter | None
    bar: _Bar | None = None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _next: float = 0.0

    def count(self, direction: str, n: int) -> None:
        """The process's byte counter: *n* more bytes moved (in this transfer's direction)."""
        if direction != self.direction:
            return
        self.done = min(self.total, self.done + n)
        if self.sink is None or self.done >= self.total:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + INTERVAL
            self.sink(self.direction, self.done, self.total)

    def end(self, complete: bool) -> None:
        """The transfer ended: the last report (at total, if *complete*), the log line."""
        took = time.monotonic() - self.started
        try:
            if complete and self.sink is not None:
                self.sink(self.direction, self.total, self.total)
        finally:
            if self.bar is not None:
                self.bar.close()
        mib = self.done / (1 << 20)
        logger.info("%s %s %.1f MiB in %.2f s (%.1f MiB/s)%s", self.host, self.direction, mib,
                    took, mib / took if took > 0 else float("inf"),
                    "" if complete else f", stopped at {self.done} of {self.total} bytes")
