"""Paramiko's ``Transport``, without its self-deadlock during re-keying.

After 512 MiB in either direction Paramiko negotiates new keys.  Until they
are in use, no other message may be sent, so ``_send_user_message`` waits for
the exchange to finish.  The transport's own thread must never wait there: it
is the thread that reads the server's half of the exchange.  Yet it does,
when a message the server sent before it saw our key exchange arrives in the
meantime and needs an answer -- a channel closing (the remote server exiting
after ``close()``/``reconnect()``) or a channel request wanting a reply (a
server keepalive).  The thread then blocks itself for 30 s and Paramiko
drops the whole connection with "Key-exchange timed out waiting for key
negotiation" (paramiko issue 822, open since 2016).  Moving a few large values
and closing a cache is enough to hit it.

Here the transport thread never waits: a message it would have to wait for
is held and sent as soon as the new keys are in use, which is also what the
protocol asks for (no connection messages during a key exchange).
"""

from __future__ import annotations

import threading
from typing import Any

import paramiko


class Transport(paramiko.Transport):
    """A ``paramiko.Transport`` whose own thread holds back replies during a key exchange."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held: list[Any] = []
        super().__init__(*args, **kwargs)

    def _send_user_message(self, data: Any) -> None:
        if threading.current_thread() is not self:
            super()._send_user_message(data)
            return
        with self.clear_to_send_lock:
            if not self.active:
                return
            if self.clear_to_send.is_set():
                self._send_message(data)
            else:
                self._held.append(data)

    def _parse_newkeys(self, m: paramiko.Message) -> None:
        super()._parse_newkeys(m)
        with self.clear_to_send_lock:
            held, self._held = self._held, []
            for data in held:
                self._send_message(data)
