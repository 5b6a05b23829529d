"""Paramiko's ``Transport`` with three fixes: no self-deadlock during re-keying,
the ``exit-signal`` of a killed remote command kept, and no handshake timer left
behind a failed handshake; plus the time a channel last closed, for the pool's
idle times.

Re-keying
---------

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

Exit signals
------------
sshd reports a command killed by a signal (the out-of-memory killer's KILL,
a scheduler's TERM) with ``exit-signal`` instead of ``exit-status``.
Paramiko ignores that request, so without this the death of the remote
server would read as a lost connection.  The signal's name is kept on the
channel, as the attribute named by :data:`EXIT_SIGNAL`.

Handshake timer
---------------
Paramiko arms a ``threading.Timer`` for the handshake timeout and cancels it
only when the handshake completes.  A handshake that fails (no algorithm in
common, the server hanging up) leaves the timer thread running for the whole
timeout after the transport is closed.  Closing cancels it here.

Last channel closed
-------------------
Every channel leaves the transport through ``_unlink_channel``, whether the
server closed it, we did (once the server confirms), or the transport died.
Stamping the time there, once per channel, is how a session knows how long
it has been idle without counting anything on the path data takes.

Packets
-------
Each packet under AES-GCM takes the short path of :mod:`.lean`, read in the
waiting caller's thread (:mod:`.lean_reader`) unless *caller_reads* is false,
when this Paramiko has the internals they use; otherwise Paramiko's own
packetizer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from .lean import LeanPacketizer
from .lean_reader import packetizer_class

#: Attribute of a ``paramiko.Channel`` holding the ``exit-signal`` its server sent.
EXIT_SIGNAL = "_fleche_ssh_exit_signal"


def _handle_request(channel: paramiko.Channel, message: paramiko.Message) -> None:
    """Paramiko's channel-request handler, keeping the ``exit-signal`` it drops."""
    start = message.packet.tell()
    if message.get_text() == "exit-signal":
        message.get_boolean()  # want_reply
        setattr(channel, EXIT_SIGNAL, message.get_text())
    message.packet.seek(start)
    paramiko.Channel._handle_request(channel, message)


class Transport(paramiko.Transport):
    """A ``paramiko.Transport`` that holds back replies during a key exchange, keeps
    exit signals and notes when a channel last closed."""

    def __init__(self, *args: Any, caller_reads: bool = True, **kwargs: Any) -> None:
        self._held: list[Any] = []
        #: ``time.monotonic()`` when a channel of this transport last closed (0: none yet).
        self.channel_closed_at = 0.0
        lean = packetizer_class(caller_reads)
        if lean is not None:  # else the keyword may not exist (lean_internals)
            kwargs.setdefault("packetizer_class", lean)
        super().__init__(*args, **kwargs)
        if isinstance(self.packetizer, LeanPacketizer):
            self.packetizer.attach(self)
        # Paramiko dispatches channel messages through a class-level table looked up
        # on the instance: an instance copy changes only this transport.
        table: dict[int, Any] = dict(paramiko.Transport._channel_handler_table)
        table[MSG_CHANNEL_REQUEST] = _handle_request
        self._channel_handler_table = table

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

    def close(self) -> None:
        # Cancels the handshake timer, which only a completed handshake would.
        self.packetizer.complete_handshake()
        super().close()

    def _unlink_channel(self, chanid: int) -> None:
        super()._unlink_channel(chanid)
        self.channel_closed_at = time.monotonic()
