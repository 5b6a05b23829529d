"""Every question the connection asks a human goes through here.

One interface serves them all, Paramiko's keyboard-interactive shape::

    handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]

``prompts`` pairs each question with its echo flag; the handler returns
one answer per prompt.  A key passphrase or a password is one hidden
prompt, the unknown-host question one echoed prompt, a one-time code
whatever the server sends.

Handlers are chosen with the cache's ``prompt`` key: ``"auto"`` (a
terminal, or the Jupyter kernel's own input box), ``"none"`` (never ask),
a callable, or ``"module:function"`` naming one.

Paramiko calls its keyboard-interactive handler on its own transport
thread, where ipykernel's input requests do not work and a terminal
prompt would interleave with the caller's output.  :func:`answer_while`
therefore runs the blocking authentication call on a worker thread and
answers each question on the thread that made the cache operation.
"""

from __future__ import annotations

import getpass
import importlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError, PromptUnavailable

logger = logging.getLogger("fleche_ssh.prompts")

Prompts = Sequence[tuple[str, bool]]
Handler = Callable[[str, str, Prompts], list[str]]
T = TypeVar("T")

HOW_TO = (
    'Set prompt = "module:function" in fleche.toml (or pass prompt=callable in Python) to '
    "answer it, or connect from a terminal or a Jupyter notebook."
)


def in_worker() -> bool:
    """True in a worker process of a pool (multiprocessing, concurrent.futures, Dask).

    A worker may have inherited the terminal's stderr or the kernel's modules,
    but nobody watches it there: its questions would go nowhere, and its
    progress bars would interleave on the parent's terminal.
    """
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return True
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except (ValueError, AttributeError):
        return False
    return True


def in_kernel() -> bool:
    """True inside an IPython kernel, whose ``input``/``getpass`` reach the notebook.

    A worker forked from the kernel (a process pool) still has ipykernel
    loaded, but its input requests would go nowhere: only the kernel's own
    process counts.
    """
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return False
    get = getattr(shell, "get_ipython", None)
    ip = get() if get else None
    return ip is not None and getattr(ip, "kernel", None) is not None


def is_terminal(stream: Any) -> bool:
    """Whether *stream* (``sys.stdin``, ``sys.stderr``) is a terminal, where a person sits."""
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def has_terminal() -> bool:
    return is_terminal(sys.stdin)


def _ask_each(title: str, instructions: str, prompts: Prompts) -> list[str]:
    """Ask through ``input``/``getpass``: a terminal's, or the kernel's replacements."""
    if title or instructions:
        print("\n".join(part for part in (title, instructions) if part), file=sys.stderr)
    return [input(text) if echo else getpass.getpass(text) for text, echo in prompts]


def auto(title: str, instructions: str, prompts: Prompts) -> list[str]:
    """Ask in the terminal or the notebook; fail at once where there is neither."""
    if has_terminal() or in_kernel():
        return _ask_each(title, instructions, prompts)
    return none(title, instructions, prompts)


def none(title: str, instructions: str, prompts: Prompts) -> list[str]:
    """Never ask: fail with the server's question in the message."""
    asked = "; ".join(repr(text.strip()) for text, _ in prompts) or repr(title)
    raise PromptUnavailable(f"The connection asked {asked}, but nobody can answer here. {HOW_TO}")


BUILTIN: dict[str, Handler] = {"auto": auto, "none": none}


def resolve_handler(spec: str | Handler | None) -> Handler:
    """The handler a ``prompt`` key names: built-in, ``module:function`` or a callable."""
    if spec is None:
        return auto
    return resolve_named("prompt", spec, BUILTIN)


def resolve_named(key: str, spec: Any, builtin: dict[str, Any]) -> Any:
    """What a key naming a callable (``prompt``, ``progress``) means.

    One of *builtin*'s names, a callable as it is, or ``"module:function"``
    imported: fleche.toml can only name a function, Python can pass it.
    """
    if callable(spec):
        return spec
    if spec in builtin:
        return builtin[spec]
    choices = ", ".join(repr(name) for name in builtin)
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key} = {spec!r}: expected {choices} or 'module:function'")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{key} = {spec!r}: cannot import it: {e}") from None
    if not callable(found):
        raise ConfigError(f"{key} = {spec!r} is not callable")
    return found


@dataclass(frozen=True)
class Prompter:
    """A handler plus the questions fleche-ssh itself asks with it."""

    handler: Handler

    def ask(self, title: str, instructions: str, prompts: Prompts) -> list[str]:
        answers = list(self.handler(title, instructions, list(prompts)))
        if len(answers) != len(prompts):
            raise PromptUnavailable(
                f"The prompt handler returned {len(answers)} answers for {len(prompts)} "
                f"questions ({title or 'authentication'})."
            )
        return [str(a) for a in answers]

    def secret(self, question: str) -> str:
        return self.ask("", "", [(question, False)])[0]

    def confirm(self, question: str) -> bool:
        answer = self.ask("", "", [(question, True)])[0]
        return answer.strip().lower() in ("yes", "y")


@dataclass
class _Question:
    args: tuple[str, str, list[tuple[str, bool]]]
    done: threading.Event
    answer: list[str] | None = None
    error: BaseException | None = None


def answer_while(work: Callable[[Handler], T], prompter: Prompter, timeout: float) -> T:
    """Run ``work(handler)`` on a worker thread; answer its questions on this thread.

    ``handler`` is what to give Paramiko: it posts the question to this
    thread and waits for the answer.  Rounds with no prompts are answered
    at once with an empty list, as the protocol requires.  Everything is
    bounded by *timeout* seconds.  The work's end is posted to the same
    queue (as None), so the result reaches the caller the moment it is
    ready, not at the next turn of a polling loop.
    """
    questions: queue.Queue[_Question | None] = queue.Queue()
    outcome: dict[str, Any] = {}

    def handler(title: str, instructions: str, prompts: Prompts) -> list[str]:
        if not prompts:
            return []
        question = _Question((title, instructions, list(prompts)), threading.Event())
        questions.put(question)
        if not question.done.wait(timeout):
            question.error = PromptUnavailable(
                f"No answer to {title or 'the prompt'} within {timeout:.0f} s")
        if question.error is not None or question.answer is None:
            # Raising here would kill Paramiko's transport thread with a traceback on
            # stderr; an empty answer fails the round cleanly and the error is re-raised
            # on the caller's thread below.
            outcome.setdefault("unanswered", question.error)
            return ["" for _ in prompts]
        return question.answer

    def run() -> None:
        try:
            outcome["value"] = work(handler)
        except BaseException as e:
            outcome["error"] = e
        finally:
            questions.put(None)

    worker = threading.Thread(target=run, name="fleche-ssh-auth", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            question = questions.get(timeout=left)
        except queue.Empty:
            break
        if question is None:
            break
        try:
            question.answer = prompter.ask(*question.args)
        except BaseException as e:
            question.error = e
        question.done.set()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise PromptUnavailable(f"Authentication did not finish within {timeout:.0f} s")
    if outcome.get("unanswered") is not None:
        raise outcome["unanswered"]
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
