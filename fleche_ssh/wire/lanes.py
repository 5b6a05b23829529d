"""Which channel a call goes out on: the least loaded, and never a small call behind a large one.

Each open channel of a :class:`~.server.RemoteServer` is a :class:`Lane`: a
:class:`~.pipeline.Pipeline` and the count of calls that chose it and have
not finished.  :func:`choose` decides, for one call, in this order:

1. a lane with no call at all, if there is one;
2. a new channel, while fewer than ``channels`` are open (or opening);
3. the least loaded lane it may be pipelined on;
4. else wait, as a call waited for a free channel before pipelining.

A call is *large* when its request frame is over :data:`LARGE_FRAME` bytes
(known when it is pickled, before a channel is chosen), or when its
answer is expected to be large: ``load_value``, the one call that brings a
value back.  (``load`` answers with a record of digests, which is small,
and is what every lookup makes, so it pipelines like ``contains``.)  A
small call is never pipelined behind a large one in flight: a
``contains`` would wait for all of a 4 GiB load.  It takes another lane,
or opens a channel when ``channels`` allows one, or waits.  A large call
may be pipelined behind anything: it is long itself, and prefers a lane
with fewer large calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Frame
from .pipeline import Pipeline

#: A request frame over this many bytes makes its call large: at tens of MB/s it
#: keeps the channel busy for longer than a round trip of a WAN link.
LARGE_FRAME = 1 << 20
#: Methods whose answer is expected to be large.
LARGE_ANSWERS = frozenset({"load_value"})
#: What :func:`choose` returns to say: open a new channel for this call.
OPEN = "open"


def is_large(method: str, frame: Frame) -> bool:
    """Whether a call keeps its channel busy so long that small calls should not queue behind."""
    return method in LARGE_ANSWERS or len(frame[1]) > LARGE_FRAME


@dataclass(eq=False)
class Lane:
    """One open channel and the calls on it.

    Attributes:
        users: calls that chose this lane and have not finished.
        large: how many of them are large.
    """

    pipeline: Pipeline
    users: int = 0
    large: int = 0


def choose(lanes: list[Lane], *, may_open: bool, large: bool) -> Lane | str | None:
    """The lane for a call, :data:`OPEN` for a new channel, or None to wait.

    A broken lane (its channel lost) is never chosen.
    """
    for lane in lanes:
        if lane.users == 0 and not lane.pipeline.broken:
            return lane
    if may_open:
        return OPEN
    allowed = [lane for lane in lanes if not lane.pipeline.broken and (large or lane.large == 0)]
    if not allowed:
        return None
    return min(allowed, key=lambda lane: (lane.large, lane.users))
