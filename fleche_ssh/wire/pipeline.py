"""Many threads over one remote server: requests back to back, answers matched in order.

The stock server (:func:`fleche.remote.serve`) reads a request, answers it,
and only then reads the next, so the answers on a channel come in the order
the requests went out.  A :class:`Pipeline` uses that: a call appends its
slot to the channel's FIFO and writes its frame under one send lock (so
slots and frames are in the same order), then waits for its slot.  One of
the waiting callers at a time holds the *reader role*: it reads answers
off the channel and completes the slots at the head of the FIFO, its own
among them, and then hands the role to the next waiter.  No thread is
spent on reading, and a lone caller reads its own answer, as before.

Reading never waits for writing: the reader role is only ever held by a
caller whose frame is entirely sent, or by one whose request is the only
one in flight (it takes the role as it sends, so that a lone caller, the
usual case, goes from its send to its read with no hand-off: no answer can
come before its own), and the reader never takes the send lock.  So a
large request blocked on a full window, while the server is itself
blocked writing a large answer to an earlier request, is always drained
by that earlier request's caller.

Every way the server can end a call is local to what it affects:

* an ``("err", exc)`` answer, or one that cannot be unpickled here
  (:class:`~.frames.Undecodable`), is read to its end and fails only its
  own request;
* a channel that closes, or answers with something that is not a frame,
  is out of step for good: every request in flight fails with
  :meth:`~.channel.ExecChannel.failure`'s typed error, the channel is
  closed, and a call that has not sent yet raises :class:`Broken`, for
  the server to retry it on another channel;
* a caller interrupted while sending or waiting (Ctrl-C) may leave a
  frame half written or half read: the channel is closed, as an
  interrupted call's channel is without pipelining, and the other
  requests in flight fail saying so.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError, RemoteConnectionError
from .channel import EXIT_WAIT, ChannelClosed, ExecChannel
from .frames import Frame, Undecodable

#: How long a waiter sleeps before looking at its slot again.  Nothing depends on it:
#: every change of a slot or of the reader role notifies, this only bounds each wait.
WAIT_STEP = 1.0
#: What ends a channel for good: it closed, or it is out of step.
_LOST = (ChannelClosed, EOFError, OSError, ProtocolError)


class Broken(Exception):
    """The channel was given up before this call sent anything: try another one."""


class _Interrupted(Exception):
    """The cause given to the other requests when a caller's send or read was cut off."""


@dataclass(eq=False)
class _Slot:
    """One request in flight and, once done, its answer or its error."""

    method: str
    done: bool = False
    answer: Any = None
    error: BaseException | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.answer


class Pipeline:
    """One :class:`~.channel.ExecChannel` shared by the calls of many threads."""

    def __init__(self, channel: ExecChannel, *, host: str) -> None:
        self.channel = channel
        self._host = host
        self._send_lock = threading.Lock()
        # A plain lock under the condition: taken directly, it costs a C call instead
        # of the Python frames of Condition's own methods.  On the path every call
        # takes, it is taken with acquire() and release(), which cost CPython 3.11
        # half what a with statement does (its __enter__ and __exit__ are looked up
        # and bound on every entry).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._fifo: collections.deque[_Slot] = collections.deque()
        self._reading = False
        #: Callers asleep in :meth:`_wait`: only they need a notify.
        self._waiters = 0
        #: No further request goes out on this channel; it is closed, or being closed.
        self.broken = False

    @property
    def in_flight(self) -> int:
        """How many requests on this channel wait for their answer."""
        with self._lock:
            return len(self._fifo)

    def call(self, method: str, frame: Frame) -> Any:
        """Send *frame* and return the server's answer to it, ``(tag, payload)``.

        Raises:
            Broken: the channel was given up before anything was sent.
            RemoteConnectionError: the channel was lost with this request in flight.
            Exception: the answer could not be unpickled here (the original error, explained).
        """
        slot = _Slot(method)
        lock, send_lock = self._lock, self._send_lock
        send_lock.acquire()
        try:
            lock.acquire()
            try:
                if self.broken:
                    raise Broken(method)
                # Nothing in flight: no answer can come before this one, so this
                # caller takes the reader role now, before sending, and reads its
                # answer straight after, without a second look at the FIFO.
                reader = not self._fifo and not self._reading
                if reader:
                    self._reading = True
                self._fifo.append(slot)
            finally:
                lock.release()
            try:
                self.channel.send_frame(frame)
            except _LOST as e:
                self._break(e)
            except BaseException:
                self._break(_Interrupted(method))
                if reader:
                    self._release()
                raise
        finally:
            send_lock.release()
        if reader:
            return self._read(slot)
        return self._wait(slot)

    def _wait(self, slot: _Slot) -> Any:
        """Wait for *slot*, taking the reader role whenever nobody holds it."""
        try:
            with self._lock:
                while not slot.done and (self._reading or self.broken):
                    self._waiters += 1
                    try:
                        self._cond.wait(WAIT_STEP)
                    finally:
                        self._waiters -= 1
                if slot.done:
                    return slot.result()
                self._reading = True
        except BaseException:
            self._interrupted(slot)
            raise
        return self._read(slot)

    def _read(self, slot: _Slot) -> Any:
        """As the reader: complete the slots at the head of the FIFO until *slot* is done.

        The role is given up in the same lock round as *slot* is completed.
        A caller interrupted here leaves its answer unread on the channel, or
        half read: the channel is closed, as for an interrupted send.
        """
        holding = True
        try:
            while holding and not self.broken:
                try:
                    head = self._fifo[0]
                except IndexError:  # cleared by _break on another thread
                    break
                answer: Any = None
                error: BaseException | None = None
                try:
                    answer = self.channel.recv_frame()
                except Undecodable as e:  # read to its end: the channel is still in step
                    error = e.explained(head.method, self._host)
                except _LOST as e:
                    self._break(e)
                    break
                lock = self._lock
                lock.acquire()
                try:
                    if self._fifo and self._fifo[0] is head:
                        self._fifo.popleft()
                        head.answer, head.error, head.done = answer, error, True
                    if slot.done:
                        self._reading = holding = False
                    if self._waiters:
                        self._cond.notify_all()
                finally:
                    lock.release()
        except BaseException:
            self._interrupted(slot)
            if holding:
                self._release()
            raise
        if holding:  # the channel broke: _break completes every slot, perhaps still doing so
            self._release()
            return self._wait(slot)
        return slot.result()

    def _release(self) -> None:
        """Give up the reader role, waking a waiter to take it."""
        with self._lock:
            self._reading = False
            if self._waiters:
                self._cond.notify_all()

    def _interrupted(self, slot: _Slot) -> None:
        """A caller was cut off before its answer was whole: the channel is out of step."""
        if not slot.done:
            self._break(_Interrupted(slot.method))

    def close(self, wait: float = EXIT_WAIT) -> None:
        """Send nothing more, and close the channel: EOF, then up to *wait* s for its exit."""
        with self._lock:
            if self.broken:
                return  # closed by _break, or being closed
            self.broken = True
        self.channel.close(wait)

    def _break(self, cause: BaseException) -> None:
        """Fail every request in flight with *cause* explained, then close the channel.

        The errors are worked out before the channel is closed, since
        :meth:`~.channel.ExecChannel.failure` asks it for the exit status and
        the last lines of stderr.
        """
        with self._lock:
            if self.broken:
                return
            self.broken = True
            failed = list(self._fifo)
            self._fifo.clear()
        errors = [self._error(s.method, cause, first=i == 0) for i, s in enumerate(failed)]
        with self._lock:
            for s, error in zip(failed, errors, strict=True):
                s.error, s.done = error, True
            self._cond.notify_all()
        # Interrupted: the caller wants control back now, not after the remote's exit.
        self.channel.close(0.0 if isinstance(cause, _Interrupted) else EXIT_WAIT)

    def _error(self, method: str, cause: BaseException, *, first: bool) -> RemoteConnectionError:
        """The error *method* gets when the channel ends with *cause*."""
        if isinstance(cause, _Interrupted):
            return RemoteConnectionError(
                f"{method!r} on {self._host} got no answer: {cause.args[0]!r}, sharing its "
                f"remote server, was interrupted while its frame was sent or read, which "
                f"closed that server. Call again; the next call starts a new one."
            )
        error = self.channel.failure(method, cause)
        if error is not cause:
            error.__cause__ = cause
            return error
        # failure() hands a ProtocolError back as it is; each thread raises its own.
        return error if first else ProtocolError(*cause.args)
