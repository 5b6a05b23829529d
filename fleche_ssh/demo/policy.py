"""Who may log in to the demo server, and what they may ask of it.

One :class:`Policy` per connection: Paramiko asks it about every login
attempt and channel request.  One key may log in (any user name), then
answer a one-time code if the server has one; only ``exec`` requests on
``session`` channels are served.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

import paramiko

logger = logging.getLogger(__name__)

CODE_PROMPT = "One-time code: "


class Policy(paramiko.ServerInterface):
    """Per-connection authentication state and channel policy.

    paramiko calls :meth:`check_auth_publickey` *before* it has verified the
    client's signature (and also for signature-less "would you accept this key?"
    probes), so the key match alone must not count as the first factor.  The
    first factor is only recorded once the very key object paramiko hands us
    has successfully verified a signature; see :meth:`check_auth_publickey`.

    *run* starts an exec request's command on its channel (False: refused).
    """

    def __init__(self, *, authorized_key: paramiko.PKey, one_time_code: str | None,
                 on_code_requested: Callable[[str], None] | None,
                 run: Callable[[paramiko.Channel, bytes], bool]):
        self.authorized_key = authorized_key
        self.one_time_code = one_time_code
        self.on_code_requested = on_code_requested
        self.run = run
        self.key_verified = False
        self.code_sent = False

    # -- authentication -------------------------------------------------
    def get_allowed_auths(self, username: str) -> str:
        if self.one_time_code is not None and self.key_verified:
            return "keyboard-interactive"
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if not hmac.compare_digest(key.asbytes(), self.authorized_key.asbytes()):
            return paramiko.AUTH_FAILED
        if self.one_time_code is None:
            # paramiko itself turns this into AUTH_FAILED if the signature is bad.
            return paramiko.AUTH_SUCCESSFUL
        # Two-factor: remember the key only once its signature checks out.
        verify = key.verify_ssh_sig

        def verify_and_record(data, msg):
            ok = verify(data, msg)
            if ok:
                self.key_verified = True
            return ok

        key.verify_ssh_sig = verify_and_record
        return paramiko.AUTH_PARTIALLY_SUCCESSFUL

    def check_auth_interactive(self, username: str, submethods):
        code = self.one_time_code
        if code is None or not self.key_verified:
            return paramiko.AUTH_FAILED
        self.code_sent = True
        if self.on_code_requested is not None:
            try:
                self.on_code_requested(code)
            except Exception:
                logger.exception("on_code_requested callback failed")
        query = paramiko.InteractiveQuery("", "")
        query.add_prompt(CODE_PROMPT, echo=False)
        return query

    def check_auth_interactive_response(self, responses) -> int:
        code = self.one_time_code
        if code is None or not self.key_verified or not self.code_sent:
            return paramiko.AUTH_FAILED
        self.code_sent = False
        if len(responses) != 1:
            return paramiko.AUTH_FAILED
        answer = str(responses[0]).strip().encode("utf-8")
        if hmac.compare_digest(answer, code.encode("utf-8")):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    # -- channels -------------------------------------------------------
    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command) -> bool:
        if isinstance(command, str):
            command = command.encode("utf-8", "surrogateescape")
        return self.run(channel, command)

    def check_channel_pty_request(self, *args, **kwargs) -> bool:
        return False

    def check_channel_shell_request(self, channel) -> bool:
        return False

    def check_channel_subsystem_request(self, channel, name) -> bool:
        return False

    def check_channel_env_request(self, channel, name, value) -> bool:
        return False
