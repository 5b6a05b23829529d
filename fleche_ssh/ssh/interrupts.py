"""Ctrl-C held back across a few lines that must not stop half-way, then delivered as it came.

CPython runs a signal's Python handler in the main thread, between two
bytecodes, wherever that thread happens to be; SIGINT's default handler
raises ``KeyboardInterrupt`` there.  A thread that reads or writes the
encrypted stream (:mod:`.lean_reader`'s callers, a packet sent from the
caller's thread) must not stop between a ``recv`` returning and its bytes
being buffered, or between sealing a packet and writing it: bytes lost or
an IV advanced for nothing, the stream can no longer be decrypted, and the
login, with the one-time code it took, is gone.  Paramiko's own thread has
no such problem, since handlers never run there.

:class:`HeldInterrupts` swaps SIGINT's handler, for the section, for one
that only notes the signal.  Leaving, it puts the handler back and raises
the signal again (``signal.raise_signal``), so that handler runs as if the
signal had just come: ``KeyboardInterrupt`` at the first line after the
section, or a notebook's own handler, exactly as they would have run.
Waits inside a section must be short (the reader's are 0.1 s) and look at
:attr:`HeldInterrupts.caught`, so that Ctrl-C is still answered within a
bound.

Nothing is swapped outside the main thread (no handler can run there), nor
when SIGINT has no Python handler: ignored, it does nothing; left to the
system's default, it ends the process, and no stream is left to corrupt.
The C module ``_signal`` is called directly: ``signal.signal`` converts
every handler to and from an enum, which costs ten times the swap itself
(measured 5 µs against 0.5 µs per swap and restore).  The main thread's
identity is kept in a variable, refreshed in a forked child (whose forking
thread becomes its main thread), since a small call enters two sections and
``threading.main_thread()`` is a Python call each time.
"""

from __future__ import annotations

import os
import threading
from types import FrameType, TracebackType

try:
    import _signal as _system
except ImportError:  # not CPython
    import signal as _system

SIGINT = _system.SIGINT
_get_ident = threading.get_ident
_main = threading.main_thread().ident


def _forked() -> None:
    global _main
    _main = _get_ident()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class HeldInterrupts:
    """``with HeldInterrupts() as held:`` SIGINT waits until the block ends (see the module)."""

    # Class-level defaults, not an __init__: a section is entered twice per small
    # call, and a Python __init__ is a frame each time.
    _previous: object = None
    #: Whether SIGINT came during the block (it is raised again on leaving it).
    caught = False

    def __enter__(self) -> HeldInterrupts:
        if _get_ident() == _main:
            previous = _system.getsignal(SIGINT)
            if callable(previous):
                self._previous = previous
                _system.signal(SIGINT, self._note)
        return self

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.caught = True

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        previous, self._previous = self._previous, None
        if previous is not None:
            _system.signal(SIGINT, previous)
            if self.caught:
                _system.raise_signal(SIGINT)


__all__ = ["HeldInterrupts"]
