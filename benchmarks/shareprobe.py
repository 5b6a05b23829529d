"""One process riding another's login: round trips and bulk through the holder.

Usage: ``shareprobe.py CALLS SIZE TAG`` with a pickled ``ParamikoCache``,
base64-encoded, on stdin (run by ``measure.through_holder``).

The pickle carries the parent's offer of its login, so every channel of
this process goes through the parent's holder: the relay a pool worker
uses.  Connecting, the ``info`` handshake and a warm-up (round trips, and
a value of the timed size saved and loaded: :func:`measure.warm`) happen before
anything is timed.  Prints one JSON line.
"""

from __future__ import annotations

import base64
import json
import pickle
import sys

from measure import bulk, make_value, round_trips, warm


def main(argv: list[str]) -> int:
    calls, size, tag = (int(a) for a in argv)
    cache = pickle.loads(base64.b64decode(sys.stdin.read()))
    try:
        cache.info()
        round_trips(cache, 20)
        warm(cache, size, tag + (1 << 40))
        trip = round_trips(cache, calls)
        moved = bulk(cache, make_value(size, tag))
    finally:
        cache.close()
    print(json.dumps({"round_trip": trip, "save": moved.save, "load": moved.load}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
