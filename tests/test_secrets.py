"""Secrets stay secret: passphrases, one-time codes and passwords appear nowhere.

Everything a user (or a support forum) may see is collected and searched
for the actual secrets of the login: every log record of the run with the
root logger and Paramiko at DEBUG, error messages with their whole chain of
causes, ``repr(cache)``, ``info()``, ``cache_to_config(cache)`` and
``cache.config()``, and what ``fleche-ssh check`` prints.

The logins are real: an encrypted key (re-encrypted with ``ssh-keygen -p``)
plus a TOTP code against the pam_oath sshd, answered by a prompt handler;
and a password login against an sshd that accepts only passwords, for a
throwaway user that exists for the length of that test.

The collected text is first checked to hold what it should (the login
steps at DEBUG, the error, the host), so that a capture that caught nothing
cannot pass.  One-time codes are six digits, so they are looked for as
whole numbers: a port or a pid containing the same digits is not a leak.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fleche.config
import pytest
from support import sshd as sshd_helpers

from fleche_ssh import ParamikoCache, plugin
from fleche_ssh.errors import AuthenticationError

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]

CLI = (sys.executable, "-m", "fleche_ssh.cli")
RUN_TIMEOUT = 60


@pytest.fixture
def debug_logs() -> Iterator[list[str]]:
    """Every record, from every logger (Paramiko's included), at DEBUG, as a user would see it."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root, paramiko_logger = logging.getLogger(), logging.getLogger("paramiko")
    saved = root.level, paramiko_logger.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    paramiko_logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        paramiko_logger.setLevel(saved[1])


@pytest.fixture
def passphrase(client_home) -> str:
    """The client_home identity, re-encrypted with a fresh passphrase."""
    secret = f"pp-{secrets.token_urlsafe(18)}"
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", secret, "-P", "", "-f",
                    str(client_home.identity)], check=True, capture_output=True, timeout=30)
    return secret


@dataclass
class Answers:
    """A prompt handler: the passphrase for a key, codes from *code* for anything else.

    Keeps every answer it gave: those are the secrets to look for.
    """

    passphrase: str
    code: Callable[[], str]
    given: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def __call__(self, title: str, instructions: str,
                 prompts: list[tuple[str, bool]]) -> list[str]:
        answers = []
        for text, _echo in prompts:
            self.asked.append(text)
            answers.append(self.passphrase if "passphrase" in text else self.code())
        self.given += answers
        return answers


def found(secret: str, text: str) -> list[str]:
    """Where *secret* occurs in *text* (a code only as a whole number), with context."""
    pattern = (rf"(?<![0-9]){re.escape(secret)}(?![0-9])" if secret.isdigit()
               else re.escape(secret))
    return [text[max(0, m.start() - 60):m.end() + 60] for m in re.finditer(pattern, text)]


def assert_secret_free(texts: dict[str, str], secret_values: list[str]) -> None:
    assert secret_values, "no secret was used: nothing to look for"
    leaks = {f"{secret!r} in {where}": hits for where, text in texts.items()
             for secret in set(secret_values) if (hits := found(secret, text))}
    assert not leaks, leaks


def whole_error(error: BaseException) -> str:
    """What a traceback shows: the error, its causes and contexts, and their messages."""
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


def cache_views(cache: ParamikoCache) -> dict[str, str]:
    plugin.install(fleche.config)
    return {"repr(cache)": repr(cache), "cache.config()": repr(cache.config()),
            "cache_to_config": json.dumps(fleche.config.cache_to_config(cache), default=repr)}


def test_two_factor_login_with_an_encrypted_key_keeps_both_secrets(
        client_home, passphrase, remote_dir, remote_python, debug_logs):
    answers = Answers(passphrase, client_home.sshd_totp.code)
    cache = ParamikoCache(host="totphost", python=remote_python, workdir=str(remote_dir),
                          prompt=answers)

    info = cache.info()
    cache.close()

    assert info["cwd"] == str(remote_dir)
    assert ["passphrase" in text for text in answers.asked] == [True, False]
    assert "One-time password" in answers.asked[1]
    # The handler holds the answers: the cache names it, and never shows it.
    assert cache.config()["prompt"] == f"{Answers.__module__}:Answers"
    assert "prompt" not in repr(cache)
    logs = "\n".join(debug_logs)
    assert "paramiko.transport DEBUG" in logs and "Authentication (keyboard-interactive)" in logs
    assert "fleche_ssh.session INFO connected to root@127.0.0.1" in logs
    assert_secret_free({"logs": logs, "info()": repr(info), **cache_views(cache)},
                       answers.given)


@pytest.mark.parametrize("wrong", ["code", "passphrase"])
def test_failed_logins_keep_the_answers_out_of_errors_and_logs(
        wrong, client_home, passphrase, remote_dir, remote_python, debug_logs):
    totp = client_home.sshd_totp
    if wrong == "code":
        answers = Answers(passphrase, totp.wrong_code)
        expected = "answers given to its questions were refused"
    else:
        answers = Answers(f"not-{passphrase}", totp.code)
        expected = "Wrong passphrase for"
    cache = ParamikoCache(host="totphost", python=remote_python, workdir=str(remote_dir),
                          prompt=answers)

    with pytest.raises(AuthenticationError) as failed:
        cache.info()

    error = whole_error(failed.value)
    assert expected in error
    # Three tries, after the passphrase when the code is wrong.
    assert len(answers.given) == 3 + (wrong == "code")
    logs = "\n".join(debug_logs)
    assert "paramiko.transport DEBUG userauth is OK" in logs
    assert_secret_free({"logs": logs, "error": error, **cache_views(cache)},
                       [passphrase, *answers.given])


# -- fleche-ssh check, with a prompt handler named module:function -------------------------

_ANSWER_MODULE = '''\
"""Answers fleche-ssh's questions from the JSON file named by $ANSWERS_FILE."""
import json
import os


def answer(title, instructions, prompts):
    with open(os.environ["ANSWERS_FILE"]) as f:
        values = json.load(f)
    return [values["passphrase"] if "passphrase" in text else values["code"]
            for text, _echo in prompts]
'''


def run_check(tmp_path: Path, remote_python: str, remote_dir: Path, passphrase: str,
              code: str) -> subprocess.CompletedProcess[str]:
    """``fleche-ssh check totphost --prompt <module>:answer -vv``, the answers read from a file."""
    module = f"answers_{secrets.token_hex(4)}"
    (tmp_path / f"{module}.py").write_text(_ANSWER_MODULE)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"passphrase": passphrase, "code": code}))
    return subprocess.run(
        [*CLI, "check", "totphost", "--python", remote_python, "--workdir", str(remote_dir),
         "--prompt", f"{module}:answer", "-vv"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        cwd=tmp_path, env={**os.environ, "ANSWERS_FILE": str(answers)},
    )


def test_check_prints_neither_passphrase_nor_code(client_home, passphrase, remote_dir,
                                                  remote_python, tmp_path):
    totp = client_home.sshd_totp
    code, wrong = totp.code(), totp.wrong_code()

    passed = run_check(tmp_path, remote_python, remote_dir, passphrase, code)
    failed = run_check(tmp_path, remote_python, remote_dir, passphrase, wrong)

    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert re.search(r"methods used +publickey \(.*\), keyboard-interactive$", passed.stdout,
                     re.M)
    assert "DEBUG paramiko.transport: userauth is OK" in passed.stderr
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "AuthenticationError" in failed.stdout
    assert "INFO paramiko.transport: Authentication (keyboard-interactive) failed" in failed.stderr
    assert_secret_free({"check stdout": passed.stdout, "check stderr": passed.stderr,
                        "failed check stdout": failed.stdout,
                        "failed check stderr": failed.stderr}, [passphrase, code, wrong])


# -- password login, for a throwaway user -----------------------------------------------------

_USER_TOOLS = ("useradd", "chpasswd", "userdel")


@pytest.fixture
def password_user() -> Iterator[tuple[str, str]]:
    """A system user that exists only for this test, with a random password."""
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in _USER_TOOLS):
        pytest.skip("creating a throwaway user needs root and useradd, chpasswd, userdel")
    name = f"flechetest{secrets.token_hex(3)}"
    password = f"pw-{secrets.token_urlsafe(18)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True, timeout=30)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True,
                       capture_output=True, timeout=30)
        yield name, password
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


@pytest.fixture
def password_sshd(tmp_path, client_home):
    """An sshd that accepts passwords only, pinned in the client's known_hosts."""
    with sshd_helpers.pinned_sshd(tmp_path / "sshd-password", client_home.known_hosts,
                                  authorized_keys=[], auth_methods="password",
                                  extra_config=["PasswordAuthentication yes"]) as server:
        yield server


def test_password_login_keeps_the_password(client_home, password_user, password_sshd,
                                           debug_logs, pool):
    name, password = password_user
    right = Answers("", lambda: password)
    wrong = Answers("", lambda: f"not-{password}")

    def cache(answers: Answers) -> ParamikoCache:
        return ParamikoCache(host="pwhost", hostname="127.0.0.1", port=password_sshd.port,
                             user=name, prompt=answers)

    logged_in = cache(right)
    target = logged_in.target()
    assert pool.session(target, logged_in.login(target)).auth.used == ["password"]
    refused = cache(wrong)
    pool.close_all()
    with pytest.raises(AuthenticationError) as failed:
        pool.session(target, refused.login(target))

    assert right.asked == [f"{name}@127.0.0.1's password: "]
    assert len(wrong.given) == 3
    error = whole_error(failed.value)
    assert f"Authentication to {name}@127.0.0.1:{password_sshd.port} failed" in error
    logs = "\n".join(debug_logs)
    assert "Authentication (password) successful!" in logs
    assert_secret_free({"logs": logs, "error": error, **cache_views(logged_in),
                        **cache_views(refused)}, [*right.given, *wrong.given])
