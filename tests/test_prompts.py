"""Prompt handlers and the hand-over of questions to the caller's thread (pure logic)."""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
import types

import pytest

from fleche_ssh import prompts
from fleche_ssh.errors import ConfigError, PromptUnavailable


def test_builtin_and_named_handlers_resolve(tmp_path, monkeypatch):
    assert prompts.resolve_handler(None) is prompts.auto
    assert prompts.resolve_handler("auto") is prompts.auto
    assert prompts.resolve_handler("none") is prompts.none
    (tmp_path / "answering.py").write_text("def answer(t, i, p):\n    return ['x'] * len(p)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert prompts.resolve_handler("answering:answer")("", "", [("q", False)]) == ["x"]


@pytest.mark.parametrize("spec, says", [
    ("nonsense", "expected 'auto', 'none' or 'module:function'"),
    ("no_such_module_xyz:f", "cannot import"),
    ("os:sep", "not callable"),
])
def test_bad_handler_specs_are_config_errors(spec, says):
    with pytest.raises(ConfigError, match=says):
        prompts.resolve_handler(spec)


def test_none_quotes_the_question_and_says_what_to_do():
    with pytest.raises(PromptUnavailable) as failure:
        prompts.none("", "", [("Verification code: ", False)])
    assert "'Verification code:'" in str(failure.value)
    assert "module:function" in str(failure.value)


def test_a_handler_must_answer_every_prompt():
    prompter = prompts.Prompter(lambda t, i, p: ["only one"])
    with pytest.raises(PromptUnavailable, match="1 answers for 2 questions"):
        prompter.ask("", "", [("a", False), ("b", True)])


def test_questions_are_answered_on_the_calling_thread():
    seen = []

    def handler(title, instructions, questions):
        seen.append(threading.current_thread())
        return ["42" for _ in questions]

    def work(ask):
        assert ask("t", "i", []) == []  # a round without prompts needs no human
        return ask("t", "i", [("code: ", False)])

    answers = prompts.answer_while(work, prompts.Prompter(handler), timeout=10)
    assert answers == ["42"]
    assert seen == [threading.current_thread()]


def test_an_unanswerable_question_is_raised_on_the_calling_thread():
    def work(ask):
        return ask("", "", [("code: ", False)])

    started = time.monotonic()
    with pytest.raises(PromptUnavailable, match="code:"):
        prompts.answer_while(work, prompts.Prompter(prompts.none), timeout=30)
    assert time.monotonic() - started < 5


def test_work_that_outlives_the_timeout_is_reported():
    with pytest.raises(PromptUnavailable, match="did not finish within 1 s"):
        prompts.answer_while(lambda ask: time.sleep(5), prompts.Prompter(prompts.none),
                             timeout=1)


def _fake_kernel(monkeypatch):
    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))


def _report_in_kernel(queue):
    queue.put(prompts.in_kernel())


def test_a_forked_worker_of_a_kernel_does_not_ask_the_notebook(monkeypatch):
    _fake_kernel(monkeypatch)
    assert prompts.in_kernel() is True
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_report_in_kernel, args=(queue,))
    worker.start()
    worker.join(30)
    assert queue.get(timeout=5) is False
