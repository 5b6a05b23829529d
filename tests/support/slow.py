"""A slow link to the test sshd: :mod:`.relay`'s delaying relay, as a host alias.

The relay adds a fixed delay each way and caps each direction at
:data:`RATE`, as a VPN does: a 256 MiB value takes seconds instead of a
fraction of one, long enough for a progress bar to appear and for Ctrl-C
to land in the middle of it, with nothing mocked.  The delay alone is not
enough: the receive window grows to fill a link that only delays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .keys import hash_known_host, known_hosts_entry
from .relay import DelayRelay

SLOW_HOST = "slowhost"
#: Bytes per second each way (640 Mbit/s): a 256 MiB value takes about 3.4 s.
RATE = 80e6


@contextlib.contextmanager
def slow_host(client_home: Any, one_way_delay: float = 0.025) -> Iterator[str]:
    """``slowhost`` in *client_home*'s ssh config: the test sshd behind a relay."""
    sshd = client_home.sshd
    with DelayRelay(sshd.port, one_way_delay, rate=RATE) as relay:
        entry = known_hosts_entry(sshd.host, relay.port)
        with client_home.known_hosts.open("a") as f:
            for pub in sshd.host_public_keys.values():
                f.write(f"{hash_known_host(entry)} {pub}\n")
        block = (f"\nHost {SLOW_HOST}\n    HostName 127.0.0.1\n    Port {relay.port}\n"
                 "    User root\n"
                 f"    IdentityFile {client_home.identity}\n    IdentitiesOnly yes\n"
                 f"    UserKnownHostsFile {client_home.known_hosts}\n"
                 "    StrictHostKeyChecking yes\n")
        with client_home.config.open("a") as f:
            f.write(block)
        yield SLOW_HOST


def store(make: Any, value: bytes) -> str:
    """Save *value* in the remote cache over the direct link; its key, for ``load_value``."""
    from fleche.call import Call
    from fleche.digest import digest

    direct = make()
    direct.save(Call(name="big", arguments={}, result=value))
    direct.close()
    return str(digest(value))
