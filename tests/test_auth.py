"""Authentication against real sshd servers: TOTP second factor, passphrases, agent."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

import pytest

from fleche_ssh import ParamikoCache
from fleche_ssh.errors import AuthenticationError, PromptUnavailable

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_pool")]


class Answers:
    """A prompt handler that answers from a list and records every question."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.questions: list[tuple[str, str, list[tuple[str, bool]]]] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, title, instructions, prompts):
        self.questions.append((title, instructions, list(prompts)))
        self.threads.append(threading.current_thread())
        return [self.answers.pop(0)() if callable(self.answers[0]) else self.answers.pop(0)
                for _ in prompts]


def totp_cache(remote_python, remote_dir, prompt, **keys) -> ParamikoCache:
    return ParamikoCache(host="totphost", python=remote_python, workdir=str(remote_dir),
                         prompt=prompt, **keys)


def test_one_time_code_logs_in_and_is_asked_on_the_calling_thread(
    client_home, remote_dir, remote_python, pool
):
    handler = Answers(client_home.sshd_totp.code)
    cache = totp_cache(remote_python, remote_dir, handler)

    assert cache.info()["cwd"] == str(remote_dir)

    assert len(handler.questions) == 1
    (text, echo), = handler.questions[0][2]
    assert "One-time password" in text
    assert echo is False
    assert handler.threads == [threading.current_thread()]
    used = pool.get(cache.target()).auth.used
    assert used[0].startswith("publickey") and used[-1] == "keyboard-interactive"


def test_wrong_code_then_right_code(client_home, remote_dir, remote_python):
    totp = client_home.sshd_totp
    handler = Answers(totp.wrong_code(), totp.code)
    cache = totp_cache(remote_python, remote_dir, handler)

    assert cache.contains("0" * 64) is False
    assert len(handler.questions) == 2


def test_three_wrong_codes_fail_with_the_methods_named(client_home, remote_dir, remote_python):
    totp = client_home.sshd_totp
    handler = Answers(totp.wrong_code(), totp.wrong_code(), totp.wrong_code())
    cache = totp_cache(remote_python, remote_dir, handler)

    with pytest.raises(AuthenticationError) as failure:
        cache.info()
    message = str(failure.value)
    assert "keyboard-interactive" in message
    assert "root@127.0.0.1" in message
    assert len(handler.questions) == 3


def test_two_caches_and_reconnect_ask_once(client_home, remote_dir, remote_python):
    handler = Answers(client_home.sshd_totp.code)
    first = totp_cache(remote_python, remote_dir, handler)
    second = totp_cache(remote_python, remote_dir, handler, cache_name="readonly")

    pid_first = first.info()["pid"]
    assert second.info()["read_only"] is True
    first.reconnect()
    assert first.info()["pid"] != pid_first

    assert len(handler.questions) == 1


def test_prompt_none_fails_fast_quoting_the_server(client_home, remote_dir, remote_python):
    cache = totp_cache(remote_python, remote_dir, "none")

    started = time.monotonic()
    with pytest.raises(PromptUnavailable) as failure:
        cache.info()
    assert time.monotonic() - started < 5
    message = str(failure.value)
    assert "One-time password" in message
    assert "prompt" in message and "module:function" in message


def test_auto_without_terminal_fails_fast(client_home, remote_dir, remote_python):
    # Under pytest stdin is not a terminal and no kernel runs: nobody can answer.
    cache = totp_cache(remote_python, remote_dir, "auto")

    started = time.monotonic()
    with pytest.raises(PromptUnavailable, match="One-time password"):
        cache.info()
    assert time.monotonic() - started < 5


def test_handler_named_as_module_function(client_home, remote_dir, remote_python, monkeypatch,
                                          tmp_path):
    (tmp_path / "mycodes.py").write_text(
        "import os\n"
        "def answer(title, instructions, prompts):\n"
        "    return [os.environ['TEST_OTP'] for _ in prompts]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TEST_OTP", client_home.sshd_totp.code())
    cache = totp_cache(remote_python, remote_dir, "mycodes:answer")

    assert cache.info()["cwd"] == str(remote_dir)


def _encrypted_key(client_home, passphrase: str) -> str:
    """Re-encrypt the authorised client key with a passphrase, in place."""
    subprocess.run(
        ["ssh-keygen", "-p", "-q", "-N", passphrase, "-P", "", "-f", str(client_home.identity)],
        check=True, capture_output=True, timeout=30,
    )
    return str(client_home.identity)


def test_passphrase_asked_once_per_process(client_home, remote_dir, remote_python, pool):
    path = _encrypted_key(client_home, "correct horse")
    handler = Answers("wrong", "correct horse")
    cache = ParamikoCache(host="testhost", python=remote_python, workdir=str(remote_dir),
                          prompt=handler)

    assert cache.info()["cwd"] == str(remote_dir)
    assert [q[2][0][0] for q in handler.questions] == [
        f"Enter passphrase for key '{path}': "
    ] * 2
    assert all(echo is False for q in handler.questions for _, echo in q[2])

    pool.close_all()  # a new transport, same process: the key is not asked for again
    again = ParamikoCache(host="testhost", python=remote_python, workdir=str(remote_dir),
                          prompt=handler)
    assert again.contains("0" * 64) is False
    assert len(handler.questions) == 2


def test_wrong_passphrase_three_times_fails_clearly(client_home, remote_dir, remote_python):
    path = _encrypted_key(client_home, "correct horse")
    handler = Answers("a", "b", "c")
    cache = ParamikoCache(host="testhost", python=remote_python, workdir=str(remote_dir),
                          prompt=handler)

    with pytest.raises(AuthenticationError) as failure:
        cache.info()
    assert path in str(failure.value)
    assert "passphrase" in str(failure.value)
    assert len(handler.questions) == 3


def test_encrypted_key_skipped_without_prompting(client_home, remote_dir, remote_python):
    _encrypted_key(client_home, "correct horse")
    cache = ParamikoCache(host="testhost", python=remote_python, workdir=str(remote_dir),
                          prompt="none")

    with pytest.raises(AuthenticationError, match="Server offered: publickey"):
        cache.info()


def test_agent_key_used_when_the_file_is_gone(client_home, remote_dir, remote_python, tmp_path,
                                              monkeypatch, pool):
    import support as sshd_helpers

    agent = sshd_helpers.start_agent(tmp_path / "agent")
    try:
        agent.add(client_home.identity)
        monkeypatch.setenv("SSH_AUTH_SOCK", agent.env["SSH_AUTH_SOCK"])
        client_home.identity.unlink()
        cache = ParamikoCache(host="testhost", python=remote_python, workdir=str(remote_dir),
                              identities_only=False, prompt="none")

        assert cache.info()["cwd"] == str(remote_dir)
        used = pool.get(cache.target()).auth.used
        assert used == [used[0]] and used[0].startswith("publickey (agent key")
    finally:
        agent.stop()


def test_secrets_never_logged(client_home, remote_dir, remote_python, caplog, pool):
    passphrase = "s3cret-passphrase-xyz"
    _encrypted_key(client_home, passphrase)
    code = client_home.sshd_totp.code()
    handler = Answers(passphrase, code)
    caplog.set_level(logging.DEBUG)
    for name in ("fleche_ssh", "fleche", "paramiko"):  # whatever level they set themselves
        caplog.set_level(logging.DEBUG, logger=name)
    cache = totp_cache(remote_python, remote_dir, handler)

    info = cache.info()
    # Both secrets were asked for and used, and the log holds that login, step by step.
    asked = [prompts[0][0] for _, _, prompts in handler.questions]
    assert len(asked) == 2 and "passphrase" in asked[0] and "One-time password" in asked[1]
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("paramiko.transport", "Authentication (keyboard-interactive) successful!") in messages
    assert any(name.startswith("fleche_ssh.") and text.startswith("connected to ")
               and f"publickey ({client_home.identity}), keyboard-interactive" in text
               for name, text in messages), messages
    shown = "\n".join([caplog.text, repr(cache), repr(info), repr(pool.sessions()),
                       repr(pool.snapshot())])
    assert passphrase not in shown
    assert code not in shown


def test_one_destination_spelled_two_ways_asks_once(client_home, remote_dir, remote_python,
                                                     pool):
    handler = Answers(client_home.sshd_totp.code)
    by_alias = totp_cache(remote_python, remote_dir, handler)
    spelled_out = ParamikoCache(
        host="root@127.0.0.1", port=client_home.sshd_totp.port, python=remote_python,
        workdir=str(remote_dir), prompt=handler, identity_file=str(client_home.identity),
        identities_only=True, known_hosts_file=str(client_home.known_hosts),
        strict_host_key_checking="yes", ssh_options=["-p", str(client_home.sshd_totp.port)],
    )

    assert by_alias.info()["cwd"] == spelled_out.info()["cwd"] == str(remote_dir)
    assert len(handler.questions) == 1
    assert len(pool) == 1


def test_gssapi_only_server_is_explained(client_home, client_key, remote_python, tmp_path):
    import support as sshd_helpers

    from fleche_ssh.errors import UnsupportedByParamiko

    server = sshd_helpers.start_sshd(
        tmp_path / "sshd-gssapi", authorized_keys=[client_key.public_line],
        extra_config=["GSSAPIAuthentication yes", "AuthenticationMethods gssapi-with-mic"],
    )
    try:
        cache = ParamikoCache(host="127.0.0.1", port=server.port, user="root",
                              identity_file=str(client_home.identity), python=remote_python,
                              strict_host_key_checking="no", prompt="none")
        with pytest.raises(UnsupportedByParamiko) as refused:
            cache.info()
        message = str(refused.value)
        assert "gssapi-with-mic" in message and "GSSAPI" in message
        assert 'type = "ssh"' in message
    finally:
        server.stop()


def test_two_logins_at_once_each_use_their_own_agent(client_home, remote_python, tmp_path,
                                                     monkeypatch, pool):
    """IdentityAgent is honoured per login, without rewriting the process's SSH_AUTH_SOCK.

    Two agents hold one key each; each of two servers accepts only one of those
    keys.  Both logins run at once, while a third thread watches SSH_AUTH_SOCK,
    set to an agent holding no key at all.
    """
    from contextlib import ExitStack

    import support as sshd_helpers

    decoy = sshd_helpers.start_agent(tmp_path / "decoy")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(decoy.socket_path))
    with ExitStack() as stack:
        stack.callback(decoy.stop)
        caches = {}
        for name in ("left", "right"):
            key = tmp_path / f"id_{name}"
            public = sshd_helpers.make_client_key(key, comment=f"key-of-{name}")
            agent = sshd_helpers.start_agent(tmp_path / f"agent-{name}")
            stack.callback(agent.stop)
            agent.add(key)
            server = stack.enter_context(sshd_helpers.pinned_sshd(
                tmp_path / f"sshd-{name}", client_home.known_hosts, authorized_keys=[public]))
            caches[name] = ParamikoCache(host="127.0.0.1", port=server.port, user="root",
                                         identity_agent=str(agent.socket_path),
                                         identities_only=False, python=remote_python,
                                         prompt="none")

        seen: set[str | None] = set()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.add(os.environ.get("SSH_AUTH_SOCK"))

        used: dict[str, list[str]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def login(name: str) -> None:
            cache = caches[name]
            target = cache.target()
            try:
                start.wait(timeout=30)
                used[name] = pool.session(target, cache.login(target)).auth.used
            except BaseException as e:
                errors.append(e)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for _ in range(3):  # a few rounds, so that the logins overlap more than once
                pool.close_all()
                logins = [threading.Thread(target=login, args=(name,)) for name in caches]
                for thread in logins:
                    thread.start()
                for thread in logins:
                    thread.join(60)
                assert not any(thread.is_alive() for thread in logins)
                assert not errors, errors
                assert used == {name: [f"publickey (agent key key-of-{name})"]
                                for name in caches}
        finally:
            done.set()
            watcher.join(10)
        assert seen == {str(decoy.socket_path)}
        assert os.environ["SSH_AUTH_SOCK"] == str(decoy.socket_path)
