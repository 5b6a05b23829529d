"""A real Jupyter kernel, driven as a notebook drives it: cells in, iopub messages out."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def kernel() -> Iterator[tuple[Any, Any]]:
    """``(manager, client)`` of a fresh python3 kernel with this process's environment."""
    import jupyter_client  # a test dependency (the "test" extra): missing, the test fails

    manager, client = jupyter_client.manager.start_new_kernel(
        kernel_name="python3", startup_timeout=60, env=dict(os.environ))
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def cell_messages(client: Any, msg_id: str, timeout: float = 120) -> list[dict]:
    """The iopub messages of the cell *msg_id*, until the kernel is idle again."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages


def run_cell(client: Any, code: str, timeout: float = 120) -> tuple[list[dict], dict]:
    """Execute *code*; the iopub messages it caused and its execute_reply."""
    messages = cell_messages(client, client.execute(code), timeout)
    return messages, client.get_shell_msg(timeout=10)


def printed(messages: list[dict], name: str = "stdout") -> str:
    """What the cell wrote to *name* (``stdout`` or ``stderr``)."""
    return "".join(m["content"]["text"] for m in messages
                   if m["header"]["msg_type"] == "stream" and m["content"]["name"] == name)
