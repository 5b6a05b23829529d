"""Channel data read in the caller's own thread, with Paramiko's thread parked meanwhile.

With Paramiko, the transport's thread reads every packet and hands channel
data to the caller through a ``BufferedPipe``: each small answer costs a
thread switch and a GIL hand-off (a ``Condition`` hand-off between two
threads, there and back, measured 39 µs wall and 14 µs CPU on a 2-core
machine).  Here reading the socket is a *role* that one thread holds at a
time:

* A caller waiting for its channel's data (:meth:`SharedPacketizer.serve`)
  takes the role when it is free and reads packets itself, until its own
  channel has data.  Data for other channels goes to their buffers as
  usual, waking their readers.
* Paramiko's thread (``Transport.run`` calling :meth:`read_message`) stays
  parked while callers are waiting, waking every 0.1 s for its idle-time
  duties (keepalives, starting a rekey), and reads the socket itself only
  when no caller does.  It is woken early only when it has work: a message
  queued for it, a message sent that may want an answer (a channel opening,
  a request, EOF), a caller giving up the role, a rekey due, or a sender
  waiting for a window adjustment (:meth:`SharedPacketizer.wake`); between
  a caller's calls it stays parked.
* Every packet a caller reads that is not channel data (a window
  adjustment, a request, EOF, close, a key exchange) is queued, in the order
  it came, for Paramiko's thread, and the caller stops reading: nobody
  reads another packet until Paramiko's handlers are done with that one,
  since a handler (new keys) may change how the next one must be read.  A
  failure while reading (EOF, a bad tag) is queued the same way, so it
  ends the transport in Paramiko's thread as it always did.

The role is taken only under the lean path (AEAD cipher, a real socket),
outside a key exchange; otherwise callers wait in Paramiko's buffer as
before.  A caller holds Ctrl-C back while it waits and reads
(:class:`~.interrupts.HeldInterrupts`): an interrupt between a ``recv``
and its bytes being buffered would lose them from the stream, and the
login with them.  It comes within :data:`PARK` and a packet, once the
caller has put everything back as it found it.
"""

from __future__ import annotations

import collections
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_DATA, MSG_CHANNEL_WINDOW_ADJUST
from paramiko.packet import NeedRekeyException

from .interrupts import HeldInterrupts
from .lean import LeanPacketizer, lean_internals

#: How long Paramiko's parked thread sleeps between its idle-time duties; also
#: how long a caller waits for the role before looking again (Ctrl-C stays prompt).
PARK = 0.1


class _Paramiko:
    """The reader role's holder when it is Paramiko's own thread."""


_TRANSPORT = _Paramiko()


class SharedPacketizer(LeanPacketizer):
    """A lean packetizer whose reading a waiting caller can take over."""

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        #: Callers share the socket only when it can be polled without reading: a real
        #: socket, as for reading into the buffer.
        self.shared = self.direct
        #: Guards the role and the queue; taken directly where no wait follows (a
        #: plain lock is a C call, a ``Condition``'s own enter and exit are Python).
        self._role_lock = lock = threading.Lock()
        #: Callers waiting for the role (or for their data from whoever holds it).
        self._cond = threading.Condition(lock)
        #: Paramiko's thread, parked: woken only when it has something to do, since
        #: waking it for nothing costs the caller a GIL hand-off.
        self._park = threading.Condition(lock)
        self._reader: object | None = None
        self._callers = 0
        #: Messages (or a failure) callers read that Paramiko's thread must handle, in order.
        self._queue: collections.deque[Any] = collections.deque()
        #: Paramiko's handlers have a message they may not be done with.
        self._busy = False
        #: Packets of channel data a caller read in its own thread (tests read it).
        self.caller_read = 0

    # -- Paramiko's thread -----------------------------------------------------

    def read_message(self) -> tuple[int, paramiko.Message]:
        if not self.shared or not self.lean_in():
            return super().read_message()
        cond = self._cond
        with cond:
            self._busy = False  # Transport.run is back: it handled the last message
            if self._callers:
                cond.notify_all()
        while True:
            with cond:
                item = self._next_duty()
                parked = item is None and bool(self._callers or self._reader is not None)
                woken = parked and self._park.wait(PARK)
            if item is not None:
                return item
            if parked:
                if not woken:
                    self._check_keepalive()  # what read_all does on each timeout
                continue
            got = self._read_unless_caller()
            if isinstance(got, tuple):
                return got
            if got and self._Packetizer__need_rekey:
                raise NeedRekeyException()

    def _next_duty(self) -> Any:
        """Under the lock: a queued message (marking Paramiko busy), or None."""
        if self._queue:
            self._busy = True
            item = self._queue.popleft()
            if isinstance(item, BaseException):
                raise item
            return item
        if self._Packetizer__closed:
            raise EOFError()
        transport = self._transport()
        if self._Packetizer__need_rekey and transport is not None and not transport.in_kex:
            raise NeedRekeyException()  # Transport.run sends our KEXINIT
        return None

    def _read_unless_caller(self) -> tuple[int, paramiko.Message] | bool:
        """Read one packet in Paramiko's thread, unless a caller came meanwhile."""
        if not self._buffered() and not _readable(self._Packetizer__socket, PARK):
            self._check_keepalive()
            return False
        with self._cond:
            if self._callers or self._reader is not None or self._queue:
                return False
            self._reader = _TRANSPORT
        try:
            got = self._read_one(patient=False)
        finally:
            with self._cond:
                self._reader = None
                if self._callers:
                    self._cond.notify_all()
        if isinstance(got, tuple):
            with self._cond:
                self._busy = True
        return got

    # -- callers ---------------------------------------------------------------

    def serve(self, ready: Callable[[], object]) -> None:
        """Read packets in this thread until *ready()*, while the lean path allows it.

        Returns early, with *ready()* still false, when the next packets must
        be Paramiko's (a key exchange, a message its handlers have not
        finished, a transport that ended): the caller then waits in
        Paramiko's buffer as before.  Ctrl-C meanwhile also ends it, at a
        point where the stream is whole, and is raised as it returns.

        The lock is taken twice for a packet read: once to join the
        callers and take the role, once to give both back.  Other callers
        are notified only when there are some.
        """
        if ready():
            return
        cond, lock = self._cond, self._role_lock
        with HeldInterrupts() as held:
            lock.acquire()  # not a with statement: that costs CPython 3.11 twice as much
            self._callers += 1
            done = False
            try:
                while not (done := bool(ready())) and not held.caught:
                    if (self._reader is not None or self._busy) and self._alive():
                        cond.wait(PARK)
                        continue
                    if not self._may_read():
                        return
                    self._reader = me = threading.get_ident()
                    lock.release()
                    try:
                        self._read_as_caller()
                    finally:
                        lock.acquire()
                        if self._reader == me:
                            self._reader = None
                        if self._callers > 1:
                            cond.notify_all()
            finally:
                self._callers -= 1
                if self._callers:
                    cond.notify_all()
                if not done:  # left to Paramiko's thread: it must read now
                    self._park.notify()
                lock.release()

    def _after_send(self, kind: int) -> None:
        # Channel data and window adjustments want no answer; anything else (a
        # channel opening, a request, EOF) may, and no caller may be there to read it.
        if kind != MSG_CHANNEL_DATA and kind != MSG_CHANNEL_WINDOW_ADJUST:
            self.wake()

    def _trigger_rekey(self) -> None:
        super()._trigger_rekey()
        self.wake()  # a parked Paramiko thread starts the exchange now, not in 0.1 s

    def wake(self) -> None:
        """Have Paramiko's thread read now (something waits for a message no caller reads).

        Parked, it would look again only after :data:`PARK`: too late for a
        sender waiting for the server's window, or a wait for the exit status.
        """
        with self._cond:
            self._park.notify()

    def _alive(self) -> bool:
        transport = self._transport()
        return (transport is not None and transport.active and not self._queue
                and not self._Packetizer__closed)

    def _may_read(self) -> bool:
        """Under the lock: whether a caller may read the next packet now."""
        transport = self._transport()
        return (self.shared and self._alive() and not transport.in_kex
                and not transport._expected_packet and self.lean_in())

    def _read_as_caller(self) -> None:
        """Read a packet holding the role, and those behind it already buffered.

        Anything not channel data goes to the queue, and ends the reading.

        A failure is queued too: raised in Paramiko's thread, it ends the
        transport there, which is how every reader learns of it.
        """
        try:
            got: Any = self._read_one(patient=False)
            while got is True:  # the packets already buffered cost no system call: take them
                self.caller_read += 1
                got = self._read_one(patient=False) if self._buffered() else False
        except Exception as e:
            got = e
        if got is not False:
            with self._cond:
                self._queue.append(got)
                self._cond.notify_all()
                self._park.notify()


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether *sock* has bytes to read (or its end came) within *timeout* seconds."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


def packetizer_class(caller_reads: bool = True) -> type[LeanPacketizer] | None:
    """The packetizer a transport should use: ours when Paramiko has what it relies on.

    *caller_reads* false keeps every read in Paramiko's thread, on the lean
    path still (the tests and the benchmark run both).
    """
    if not lean_internals():
        return None
    return SharedPacketizer if caller_reads else LeanPacketizer


__all__ = ["PARK", "SharedPacketizer", "packetizer_class"]
