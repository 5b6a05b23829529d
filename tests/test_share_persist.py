"""``control_persist``: a background process keeps the login for the user's other processes.

Against the real publickey + TOTP sshd, with real separate processes: one
code across two programs (the second runs with ``prompt = "none"``), one
code for eight programs starting at once, none after a real Jupyter
kernel restart, expiry after the idle time, and
the ``login``/``logins``/``logout`` commands.  Each test has a private
runtime directory of its own, and ends every holder it started.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.caches import wait_for
from support.kernel import cell_messages, kernel, printed, run_cell

from fleche_ssh import ParamikoCache
from fleche_ssh.cli import main as cli
from fleche_ssh.share import local, persist
from fleche_ssh.share.place import OVERRIDE

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("fresh_pool")]

#: A process of its own using the login: ``python -c USER WORKDIR PYTHON PROMPT PERSIST``.
USER = """
import sys
from fleche_ssh import ParamikoCache
workdir, python, prompt, keep = sys.argv[1:5]
cache = ParamikoCache(host="totphost", python=python, workdir=workdir, prompt=prompt,
                      control_persist=keep)
print(cache.info()["cwd"])
cache.close()
"""

#: A prompt handler for other processes: the code from the environment, each question noted.
ANSWER = """
import os
def answer(title, instructions, prompts):
    with open(os.environ["ASKED_FILE"], "a") as f:
        f.write("asked\\n")
    return [os.environ["TEST_OTP"] for _ in prompts]
"""


@pytest.fixture
def runtime(monkeypatch, tmp_path):
    """A short private runtime directory (socket paths must fit sun_path); holders ended after."""
    where = Path(tempfile.mkdtemp(prefix="fsp-", dir="/tmp"))
    where.chmod(0o700)
    monkeypatch.setenv(OVERRIDE, str(where))
    (tmp_path / "answers.py").write_text(ANSWER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path), str(Path(__file__).resolve().parent.parent), os.environ.get(
            "PYTHONPATH", "")]))
    monkeypatch.setenv("ASKED_FILE", str(tmp_path / "asked"))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield where
    for name in persist.names():
        persist.request(name, "logout", local.connect)
    wait_for(lambda: not list(where.glob("*.sock")), 10)
    shutil.rmtree(where, ignore_errors=True)


def _user(remote_dir, remote_python, prompt: str, keep: str = "30s") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", USER, str(remote_dir), remote_python,
                             prompt, keep], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _logins(sshd_totp) -> int:
    return sshd_totp.log_text().count("Accepted keyboard-interactive")


def test_two_programs_one_code_the_second_asking_nothing(client_home, remote_dir,
                                                        remote_python, runtime):
    asked = []

    def answer(title, instructions, prompts):
        asked.append(prompts)
        return [client_home.sshd_totp.code() for _ in prompts]

    before = _logins(client_home.sshd_totp)
    first = ParamikoCache(host="totphost", python=remote_python, workdir=str(remote_dir),
                          prompt=answer, control_persist="30s")
    try:
        assert first.info()["cwd"] == str(remote_dir)
    finally:
        first.close()
    second = _user(remote_dir, remote_python, "none")
    out, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    assert out.strip() == str(remote_dir)
    assert len(asked) == 1
    assert _logins(client_home.sshd_totp) - before == 1


def test_eight_programs_at_once_make_one_login(client_home, remote_dir, remote_python,
                                               runtime, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_OTP", client_home.sshd_totp.code())
    before = _logins(client_home.sshd_totp)
    users = [_user(remote_dir, remote_python, "answers:answer") for _ in range(8)]
    results = [user.communicate(timeout=120) for user in users]
    assert [user.returncode for user in users] == [0] * 8, [err for _, err in results]
    assert (tmp_path / "asked").read_text().count("asked") == 1
    assert _logins(client_home.sshd_totp) - before == 1
    assert len(persist.names()) == 1


def test_an_unused_login_ends_after_its_idle_time(client_home, remote_dir, remote_python,
                                                  runtime, monkeypatch):
    monkeypatch.setenv("TEST_OTP", client_home.sshd_totp.code())
    user = _user(remote_dir, remote_python, "answers:answer", keep="2s")
    _, err = user.communicate(timeout=90)
    assert user.returncode == 0, err
    (name,) = persist.names()
    assert persist.request(name, "logins", local.connect) is not None
    assert wait_for(lambda: persist.request(name, "logins", local.connect) is None, 15)
    assert not list(runtime.glob("*.sock"))


def test_login_logins_logout(client_home, remote_dir, remote_python, runtime, monkeypatch,
                             capsys, tmp_path):
    code = client_home.sshd_totp.code()
    monkeypatch.setenv("TEST_OTP", code)
    assert cli(["login", "totphost", "--keep", "1m", "--prompt", "answers:answer"]) == 0
    user = _user(remote_dir, remote_python, "none")
    _, err = user.communicate(timeout=90)
    assert user.returncode == 0, err  # the morning's login: nothing asked

    capsys.readouterr()
    assert cli(["logins"]) == 0
    listed = capsys.readouterr().out
    assert "root@127.0.0.1" in listed and "alive" in listed
    (name,) = persist.names()
    log = (runtime / f"{name}.log").read_text()
    for text in (listed, log):
        assert code not in text

    assert cli(["logout", "totphost"]) == 0
    assert "ended 1" in capsys.readouterr().out
    assert wait_for(lambda: persist.request(name, "logins", local.connect) is None, 10)
    assert cli(["logins"]) == 0
    assert "no login is kept" in capsys.readouterr().out


def test_the_name_is_the_destination_not_the_settings_of_sharing(make):
    short = make(control_persist="10m").target()
    long = make(control_persist="8h", control_master="yes").target()
    other = make(port=2222).target()
    assert persist.name_for(short) == persist.name_for(long) != persist.name_for(other)


#: A notebook cell: the cache with a kept login, one call, and which kernel process made it.
KERNEL_CELL = """
import os
from fleche_ssh import ParamikoCache
cache = ParamikoCache(host="totphost", python={python!r}, workdir={workdir!r},
                      prompt={prompt!r}, control_persist="1m")
print("CWD=" + cache.info()["cwd"], "PID=" + str(os.getpid()), flush=True)
"""


def _kernel_cell(remote_dir, remote_python, prompt: str) -> str:
    return KERNEL_CELL.format(python=remote_python, workdir=str(remote_dir), prompt=prompt)


def _answered(messages: list[dict], reply: dict) -> tuple[str, str]:
    """The ``(cwd, pid)`` a :data:`KERNEL_CELL` printed; its error if it failed."""
    errors = [m["content"] for m in messages if m["header"]["msg_type"] == "error"]
    assert reply["content"]["status"] == "ok", errors or reply["content"]
    cwd, pid = printed(messages).split()
    return cwd.removeprefix("CWD="), pid.removeprefix("PID=")


def test_a_restarted_kernel_asks_no_code(client_home, remote_dir, remote_python, runtime):
    before = _logins(client_home.sshd_totp)
    with kernel() as (manager, client):
        first = client.execute(_kernel_cell(remote_dir, remote_python, "auto"), allow_stdin=True)
        request = client.get_stdin_msg(timeout=60)
        assert "One-time password" in request["content"]["prompt"]
        client.input(client_home.sshd_totp.code())
        cwd, pid = _answered(cell_messages(client, first), client.get_shell_msg(timeout=10))
        assert cwd == str(remote_dir)

        # A real restart: the kernel process is gone (its cache never closed), a new one starts.
        manager.restart_kernel(now=True)
        client.wait_for_ready(timeout=60)
        messages, reply = run_cell(client, _kernel_cell(remote_dir, remote_python, "none"))
        cwd, again = _answered(messages, reply)
        assert (cwd, again != pid) == (str(remote_dir), True)
        with pytest.raises(queue.Empty):
            client.get_stdin_msg(timeout=0.1)
    assert _logins(client_home.sshd_totp) - before == 1

    (name,) = persist.names()
    assert cli(["logout"]) == 0
    assert wait_for(lambda: persist.request(name, "logins", local.connect) is None, 10)
    assert wait_for(lambda: not list(runtime.glob("*.sock")), 10)
