"""``HeldInterrupts``: SIGINT waits for the end of the block, then reaches its own handler.

Pure logic on this process's real signal handling; the sections it guards
are tested against the real sshd in ``test_interrupt.py``.
"""

from __future__ import annotations

import signal
import threading

import pytest

from fleche_ssh.ssh.interrupts import HeldInterrupts


def test_sigint_inside_the_block_raises_only_when_it_ends():
    reached = []
    with pytest.raises(KeyboardInterrupt), HeldInterrupts() as held:
        signal.raise_signal(signal.SIGINT)
        reached.append(held.caught)
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_users_own_handler_runs_once_after_the_block():
    calls: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with HeldInterrupts():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            assert calls == []
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_block_without_sigint_changes_nothing():
    handler = signal.getsignal(signal.SIGINT)
    with HeldInterrupts() as held:
        assert signal.getsignal(signal.SIGINT) is not handler  # swapped for the block
    assert not held.caught
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize("disposition", [signal.SIG_IGN, signal.SIG_DFL])
def test_no_python_handler_no_swap(disposition):
    previous = signal.signal(signal.SIGINT, disposition)
    try:
        with HeldInterrupts():
            assert signal.getsignal(signal.SIGINT) is disposition
    finally:
        signal.signal(signal.SIGINT, previous)


def test_other_threads_swap_nothing():
    seen: list[object] = []

    def work() -> None:
        with HeldInterrupts():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert seen == [signal.default_int_handler]
