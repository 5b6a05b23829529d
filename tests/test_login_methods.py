"""How to log in: PreferredAuthentications and the ``*Authentication`` switches, on a real sshd.

The server accepts any one of publickey, password and keyboard-interactive
(``AuthenticationMethods any``), the last two through PAM with a real TOTP
check (pam_oath), so a one-time code is a valid password too.  sshd logs
every method tried at ``LogLevel VERBOSE`` ("Failed password for root ...",
"Accepted publickey for root ..."): the order is read from there, and a
method switched off must never appear.
"""

from __future__ import annotations

import re
import secrets

import pytest
from support import sshd as sshd_helpers
from support.processes import HOST
from support.totp import TotpCodes
from test_auth import Answers
from test_reach import log_end, logged

from fleche_ssh.errors import AuthenticationError

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("fresh_pool")]


@pytest.fixture(scope="module")
def any_method(tmp_path_factory, client_key):
    """sshd taking publickey, password or keyboard-interactive, the last two checked by TOTP."""
    if missing := sshd_helpers.missing_totp_tools():
        pytest.fail(f"the TOTP server needs {', '.join(missing)} (see .ci/run)")
    secret = secrets.token_hex(20)
    server = sshd_helpers.start_sshd(
        tmp_path_factory.mktemp("any-method"), authorized_keys=[client_key.public_line],
        totp_secret_hex=secret,
        extra_config=["PasswordAuthentication yes", "AuthenticationMethods any"])
    yield server, TotpCodes(secret)
    server.stop()


@pytest.fixture
def on_server(make, client_home, any_method):
    server, _ = any_method
    with client_home.known_hosts.open("a") as f:
        f.writelines(line + "\n" for line in server.known_hosts_lines(hashed=True))

    def build(**keys):
        return make(hostname=HOST, port=server.port, **keys)

    return build


_METHOD = re.compile(r"^(Accepted|Failed) (\S+) for root from ")


def methods_logged(server, since: int) -> list[tuple[str, str]]:
    """(outcome, method) of each login attempt sshd logged after offset *since*."""
    logged(server, since, lambda line: line.startswith("Accepted "))  # the last line, if any
    lines = logged(server, since, lambda line: _METHOD.match(line) is not None)
    found = [_METHOD.match(line).groups() for line in lines]
    assert found, "sshd logged no login attempt"
    return [(outcome, method.split("/")[0]) for outcome, method in found
            if method != "none"]


def test_preferred_authentications_is_the_order_tried(on_server, any_method, pool):
    server, codes = any_method
    wrong = codes.wrong()
    prompts = Answers(*[wrong] * 6)
    since = log_end(server)
    cache = on_server(preferred_authentications="password,keyboard-interactive,publickey",
                      prompt=prompts)
    assert cache.contains("0" * 64) is False
    assert methods_logged(server, since) == [
        *[("Failed", "password")] * 3, *[("Failed", "keyboard-interactive")] * 3,
        ("Accepted", "publickey")]
    assert pool.get(cache.target()).auth.used[0].startswith("publickey")


def test_a_password_is_asked_through_the_prompt_handler(on_server, any_method, pool):
    server, codes = any_method
    prompts = Answers(codes)
    since = log_end(server)
    cache = on_server(preferred_authentications="password", prompt=prompts)
    assert cache.contains("0" * 64) is False
    assert methods_logged(server, since) == [("Accepted", "password")]
    [(_, _, [(question, echo)])] = prompts.questions
    assert question == f"root@{HOST}'s password: " and echo is False
    assert pool.get(cache.target()).auth.used == ["password"]


@pytest.mark.parametrize(("switch", "never"), [
    ({"password_authentication": False}, "password"),
    ({"kbd_interactive_authentication": False}, "keyboard-interactive"),
])
def test_a_method_switched_off_is_never_tried(on_server, any_method, switch, never):
    server, codes = any_method
    prompts = Answers(*[codes.wrong()] * 3)
    since = log_end(server)
    cache = on_server(preferred_authentications="password,keyboard-interactive,publickey",
                      prompt=prompts, **switch)
    assert cache.contains("0" * 64) is False
    tried = methods_logged(server, since)
    assert tried[-1] == ("Accepted", "publickey")
    assert never not in {method for _, method in tried}
    assert len(tried) == 4  # three wrong answers to the other method, then the key


def test_without_keys_the_code_logs_in_and_no_key_is_offered(on_server, any_method, pool):
    server, codes = any_method
    prompts = Answers(codes)
    since = log_end(server)
    cache = on_server(pubkey_authentication=False, prompt=prompts)
    assert cache.contains("0" * 64) is False
    assert methods_logged(server, since) == [("Accepted", "keyboard-interactive")]
    assert pool.get(cache.target()).auth.used == ["keyboard-interactive"]


def test_methods_paramiko_lacks_are_passed_over_and_none_left_is_an_error(on_server,
                                                                        any_method):
    server, _ = any_method
    since = log_end(server)
    cache = on_server(preferred_authentications="gssapi-with-mic,hostbased")
    with pytest.raises(AuthenticationError, match="tried: nothing") as failed:
        cache.info()
    assert "fleche-ssh may try only no method here (PreferredAuthentications" in str(
        failed.value)
    assert not logged(server, since, lambda line: _METHOD.match(line) is not None
                      and " none " not in line)
