"""A channel's receive window that grows to the link, measured from the transfer itself.

A download runs at most at window / round-trip time.  No single window fits
every link: 4 MiB carries ~80 MB/s over a 50 ms round trip, and on a LAN a
larger one only costs, because OpenSSH's server then queues the surplus in
buffers it grows and shrinks, which made loopback downloads 2-3x slower and
cost sshd 10x the CPU per byte (``docs/performance.rst`` has the figures).
So the window starts at :data:`FLOOR` and grows only while it is what
bounds the transfer, up to :data:`CAP`.

:class:`ReceiveWindow` decides every window adjustment of a channel, and
learns what it needs from two events: bytes *arrived* (the transport read a
data packet) and bytes *consumed* (the reader took them, which is when the
window reopens).

* **Round trip.**  Three kinds of sample, each at least one round trip:
  starting the command (opening the channel and the ``exec`` request,
  which the server answers at once, before any data is queued on the
  way); the time from a request going out to the first byte
  of its answer (the remote server answers requests, it never speaks
  first), close to the round trip for a small call; and the time from
  sending a window adjustment to the arrival of the first byte beyond what
  had been granted before it, close to the round trip whenever the server
  was waiting for the window.  The least sample is the round trip.  (The
  last kind alone is not enough: when the server is not waiting for the
  window, it measures how long the server takes to use up its credit, and
  a queue on a slow link inflates it.)
* **Is the window the bottleneck?**  Every epoch (two round trips, at least
  :data:`MIN_EPOCH`) the consumption rate is measured.  When more than half
  a window went by per round trip, and the reader caught up with the bytes
  that had arrived at least once (a reader always behind is what limits,
  and a larger window would only pile more up in the server's buffers),
  the window may be what limits: it doubles.  The next epoch's rate is
  compared with the one before (half of that epoch still runs at the old
  window, so a window that was the bottleneck shows about 1.5x): a window
  that doubled without the rate rising by :data:`GAIN` was not the
  bottleneck (the link, a CPU or a queue on the way is), and the window
  stops growing.

It holds no Paramiko object, so any receive path (Paramiko's, or a leaner
one) can drive it.  Its methods are called from the transport's reader
thread and the channel's readers at once, hence the lock; the two each
read calls take it with acquire() and release(), which cost CPython 3.11
half what a with statement does.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

#: The window a channel opens with, and never goes below: on a LAN a download
#: never waits for it to reopen.
FLOOR = 4 << 20
#: The most a channel's window grows to: 64 MiB over a 100 ms round trip
#: carries ~670 MB/s, more than one Python reader decrypts.  Bounds what the
#: server may have in flight, and so the memory it can make us buffer.
CAP = 64 << 20
#: Shortest epoch over which a rate is measured: shorter ones are noise from
#: thread scheduling on a busy machine.
MIN_EPOCH = 0.05
#: The rise in rate a doubled window must bring to keep growing.
GAIN = 1.2
#: Fewer bytes than this waiting to be read (two packets) is a reader that caught up.
CAUGHT_UP = 1 << 16
#: A pause in consumption longer than this many round trips, and at least
#: :data:`MIN_IDLE` s, is the caller doing something else, not the link: the
#: epoch starts over.
IDLE_ROUND_TRIPS = 4
#: The shortest pause that counts as idle, whatever the round trip.
MIN_IDLE = 0.2


@dataclass
class ReceiveWindow:
    """The window adjustments of one channel; all sizes in bytes, times in seconds."""

    size: int = FLOOR
    cap: int = CAP
    #: Least round trip seen (None until the first sample).
    round_trip: float | None = None
    #: False once doubling the window did not raise the rate.
    growing: bool = True
    #: The size the window started at.
    floor: int = field(init=False, default=0)
    _granted: int = field(init=False, default=0)
    _arrived: int = field(init=False, default=0)
    _consumed: int = field(init=False, default=0)
    #: Whether the reader took every byte that had arrived, this epoch.
    _caught_up: bool = field(init=False, default=False)
    _unacked: int = field(init=False, default=0)
    #: (bytes granted before an adjustment, when it was sent), oldest first.
    _marks: collections.deque[tuple[int, float]] = field(
        init=False, default_factory=collections.deque)
    #: When a request went out that no byte has answered yet.
    _asked: float | None = field(init=False, default=None)
    _epoch_start: float | None = field(init=False, default=None)
    _epoch_bytes: int = field(init=False, default=0)
    _last_consumed: float = field(init=False, default=0.0)
    #: After a doubling: the rate before it, to judge what the doubling brought.
    _rate_before: float | None = field(init=False, default=None)
    #: A pause in consumption longer than this starts the epoch over (from the round trip).
    _idle: float = field(init=False, default=MIN_IDLE)
    #: How long an epoch lasts (from the round trip; none ends before the first sample).
    _epoch: float = field(init=False, default=float("inf"))
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._granted = self.floor = self.size
        if self.round_trip is not None:
            self._timed(self.round_trip)

    def round_trip_took(self, seconds: float) -> None:
        """A round trip measured elsewhere (starting the command) took *seconds*."""
        with self._lock:
            self._sample(seconds)

    def _sample(self, seconds: float) -> None:
        # With pipelined calls, bytes of an earlier answer that were already read
        # when a request went out can be matched with it: no time is no round trip.
        if seconds > 0 and (self.round_trip is None or seconds < self.round_trip):
            self.round_trip = seconds
            self._timed(seconds)

    def _timed(self, rtt: float) -> None:
        """The idle bound and the epoch's length for round trip *rtt*, worked out once
        here rather than at every read."""
        self._idle = max(IDLE_ROUND_TRIPS * rtt, MIN_IDLE)
        self._epoch = max(2 * rtt, MIN_EPOCH)

    def sent(self, now: float) -> None:
        """We wrote to the server at *now*: the next answer byte is at least a round trip away.

        Without the lock: :meth:`arrived` clearing the mark at the same moment
        can only lose this mark, and a lost sample costs nothing where the
        least of many is kept.
        """
        if self._asked is None:
            self._asked = now

    def arrived(self, n: int, now: float, *, answer: bool = True) -> None:
        """The transport received *n* bytes of channel data at *now*.

        *answer* is False for stderr, which the server writes when it likes,
        so it says nothing about the round trip of a request.
        """
        self._lock.acquire()
        try:
            self._arrived += n
            if answer and self._asked is not None:
                self._sample(now - self._asked)
                self._asked = None
            marks = self._marks
            while marks and marks[0][0] < self._arrived:
                self._sample(now - marks.popleft()[1])
        finally:
            self._lock.release()

    def consumed(self, n: int, now: float) -> int:
        """The reader took *n* bytes at *now*: the bytes to grant the server (0: none yet).

        As Paramiko does, bytes are handed back once more than a tenth of
        the window has been read, not packet by packet; a growth decision
        adds to that grant.
        """
        self._lock.acquire()
        try:
            self._unacked += n
            self._consumed += n
            if self._arrived - self._consumed < CAUGHT_UP:
                self._caught_up = True
            # The epoch's bookkeeping, inline: this runs for every read of every channel.
            start = self._epoch_start
            self._last_consumed, last = now, self._last_consumed
            if start is None or now - last > self._idle:
                self._epoch_start, self._epoch_bytes, self._caught_up = now, 0, False
                grant = 0
            else:
                self._epoch_bytes += n
                grant = self._epoch_ended(now, start) if now - start >= self._epoch else 0
            if self._unacked > self.size // 10:
                grant, self._unacked = grant + self._unacked, 0
            if grant:
                self._marks.append((self._granted, now))
                self._granted += grant
            return grant
        finally:
            self._lock.release()

    def _epoch_ended(self, now: float, start: float) -> int:
        """The epoch that began at *start* is over: the bytes the window grows by."""
        rate, caught_up = self._epoch_bytes / (now - start), self._caught_up
        self._epoch_start, self._epoch_bytes, self._caught_up = now, 0, False
        assert self.round_trip is not None  # an epoch ends only once one is known
        return self._decide(rate, self.round_trip) if caught_up else 0

    def _decide(self, rate: float, rtt: float) -> int:
        if not self.growing or self.size >= self.cap:
            return 0
        before, self._rate_before = self._rate_before, None
        if before is not None and rate < GAIN * before:
            self.growing = False
            return 0
        return self._double_if_bound(rate, rtt)

    def _double_if_bound(self, rate: float, rtt: float) -> int:
        if 2 * rate * rtt <= self.size:
            return 0
        extra = min(self.cap, 2 * self.size) - self.size
        self.size += extra
        self._rate_before = rate
        return extra


__all__ = ["CAP", "FLOOR", "ReceiveWindow"]
