"""The remote fleche server(s) of one cache: a small pool of exec channels.

Every channel runs its own ``python -m fleche remote --serve``, and the
calls of several threads are pipelined on it (:mod:`.pipeline`): their
requests go out back to back and the answers are matched to them in
order, so eight threads get nearly eight times the calls per second of
one over a link with latency, from one remote process.  A call takes an
idle channel, else opens one while fewer than ``channels`` are open, else
joins the least loaded; a small call never queues behind a large one
(:mod:`.lanes`).  The first server of a cache starts alone, and the calls
of other threads are pipelined on it until it has answered once: servers
starting together race to create the remote cache's storage (fleche's
``sql`` backend checks for its tables, then creates them), and the loser
exits with status 1.

How that command is started is the *opener*'s business, given to
:class:`RemoteServer` as httpx gives a client its transport: by default the
lookup order of :mod:`.sources` (a live OpenSSH master, else a
:class:`~.paramiko_process.ParamikoProcess` on the cache's one shared,
authenticated transport); in tests, :class:`~.memory.MemoryRemote`.  The
pool, the frames and the error messages above it are the same whichever
carries the bytes.

A call interrupted (``KeyboardInterrupt`` from Ctrl-C or a notebook's
"interrupt kernel") drops its channel at once, without the bounded wait for
an exit status: the remote server, its stdio gone, ends, a value it was
still receiving is not stored, the calls pipelined on the same channel fail
saying so, and the login under it stays for the next call.

Coming back after a network drop or a laptop's sleep is handled here too,
for the same reason: whichever source carried the lost connection, an
idle channel known to be dead is dropped before a call (the call logs in
again, through the source), and a call in :attr:`RemoteServer.RETRIED`
whose connection was lost under it is sent once more on a new one.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from ..errors import ConnectionLost, LoginLost, PromptUnavailable, RemoteConnectionError
from ..progress import Progress, resolve_progress
from ..ssh.pool import POOL
from .channel import EXIT_WAIT, ExecChannel
from .command import server_command
from .frames import Frame, encode_frame
from .lanes import OPEN, Lane, choose, is_large
from .pipeline import Broken, Pipeline
from .process import RemoteProcess
from .sources import open_process

if TYPE_CHECKING:
    from ..cache import ParamikoCache

logger = logging.getLogger("fleche_ssh")

#: Starts the remote server's command line and returns it running.
Opener = Callable[[str], RemoteProcess]


@dataclass
class _Pool:
    lanes: list[Lane] = field(default_factory=list)
    #: Channels being opened, which count towards ``channels`` already.
    opening: int = 0

    @property
    def open(self) -> int:
        return len(self.lanes) + self.opening


class RemoteServer:
    """The remote fleche server(s) of one cache: a small pool of exec channels.

    Duck-types the stock ``_Connection`` (``call``, ``reconnect``,
    ``close``), which is all ``SshCache`` uses of its connection.

    Args:
        cache: the cache whose keys say which command to run, and where.
        opener: starts that command; None for the lookup order of
            :mod:`.sources` (a live OpenSSH master, else a Paramiko channel on
            the cache's pooled session).
    """

    #: The methods of fleche's ``_CLIENT_METHODS`` (plus ``info``) sent once more, on a
    #: new connection, when the connection was lost under them (:class:`ConnectionLost`).
    #: They only read, so doing one twice changes nothing.  A write (``save``,
    #: ``save_value``, ``prepare``, ``evict``) is never repeated: its frame may have
    #: reached the remote cache before the loss.  A remote server that ended, or a
    #: remote cache that raised, is never a reason to repeat anything.
    RETRIED: ClassVar[frozenset[str]] = frozenset(
        {"contains", "load", "load_value", "info", "expand", "query"})

    def __init__(self, cache: ParamikoCache, opener: Opener | None = None) -> None:
        # A proxy: the server must not keep its cache alive (a dropped cache closes it).
        self._cache = cast("ParamikoCache", weakref.proxy(cache))
        self._opener = opener
        self._host = cache.host
        self._limit = cache.channels
        self._progress = Progress(cache.host, resolve_progress(cache.progress))
        self._pool = _Pool()
        # Taken directly on every call: a plain lock is a C call, Condition's own
        # enter and exit are Python frames.  Where every call takes it, it is taken
        # with acquire() and release(), half the cost of a with statement.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._generation = 0
        #: Calls asleep in :meth:`_borrow`: only they need a notify.
        self._waiting = 0
        #: Whether a remote server of this cache has answered a request: from then on
        #: its storage exists, and further servers may start together.
        self._answered = False
        #: Why the connection of this cache's channels was lost, until a channel opens again.
        self._lost: str | None = None
        POOL.track(self)
        # A cache dropped without close() would leave its channels open until the
        # transport closes, which for a pooled transport is the end of the process:
        # each one a remote server process and a local stderr thread.  No wait for
        # the exit status here, as a finalizer may run on any thread.
        weakref.finalize(cache, self.close, 0.0)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's channels without closing them.

        They belong to the parent's transport, which has no thread here;
        using them would interleave this process's packets with the
        parent's on the one socket.  The next call opens a channel on a
        transport of this process's own.
        """
        self._pool = _Pool()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._generation += 1
        self._waiting = 0
        self._lost = None

    @property
    def idle_channels(self) -> int:
        """How many channels wait for a call."""
        with self._lock:
            return sum(lane.users == 0 and not lane.pipeline.broken for lane in self._pool.lanes)

    @property
    def open_channels(self) -> int:
        """How many channels are open, idle or in a call."""
        with self._lock:
            return self._pool.open

    def idle_processes(self) -> list[RemoteProcess]:
        """The remote processes of the idle channels: what ``check`` reports the flow control of."""
        with self._lock:
            return [lane.pipeline.channel.process for lane in self._pool.lanes
                    if lane.users == 0 and not lane.pipeline.broken]

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        # Pickled before a channel is chosen: a value that cannot be sent fails
        # here, nothing is sent, and the server keeps running.
        frame = encode_frame((method, args, kwargs))
        large = is_large(method, frame)
        # Asked once: two logger.debug calls that log nothing cost a small call 1%.
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            logger.debug("rpc → %s", method)
        try:
            tag, payload = self._exchange(method, frame, large)
        except ConnectionLost:
            if method not in self.RETRIED:
                raise
            logger.info("connection to %s lost during %r; retrying it once on a new connection",
                        self._host, method)
            tag, payload = self._exchange(method, frame, large)
        if debug:
            logger.debug("rpc ← %s %s", method, tag)
        if tag == "ok":
            return payload
        if tag == "err":
            if isinstance(payload, BaseException):
                # "No space left on device" alone does not say on which machine.
                payload.add_note(f"(raised by the remote cache on {self._host} in {method!r})")
            raise payload
        raise RemoteConnectionError(f"Unexpected response tag from the remote cache: {tag!r}")

    def _exchange(self, method: str, frame: Frame, large: bool) -> tuple[str, Any]:
        """*frame* out on a lane, the answer's ``(tag, payload)`` back."""
        while True:
            lane, generation = self._borrow(large)
            try:
                answer = lane.pipeline.call(method, frame)
                self._answered = True
                return answer
            except Broken:
                continue  # lost before this call sent anything: on another channel
            except ConnectionLost:
                self._lost = _reason(lane.pipeline.channel)
                raise
            finally:
                self._give_back(lane, generation, large)

    def _borrow(self, large: bool) -> tuple[Lane, int]:
        dead: list[Lane] = []
        self._lock.acquire()
        try:
            while True:
                pool = self._pool
                dead += self._drop_lost(pool)
                # Until one server has answered, it is the only one: its storage then exists.
                open_now = pool.open
                may_open = open_now < self._limit and (self._answered or not open_now)
                chosen = choose(pool.lanes, may_open=may_open, large=large)
                if isinstance(chosen, Lane):
                    chosen.users += 1
                    chosen.large += large
                    return chosen, self._generation
                if chosen == OPEN:
                    break
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
            pool.opening += 1
            generation = self._generation
        finally:
            self._lock.release()
            # Outside the lock: closing waits a moment for the stderr thread, and
            # every other call would wait behind it.
            for lane in dead:
                lane.pipeline.close(0.0)
        try:
            lane = Lane(Pipeline(self._open(), host=self._host), users=1, large=int(large))
        except BaseException:
            with self._lock:
                pool.opening -= 1
                self._cond.notify_all()
            raise
        with self._lock:
            pool.opening -= 1
            pool.lanes.append(lane)
            self._cond.notify_all()
        return lane, generation

    def _drop_lost(self, pool: _Pool) -> list[Lane]:
        """Forget broken lanes, and idle ones whose connection went while they waited.

        A call then logs in again instead of failing on a channel known to
        be dead.  Asks no I/O: :meth:`~.process.RemoteProcess.known_lost` is a
        flag.  Returns the idle dead lanes, for the caller to close once it
        has let go of the lock.
        """
        kept: list[Lane] = []
        dead: list[Lane] = []
        for lane in pool.lanes:
            pipeline = lane.pipeline
            if pipeline.broken:
                continue
            if lane.users == 0 and pipeline.channel.process.known_lost():
                self._lost = _reason(pipeline.channel)
                dead.append(lane)
                continue
            kept.append(lane)
        if len(kept) < len(pool.lanes):
            pool.lanes[:] = kept
        return dead

    def _give_back(self, lane: Lane, generation: int, large: bool) -> None:
        self._lock.acquire()
        try:
            lane.users -= 1
            lane.large -= large
            # A lane of an earlier generation (close() came while it was in use) is
            # closed by the last call on it.
            stale = generation != self._generation and lane.users == 0
            if self._waiting:
                self._cond.notify_all()
        finally:
            self._lock.release()
        if stale:
            lane.pipeline.close()

    def _open(self) -> ExecChannel:
        cache = self._cache
        command = server_command(cache.python, cache.cache_name, cache.setup_commands,
                                 cache.workdir)
        lost = self._lost
        try:
            process = (self._opener(command) if self._opener is not None
                       else open_process(cache, command))
        except PromptUnavailable as e:
            if lost is None:
                raise
            error = LoginLost(
                f"The login to {self._host} was lost ({lost}) and cannot be made again "
                f"without an answer. {e} A process that cannot ask can use a login held "
                f"outside it, which a terminal can restore: an OpenSSH master (ControlMaster "
                f"auto with ControlPersist), or fleche-ssh's control_persist."
            )
            for note in getattr(e, "__notes__", ()):  # what the lookup order said
                error.add_note(note)
            raise error from e
        except RemoteConnectionError as e:
            if lost is not None:
                e.add_note(f"The connection to {self._host} was lost ({lost}); connecting "
                           f"again failed.")
            elif isinstance(e, ConnectionLost):  # found dead by the channel's opening
                self._lost = "it closed as a channel opened"
            raise
        self._lost = None
        return ExecChannel(process, host=self._host, progress=self._progress)

    def reconnect(self) -> None:
        """Close this cache's channels; the next call opens a new one on the live transport."""
        self.close()

    def close(self, wait: float = EXIT_WAIT) -> None:
        """Close the idle channels, waiting up to *wait* s for each remote server to exit."""
        with self._lock:
            lanes, self._pool = self._pool.lanes, _Pool()
            idle = [lane for lane in lanes if lane.users == 0]
            self._generation += 1
            self._cond.notify_all()
        for lane in idle:
            lane.pipeline.close(wait)


def _reason(channel: ExecChannel) -> str:
    """Why *channel*'s connection went, as short as the facts allow."""
    return channel.process.lost_reason() or "the connection closed"
