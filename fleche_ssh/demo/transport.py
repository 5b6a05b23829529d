"""The demo server's Transport: it says when an exec request's reply has gone out.

paramiko invokes ``check_channel_exec_request`` from the transport thread
and only sends the CHANNEL_SUCCESS reply *after* it returns.  A command that
finishes instantly could otherwise get its output, exit status and CLOSE
on the wire before that reply, and paramiko's client then fails
``exec_command`` with "Channel closed".  The reply is the next message the
transport thread itself sends after the callback, so pending sessions are
marked as replied right after that send.  (This hooks a private paramiko
method; sessions also stop waiting after a few seconds.)
"""

from __future__ import annotations

import threading
from typing import Any

import paramiko


class ReplyTransport(paramiko.Transport):
    """A server Transport that sets each event of :attr:`awaiting_reply` after the next reply."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting_reply: list[threading.Event] = []

    def _send_user_message(self, data: Any) -> None:
        try:
            return super()._send_user_message(data)
        finally:
            if self.awaiting_reply and threading.current_thread() is self:
                pending, self.awaiting_reply = self.awaiting_reply, []
                for replied in pending:
                    replied.set()
