"""The ``fleche-ssh`` command, run as a user runs it: in a subprocess, against real servers.

``demo`` brings its own throwaway server; ``check`` talks to the real
OpenSSH fixtures.  The subprocesses inherit the environment, so ``$HOME``
is the throwaway home that ``client_home`` sets.  Assertions are on what
the user reads: exit status, each step's line, the advice on failure.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fleche
import pytest

import fleche_ssh

pytestmark = pytest.mark.timeout(120)

CLI = (sys.executable, "-m", "fleche_ssh.cli")
CHECK_STEPS = 7
#: Bound on one CLI run; the demo promises to finish unattended in well under this.
RUN_TIMEOUT = 60


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=RUN_TIMEOUT, cwd=cwd, env=dict(os.environ),
    )


def _seconds(text: str) -> float:
    number, unit = text.split()
    return float(number) / (1000 if unit == "ms" else 1)


def _step_times(output: str) -> list[float]:
    return [_seconds(t) for t in re.findall(r"^ +ok, took (\S+ m?s)$", output, re.M)]


# -- demo ---------------------------------------------------------------------------------


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fleche-ssh {fleche_ssh.__version__}"


#: ``fleche-ssh demo`` as ``python -m fleche_ssh.cli`` runs it, counting the runs of the
#: function it caches, printed last.
COUNTED_DEMO = """
import functools, sys
from fleche_ssh import cli
from fleche_ssh.demo import run

real, ran = run.slow_square, []


@functools.wraps(real)
def counted(x):
    ran.append(x)
    return real(x)


run.slow_square = counted
status = cli.main(["demo"])
print(f"slow_square ran {len(ran)} time(s)")
sys.exit(status)
"""


def test_demo_unattended_answers_the_code_and_serves_the_second_call_from_the_cache():
    result = subprocess.run(
        [sys.executable, "-c", COUNTED_DEMO], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=RUN_TIMEOUT, env=dict(os.environ))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert result.stderr == ""
    assert re.search(r"^ +Your one-time code is \d{6}$", out, re.M)
    assert "stdin is not a terminal: answering the one-time code for you" in out
    assert re.search(r"methods used +publickey \(.*id_ed25519\), keyboard-interactive$", out, re.M)
    assert "served by the remote cache, not computed again" in out
    assert out.count("result  slow_square(7) = 49") == 2
    # Computed once, by the first call: the second was answered from the remote cache.
    assert out.splitlines()[-1] == "slow_square ran 1 time(s)"
    assert re.search(r"The second call took \S+ m?s instead of \S+ m?s", out)
    # The throwaway directory (keys, known_hosts, remote cache) is gone.
    known_hosts = re.search(r"pinned in +(\S+)", out).group(1)
    assert not Path(known_hosts).parent.exists()


def _read_until(fd: int, buffer: bytearray, pattern: bytes | None, deadline: float) -> bool:
    """Read the pty into *buffer* until *pattern* shows up (True) or the child is gone.

    With *pattern* None, read everything until the child closes the terminal.
    """
    while pattern is None or pattern not in buffer:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"{pattern!r} not seen; output so far:\n{buffer.decode()}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        buffer += chunk
    return True


def _at_a_terminal(args: tuple[str, ...], prompt: bytes,
                   answer: Callable[[bytes], bytes]) -> tuple[bytes, int, int]:
    """Run the CLI on a new pseudo-terminal, type ``answer(output so far)`` at *prompt*.

    Returns everything the terminal showed, where the prompt ended in it,
    and the exit status.
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, on a real terminal
        try:
            os.execve(sys.executable, [*CLI, *args], dict(os.environ))
        finally:
            os._exit(127)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        seen = bytearray()
        assert _read_until(fd, seen, prompt, deadline), seen.decode()
        prompt_end = len(seen)
        os.write(fd, answer(bytes(seen)) + b"\r")
        _read_until(fd, seen, None, deadline)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return bytes(seen), prompt_end, os.waitstatus_to_exitcode(status)


def test_demo_at_a_terminal_lets_the_user_type_the_code_unechoed():
    def shown_code(seen: bytes) -> bytes:
        return re.search(rb"Your one-time code is (\d{6})", seen).group(1)

    seen, prompt_end, status = _at_a_terminal(("demo",), b"One-time code: ", shown_code)
    out = seen.decode()
    assert status == 0, out
    assert shown_code(seen) not in seen[prompt_end:], "the typed code was echoed"
    assert "answering the one-time code for you" not in out
    assert "served by the remote cache, not computed again" in out


# -- check --------------------------------------------------------------------------------


def test_check_host_prints_every_step(client_home, remote_dir, remote_python):
    result = run_cli("check", "testhost", "--python", remote_python,
                     "--workdir", str(remote_dir))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert len(_step_times(out)) == CHECK_STEPS
    port = client_home.sshd.port
    for row in ("host +testhost", r"hostname +127\.0\.0\.1", f"port +{port}", "user +root",
                f"identityfile +{re.escape(str(client_home.identity))}",
                "stricthostkeychecking +yes", rf"connected to +127\.0\.0\.1 port {port}",
                rf"verified by +known_hosts {re.escape(str(client_home.known_hosts))}:\d+",
                "methods offered +publickey", r"methods used +publickey \(",
                r"channel through +this process's own login \(pid \d+\)$",
                f"python +{re.escape(remote_python)}", f"fleche +{re.escape(fleche.__version__)}",
                f"cwd +{re.escape(str(remote_dir))}", r"median of \d+ contains\(\) +\S+ m?s",
                r"upload 8 MiB +[\d.]+ MB/s", r"download 8 MiB +[\d.]+ MB/s",
                r"link round trip +[\d.]+ m?s \(measured on the channel\)",
                r"upload window +2\.0 MiB \(the server's\): at most \d+ MB/s",
                r"download window +4\.0 MiB: at most \d+ MB/s"):
        assert re.search(rf"^ +{row}", out, re.M), f"no {row!r} row in:\n{out}"
    assert "All checks passed for testhost." in out


def test_check_two_factor_host_at_a_terminal(client_home, sshd_totp, remote_dir, remote_python):
    code = sshd_totp.code()
    seen, prompt_end, status = _at_a_terminal(
        ("check", "totphost", "--python", remote_python, "--workdir", str(remote_dir)),
        b"One-time password (OATH)", lambda _: code.encode())
    out = seen.decode()
    assert status == 0, out
    assert code.encode() not in seen[prompt_end:], "the typed code was echoed"
    assert re.search(r"^ +methods used +publickey \(.*\), keyboard-interactive\r?$", out, re.M)
    assert len(_step_times(out.replace("\r", ""))) == CHECK_STEPS


def test_check_cache_from_fleche_toml_checks_the_paramiko_layer_of_a_stack(
        client_home, remote_dir, remote_python, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "fleche.toml").write_text(
        f'stacked = [{{template = "memory"}}, {{type = "paramiko", host = "testhost", '
        f'python = "{remote_python}", workdir = "{remote_dir}"}}]\n'
        "\n[default]\nroot = true\n"
    )
    result = run_cli("check", "--cache", "stacked", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("fleche-ssh check testhost") == 1
    assert len(_step_times(result.stdout)) == CHECK_STEPS
    assert re.search(rf"^ +cwd +{re.escape(str(remote_dir))}$", result.stdout, re.M)


def _assert_failed_at(result: subprocess.CompletedProcess[str], passed: int,
                      advice: str) -> None:
    out = result.stdout
    assert result.returncode == 1, out
    assert len(_step_times(out)) == passed, out
    assert re.search(rf"^\[{passed + 1}/{CHECK_STEPS}\] .*\n +FAILED after ", out, re.M), out
    assert re.search(advice, out), f"no {advice!r} in:\n{out}"
    assert "All checks passed" not in out


def test_check_unknown_host_key_says_how_to_add_it(client_home, remote_dir, remote_python):
    client_home.known_hosts.write_text("")
    result = run_cli("check", "testhost", "--python", remote_python,
                     "--workdir", str(remote_dir))
    _assert_failed_at(result, 3, r"UnknownHostKey: Host \[127\.0\.0\.1\]:\d+ is not in "
                                 r"known_hosts .*ssh-keyscan -p \d+ 127\.0\.0\.1 >> ")
    assert "not run: start the remote fleche server, round trip, throughput" in result.stdout


def test_check_remote_without_fleche_says_to_install_it(client_home, remote_dir, tmp_path):
    # A python that cannot see site-packages, where fleche is installed.
    python = tmp_path / "python-without-fleche"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S "$@"\n')
    python.chmod(0o755)
    result = run_cli("check", "testhost", "--python", str(python), "--workdir", str(remote_dir))
    _assert_failed_at(result, 4, r"RemoteCommandError: fleche is not installed for the remote "
                                 r"python .*pip install fleche")


def test_check_wrong_host_names_it(client_home):
    result = run_cli("check", "nosuchhost.invalid")
    _assert_failed_at(result, 2, r"HostNotFound: Cannot resolve host name 'nosuchhost\.invalid'"
                                 r".*Check the spelling")


def test_check_without_paramiko_cache_in_fleche_toml_fails(client_home, tmp_path):
    (tmp_path / "fleche.toml").write_text(
        '[default]\nroot = true\n\n[local]\ntemplate = "memory"\n')
    result = run_cli("check", "--cache", "local", cwd=tmp_path)
    assert result.returncode == 1
    assert "has no type = \"paramiko\" layer to check" in result.stdout


def test_check_changed_host_key_says_how_to_remove_the_old_one(client_home, remote_dir,
                                                               remote_python):
    # known_hosts pins another server's key for testhost's address.
    other_key = client_home.sshd_totp.server.host_public_keys["ssh-ed25519"]
    client_home.known_hosts.write_text(f"[127.0.0.1]:{client_home.sshd.port} {other_key}\n")
    result = run_cli("check", "testhost", "--python", remote_python,
                     "--workdir", str(remote_dir))
    _assert_failed_at(result, 3, r"ChangedHostKey: HOST KEY CHANGED for \[127\.0\.0\.1\]:\d+"
                                 r'.*ssh-keygen -R "\[127\.0\.0\.1\]:\d+" -f ')


_WRONG_CODE_MODULE = '''\
import os


def answer(title, instructions, prompts):
    return [os.environ["WRONG_CODE"] for _ in prompts]
'''


def test_check_wrong_one_time_code_says_to_retry_with_a_fresh_one(
        client_home, remote_dir, remote_python, tmp_path):
    # The prompt module lives in the current directory, as a user's would; the
    # installed console script (not python -m) must find it there.
    (tmp_path / "wrong_code.py").write_text(_WRONG_CODE_MODULE)
    script = Path(sys.executable).with_name("fleche-ssh")
    assert script.exists(), "the package is not installed (pip install -e .)"
    result = subprocess.run(
        [str(script), "check", "totphost", "--python", remote_python,
         "--workdir", str(remote_dir), "--prompt", "wrong_code:answer"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        cwd=tmp_path, env={**os.environ, "WRONG_CODE": client_home.sshd_totp.wrong_code()},
    )
    _assert_failed_at(result, 3, r"AuthenticationError: Authentication to root@127\.0\.0\.1:\d+ "
                                 r"failed\. .*the answers given to its questions were refused\. "
                                 r"Check the one-time code")


def test_check_shows_the_keywords_fleche_ssh_cannot_act_on(client_home, remote_dir,
                                                          remote_python):
    with client_home.config.open("a") as f:
        f.write("\nHost testhost\n    GSSAPIAuthentication yes\n    VerifyHostKeyDNS yes\n")
    result = run_cli("check", "testhost", "--python", remote_python,
                     "--workdir", str(remote_dir))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    config = re.escape(str(client_home.config))
    for keyword, effect in (("GSSAPIAuthentication", "Kerberos"), ("VerifyHostKeyDNS", "SSHFP")):
        assert re.search(rf"^ +not supported +{config}:\d+: {keyword} yes is not supported by "
                         rf"fleche-ssh, ignored; .*{effect}", out, re.M), out
