"""Which handler answers, what it shows and hides, and what reaches the caller (pure logic).

Terminal and kernel detection is checked in-process by giving the process
the stdin or the modules it would have in each place; the questions go
through the real ``input``/``getpass`` replaced by a scripted user.
"""

from __future__ import annotations

import io
import multiprocessing
import sys
import threading
import time
import types

import pytest

from fleche_ssh import prompts
from fleche_ssh.errors import ConfigError, PromptUnavailable


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class ClosedStdin:
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def scripted_user(monkeypatch, answers: dict[str, str]) -> list[tuple[str, str]]:
    """Answer ``input`` and ``getpass`` from *answers*; record (function, prompt) pairs."""
    asked: list[tuple[str, str]] = []

    def reply(how):
        def ask(text=""):
            asked.append((how, text))
            return answers[text]
        return ask

    monkeypatch.setattr("builtins.input", reply("input"))
    monkeypatch.setattr(prompts.getpass, "getpass", reply("getpass"))
    return asked


def kernel(monkeypatch, *, ipykernel=True, shell=None, get_ipython=True):
    module = types.SimpleNamespace()
    if get_ipython:
        module.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", module)
    if ipykernel:
        monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    else:
        monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


# --- where a human can be asked -------------------------------------------------------


@pytest.mark.parametrize(("stdin", "terminal"), [
    (Tty(), True), (io.StringIO(), False), (None, False), (ClosedStdin(), False),
    (object(), False),  # no isatty at all
])
def test_a_terminal_is_a_stdin_that_is_a_tty(monkeypatch, stdin, terminal):
    monkeypatch.setattr(sys, "stdin", stdin)
    assert prompts.has_terminal() is terminal


def test_the_kernel_is_ipython_with_a_kernel(monkeypatch):
    kernel(monkeypatch, shell=types.SimpleNamespace(kernel=object()))
    assert prompts.in_kernel() is True


def test_a_child_process_of_the_kernel_is_not_the_kernel(monkeypatch):
    """A process pool's worker has ipykernel loaded, but nobody reads its input requests."""
    kernel(monkeypatch, shell=types.SimpleNamespace(kernel=object()))
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    assert prompts.in_kernel() is False


@pytest.mark.parametrize("place", ["no IPython", "no ipykernel", "terminal IPython",
                                   "IPython not running", "no get_ipython"])
def test_other_pythons_are_not_the_kernel(monkeypatch, place):
    if place == "no IPython":
        monkeypatch.delitem(sys.modules, "IPython", raising=False)
        monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    elif place == "no ipykernel":
        kernel(monkeypatch, ipykernel=False, shell=types.SimpleNamespace(kernel=object()))
    elif place == "terminal IPython":
        kernel(monkeypatch, shell=types.SimpleNamespace())
    elif place == "IPython not running":
        kernel(monkeypatch, shell=None)
    else:
        kernel(monkeypatch, get_ipython=False)
    assert prompts.in_kernel() is False


def test_a_process_pool_worker_is_a_worker(monkeypatch):
    """Nobody watches a pool worker's terminal: it neither asks nor draws a bar."""
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    assert prompts.in_worker() is True


@pytest.mark.parametrize("dask", ["not imported", "imported"])
def test_the_main_process_is_not_a_worker(monkeypatch, dask):
    """Importing distributed (a Client in a notebook) does not make this process a worker."""
    if dask == "imported":
        import distributed

        monkeypatch.setitem(sys.modules, "distributed", distributed)
    else:
        monkeypatch.delitem(sys.modules, "distributed", raising=False)
    assert prompts.in_worker() is False


def test_a_task_on_a_dask_worker_runs_in_a_worker():
    """A real Dask worker, its threads in this process: its tasks see themselves in a worker."""
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, timeout=60) as client:
        assert client.submit(prompts.in_worker, pure=False).result(timeout=60) is True
    assert prompts.in_worker() is False


def test_auto_asks_in_a_terminal_echoing_only_what_may_be_shown(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", Tty())
    asked = scripted_user(monkeypatch, {"Username: ": "ada", "Password: ": "s3cret"})
    answers = prompts.auto("Login", "Enter both", [("Username: ", True), ("Password: ", False)])
    assert answers == ["ada", "s3cret"]
    assert asked == [("input", "Username: "), ("getpass", "Password: ")]
    assert capsys.readouterr().err == "Login\nEnter both\n"


def test_auto_asks_in_the_kernel_without_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    kernel(monkeypatch, shell=types.SimpleNamespace(kernel=object()))
    asked = scripted_user(monkeypatch, {"Verification code: ": "123456"})
    assert prompts.auto("", "", [("Verification code: ", False)]) == ["123456"]
    assert asked == [("getpass", "Verification code: ")]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("title", "instructions", "shown"), [
    ("Duo", "", "Duo\n"), ("", "Press 1", "Press 1\n"), ("", "", "")])
def test_only_the_parts_the_server_sent_are_shown(monkeypatch, capsys, title, instructions,
                                                  shown):
    monkeypatch.setattr(sys, "stdin", Tty())
    scripted_user(monkeypatch, {"code: ": "1"})
    prompts.auto(title, instructions, [("code: ", True)])
    captured = capsys.readouterr()
    assert (captured.err, captured.out) == (shown, "")


def test_auto_with_nobody_to_ask_fails_at_once(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    asked = scripted_user(monkeypatch, {})
    with pytest.raises(PromptUnavailable, match="'Password:'"):
        prompts.auto("", "", [("Password: ", False)])
    assert asked == []


def test_auto_with_nobody_to_ask_quotes_a_round_s_title(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    with pytest.raises(PromptUnavailable, match="asked 'Duo push', but nobody"):
        prompts.auto("Duo push", "Approve on your phone", [])


# --- what none and the resolver say ---------------------------------------------------


def test_none_quotes_every_question():
    with pytest.raises(PromptUnavailable) as failure:
        prompts.none("t", "", [(" Password: ", False), ("Code: ", True)])
    assert str(failure.value) == (
        "The connection asked 'Password:'; 'Code:', but nobody can answer here. "
        + prompts.HOW_TO)


def test_none_without_questions_quotes_the_title():
    with pytest.raises(PromptUnavailable) as failure:
        prompts.none("Duo push", "", [])
    assert str(failure.value).startswith("The connection asked 'Duo push', but nobody")


def test_the_how_to_names_both_ways():
    assert prompts.HOW_TO == (
        'Set prompt = "module:function" in fleche.toml (or pass prompt=callable in Python) '
        "to answer it, or connect from a terminal or a Jupyter notebook.")


def test_a_callable_is_its_own_handler():
    def mine(title, instructions, questions):
        return []
    assert prompts.resolve_handler(mine) is mine


@pytest.mark.parametrize("spec", ["module:", ":function", "auto:", "none "])
def test_half_a_name_is_refused(spec):
    with pytest.raises(ConfigError) as raised:
        prompts.resolve_handler(spec)
    assert str(raised.value) == (
        f"prompt = {spec!r}: expected 'auto', 'none' or 'module:function'")


def test_an_unimportable_name_says_why():
    with pytest.raises(ConfigError) as raised:
        prompts.resolve_handler("os:no_such_function")
    assert str(raised.value) == (
        "prompt = 'os:no_such_function': cannot import it: module 'os' has no attribute "
        "'no_such_function'")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_the_module_is_what_comes_before_the_first_colon():
    with pytest.raises(ConfigError) as raised:
        prompts.resolve_handler("os:path:join")
    assert str(raised.value).endswith("module 'os' has no attribute 'path:join'")


def test_a_name_that_is_not_callable_says_so():
    with pytest.raises(ConfigError) as raised:
        prompts.resolve_handler("os:sep")
    assert str(raised.value) == "prompt = 'os:sep' is not callable"


def test_a_named_function_is_found():
    assert prompts.resolve_handler("os.path:join") is __import__("os").path.join


# --- the Prompter: what it passes on and what it makes of the answers -----------------


def test_the_handler_gets_the_questions_and_answers_become_text():
    seen = []

    def handler(title, instructions, questions):
        seen.append((title, instructions, questions))
        return [123456]

    assert prompts.Prompter(handler).ask("T", "I", (("Code: ", False),)) == ["123456"]
    assert seen == [("T", "I", [("Code: ", False)])]


@pytest.mark.parametrize(("title", "named"), [("Duo", "Duo"), ("", "authentication")])
def test_a_wrong_number_of_answers_names_the_round(title, named):
    prompter = prompts.Prompter(lambda t, i, p: ["a", "b", "c"])
    with pytest.raises(PromptUnavailable) as raised:
        prompter.ask(title, "", [("q", False)])
    assert str(raised.value) == (
        f"The prompt handler returned 3 answers for 1 questions ({named}).")


def test_a_secret_is_asked_hidden_without_title():
    seen = []
    prompter = prompts.Prompter(lambda t, i, p: seen.append((t, i, p)) or ["pw"])
    assert prompter.secret("Passphrase for key: ") == "pw"
    assert seen == [("", "", [("Passphrase for key: ", False)])]


@pytest.mark.parametrize(("answer", "yes"), [
    ("yes", True), ("y", True), (" YES \n", True), ("Y", True),
    ("no", False), ("", False), ("yess", False), ("ye", False)])
def test_confirm_is_an_echoed_yes_or_y(answer, yes):
    seen = []
    prompter = prompts.Prompter(lambda t, i, p: seen.append((t, i, p)) or [answer])
    assert prompter.confirm("Continue? ") is yes
    assert seen == [("", "", [("Continue? ", True)])]


# --- answer_while: what reaches the caller --------------------------------------------


def test_the_work_s_result_and_its_error_reach_the_caller():
    prompter = prompts.Prompter(prompts.none)
    assert prompts.answer_while(lambda ask: "done", prompter, timeout=10) == "done"

    def fails(ask):
        raise KeyError("from the worker")
    with pytest.raises(KeyError, match="from the worker"):
        prompts.answer_while(fails, prompter, timeout=10)


@pytest.mark.timeout(30)
def test_the_result_reaches_the_caller_when_the_work_ends_not_at_the_deadline():
    prompter = prompts.Prompter(prompts.none)
    assert prompts.answer_while(lambda ask: "done", prompter, timeout=600) == "done"


def test_a_question_asked_after_a_pause_is_still_answered():
    """A second round (a one-time code after the password) may come a while after the first."""
    def work(ask):
        first = ask("", "", [("Password: ", False)])
        time.sleep(0.3)
        return first + ask("", "", [("Verification code: ", False)])

    def handler(title, instructions, questions):
        return {"Password: ": ["pw"], "Verification code: ": ["123456"]}[questions[0][0]]

    assert prompts.answer_while(work, prompts.Prompter(handler), timeout=10) == ["pw", "123456"]


def test_the_handler_s_own_error_wins_over_the_failed_round():
    """The work fails because the round was answered empty; the user is told why it was."""
    sent = []

    def work(ask):
        # Recorded, not asserted here: an error raised in the work is not the one reported.
        sent.append(ask("Duo", "", [("code: ", False), ("again: ", False)]))
        raise RuntimeError("authentication failed")

    def handler(title, instructions, questions):
        raise PromptUnavailable("the user closed the prompt")

    with pytest.raises(PromptUnavailable, match="the user closed the prompt"):
        prompts.answer_while(work, prompts.Prompter(handler), timeout=10)
    assert sent == [["", ""]]  # nothing the server could take for a code


def test_the_first_unanswered_round_is_the_one_reported():
    answers = iter([PromptUnavailable("first"), PromptUnavailable("second")])

    def handler(title, instructions, questions):
        raise next(answers)

    def work(ask):
        ask("", "", [("a", False)])
        ask("", "", [("b", False)])
        return "went on"

    with pytest.raises(PromptUnavailable, match="first"):
        prompts.answer_while(work, prompts.Prompter(handler), timeout=10)


def test_a_question_nobody_answers_in_time_is_reported_by_title():
    """The caller's thread is still busy with the question when the worker stops waiting."""
    def handler(title, instructions, questions):
        threading.Event().wait(3)
        return ["late"]

    def work(ask):
        return ask("Duo", "", [("code: ", False)])

    with pytest.raises(PromptUnavailable) as raised:
        prompts.answer_while(work, prompts.Prompter(handler), timeout=1)
    assert str(raised.value) == "No answer to Duo within 1 s"


def test_a_question_without_title_is_reported_as_the_prompt():
    def handler(title, instructions, questions):
        threading.Event().wait(2)
        return ["late"]

    with pytest.raises(PromptUnavailable) as raised:
        prompts.answer_while(lambda ask: ask("", "", [("code: ", False)]),
                             prompts.Prompter(handler), timeout=1)
    assert str(raised.value) == "No answer to the prompt within 1 s"


def test_work_finishing_just_after_the_timeout_is_still_too_late():
    with pytest.raises(PromptUnavailable, match="did not finish within 1 s"):
        prompts.answer_while(lambda ask: time.sleep(1.5), prompts.Prompter(prompts.none),
                             timeout=1)


def test_the_work_runs_on_a_named_daemon_thread():
    """Named for log records and debuggers; a daemon, so a hung login cannot stop Python exiting."""
    def work(ask):
        worker = threading.current_thread()
        return worker.name, worker.daemon

    assert prompts.answer_while(work, prompts.Prompter(prompts.none), timeout=10) == (
        "fleche-ssh-auth", True)
