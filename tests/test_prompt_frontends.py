"""The ``auto`` prompt handler where humans really are: a terminal and a Jupyter kernel.

Both run the cache in a separate process against the real 2FA sshd and
answer the one-time code the way a person would: typed into a pseudo-
terminal, or sent back as the notebook's input reply.
"""

from __future__ import annotations

import os
import select
import textwrap
import time

import pytest
from support.terminal import python_in_pty

pytestmark = pytest.mark.timeout(180)


def _cell(remote_python: str, remote_dir) -> str:
    return textwrap.dedent(
        f"""
        from fleche_ssh import ParamikoCache
        cache = ParamikoCache(host="totphost", python={remote_python!r},
                              workdir={str(remote_dir)!r}, prompt="auto")
        print("CWD=" + cache.info()["cwd"], flush=True)
        """
    )


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"did not see {needle!r} within {timeout} s; got {out!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_terminal_prompt_hides_the_code(client_home, remote_dir, remote_python):
    code = client_home.sshd_totp.code()
    # The child: a terminal session running the cache.
    with python_in_pty(_cell(remote_python, remote_dir)) as child:
        fd = child.fd
        before = _read_until(fd, b"One-time password", 60)
        if not before.rstrip().endswith(b":"):
            before += _read_until(fd, b":", 10)
        os.write(fd, code.encode() + b"\n")
        after = _read_until(fd, b"CWD=", 60) + _read_until(fd, b"\n", 10)
    assert child.exit_code == 0
    assert f"CWD={remote_dir}".encode() in after
    assert code.encode() not in before + after


def test_notebook_kernel_asks_through_the_notebook(client_home, remote_dir, remote_python):
    import jupyter_client  # a test dependency (the "test" extra): missing, the test fails
    manager, client = jupyter_client.manager.start_new_kernel(
        kernel_name="python3", startup_timeout=60, env=dict(os.environ)
    )
    try:
        client.execute(_cell(remote_python, remote_dir), allow_stdin=True)
        request = client.get_stdin_msg(timeout=60)
        assert request["header"]["msg_type"] == "input_request"
        assert "One-time password" in request["content"]["prompt"]
        assert request["content"]["password"] is True
        client.input(client_home.sshd_totp.code())

        printed = ""
        deadline = time.monotonic() + 60
        while "CWD=" not in printed and time.monotonic() < deadline:
            msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["header"]["msg_type"] == "stream":
                printed += msg["content"]["text"]
            elif msg["header"]["msg_type"] == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
        assert f"CWD={remote_dir}" in printed
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
