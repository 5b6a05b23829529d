"""Host key checks with real keys (made by ssh-keygen) and real known_hosts files.

``verify`` is driven directly here, one policy at a time; the same policies
against a live sshd are in ``test_hostkey_policies.py``.  Whatever a user
would do with a message (``ssh-keygen -R``, ``ssh-keygen -F``) is run for
real, to check the message tells them something that works.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
import support as sshd_helpers

from fleche_ssh.config.target import Target, resolve
from fleche_ssh.errors import ChangedHostKey, HostKeyError, PromptUnavailable, UnknownHostKey
from fleche_ssh.ssh import hostkeys

HOST = "server.example.org"
POLICIES = ("yes", "ask", "accept-new", "no")


@dataclass(frozen=True)
class Key:
    """A host key as Paramiko hands it to us, plus its ``.pub`` file."""

    pkey: paramiko.PKey
    pub: Path

    @property
    def line(self) -> str:
        return f"{self.pkey.get_name()} {self.pkey.get_base64()}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory, client_key) -> dict[str, Key]:
    """Two ed25519 keys (a host's old and new key), one ecdsa, one rsa.

    ``client_key`` is requested for its check that ssh-keygen is installed.
    """
    folder = tmp_path_factory.mktemp("hostkeys")
    made = {}
    for name, kind in (("ed25519", "ed25519"), ("ed25519-new", "ed25519"),
                       ("ecdsa", "ecdsa"), ("rsa", "rsa")):
        path = folder / f"host_{name}"
        sshd_helpers.make_client_key(path, key_type=kind, comment=name)
        made[name] = Key(paramiko.PKey.from_path(path), path.with_name(path.name + ".pub"))
    return made


def make_target(tmp_path: Path, policy: str = "yes", *, port: int = 22, hashed: bool = False,
                global_lines: tuple[str, ...] = (),
                known_hosts_command: str | None = None) -> Target:
    known = tmp_path / "ssh" / "known_hosts"
    global_file = tmp_path / "global_known_hosts"
    if global_lines:
        global_file.write_text("".join(f"{line}\n" for line in global_lines))
    return resolve(HOST, config_file="none", explicit={
        "port": port,
        "known_hosts_file": (str(known),),
        "global_known_hosts_file": (str(global_file),),
        "strict_host_key_checking": policy,
        "hash_known_hosts": hashed,
        "known_hosts_command": known_hosts_command,
    })


def write_known(target: Target, *lines: str) -> Path:
    path = Path(target.known_hosts_files[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def found_by_ssh_keygen(path: Path, name: str) -> list[str]:
    """The entries ``ssh-keygen -F`` finds for *name* (it understands hashed lines)."""
    out = keygen("-F", name, "-f", str(path)).stdout
    return [line for line in out.splitlines() if line and not line.startswith("#")]


# --- known hosts are accepted -----------------------------------------------------------


def test_plain_entry_is_accepted(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(target, f"other.example.org {keys['ecdsa'].line}",
                       f"{HOST} {keys['ed25519'].line}")
    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:2"


def test_hashed_entry_is_accepted(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(target, f"{HOST} {keys['ed25519'].line}")
    assert keygen("-H", "-f", str(path)).returncode == 0  # OpenSSH hashes the file
    assert path.read_text().startswith("|1|")

    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:1"


def test_non_standard_port_uses_the_bracketed_name(tmp_path, keys):
    target = make_target(tmp_path, port=2222)
    assert target.known_hosts_name == f"[{HOST}]:2222"

    # An entry for port 22 says nothing about port 2222.
    write_known(target, f"{HOST} {keys['ed25519'].line}")
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)

    path = write_known(target, f"[{HOST}]:2222 {keys['ed25519'].line}")
    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:1"


@pytest.mark.parametrize(("names", "accepted"), [
    ("*.example.org", True),
    ("server.example.*,other", True),
    ("*.example.org,!server.example.org", False),
    ("SERVER.EXAMPLE.ORG", True),
    ("server.example.org.evil", False),
])
def test_patterns_in_known_hosts(tmp_path, keys, names, accepted):
    target = make_target(tmp_path)
    write_known(target, f"{names} {keys['ed25519'].line}")
    if accepted:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    else:
        with pytest.raises(UnknownHostKey):
            hostkeys.verify(target, keys["ed25519"].pkey, ask=None)


def test_global_file_is_read_but_never_written(tmp_path, keys):
    target = make_target(tmp_path, "accept-new", global_lines=(f"{HOST} {keys['ed25519'].line}",))
    verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None)

    assert verdict == f"known_hosts {target.global_known_hosts_files[0]}:1"
    assert not Path(target.known_hosts_files[0]).exists()


def test_cert_authority_and_garbage_lines_do_not_spoil_the_file(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(
        target,
        "# a comment",
        f"@cert-authority *.example.org {keys['ecdsa'].line}",
        "garbage",
        f"{HOST} ssh-ed25519 !!!not-base64!!!",
        "",
        f"{HOST} {keys['ed25519'].line}",
    )
    # Paramiko's own reader gives up on the whole file over the @cert-authority line.
    with pytest.raises(paramiko.hostkeys.InvalidHostKey):
        paramiko.HostKeys(str(path))

    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:6"


# --- a changed key is refused whatever the policy ---------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_changed_key_is_refused_under_every_policy(tmp_path, keys, policy):
    target = make_target(tmp_path, policy, port=2222)
    path = write_known(target, f"[{HOST}]:2222 {keys['ecdsa'].line}",
                       f"[{HOST}]:2222 {keys['ed25519'].line}")
    before = path.read_text()
    new = keys["ed25519-new"]
    asked = []

    with pytest.raises(ChangedHostKey) as raised:
        hostkeys.verify(target, new.pkey, ask=lambda q: asked.append(q) or True)

    message = str(raised.value)
    assert f"[{HOST}]:2222" in message
    assert "ssh-ed25519" in message
    assert hostkeys.fingerprint(new.pkey) in message
    assert f"{path}:2" in message
    assert "ssh-keygen -R" in message
    assert asked == []  # nobody is offered the choice to connect anyway
    assert path.read_text() == before


def test_the_suggested_ssh_keygen_command_removes_the_old_entry(tmp_path, keys):
    # A home with a blank in it, as many Windows profiles have.
    target = make_target(tmp_path / "Ada Lovelace", "accept-new", port=2222, hashed=True)
    path = write_known(target, f"[{HOST}]:2222 {keys['ed25519'].line}")
    assert keygen("-H", "-f", str(path)).returncode == 0
    with pytest.raises(ChangedHostKey) as raised:
        hostkeys.verify(target, keys["ed25519-new"].pkey, ask=None)

    command = re.search(r"(ssh-keygen -R .+)$", str(raised.value)).group(1)
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert found_by_ssh_keygen(path, f"[{HOST}]:2222") == []

    # With the old entry gone, accept-new records the new key.
    hostkeys.verify(target, keys["ed25519-new"].pkey, ask=None)
    assert len(found_by_ssh_keygen(path, f"[{HOST}]:2222")) == 1


def test_a_key_of_another_type_is_new_not_changed(tmp_path, keys):
    """As in OpenSSH: known_hosts holding only an ecdsa key says nothing about ed25519."""
    target = make_target(tmp_path, "yes")
    write_known(target, f"{HOST} {keys['ecdsa'].line}")
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)


@pytest.mark.parametrize("policy", POLICIES)
def test_revoked_key_is_refused_under_every_policy(tmp_path, keys, policy):
    target = make_target(tmp_path, policy)
    path = write_known(target, f"{HOST} {keys['ecdsa'].line}",
                       f"@revoked * {keys['ed25519'].line}",
                       f"{HOST} {keys['ed25519'].line}")

    with pytest.raises(HostKeyError) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=lambda q: True)

    message = str(raised.value)
    assert "@revoked" in message and f"{path}:2" in message
    assert hostkeys.fingerprint(keys["ed25519"].pkey) in message


# --- an unknown host, policy by policy --------------------------------------------------


def test_unknown_host_under_yes_is_refused_with_what_to_do(tmp_path, keys):
    target = make_target(tmp_path, "yes", port=2222)
    path = write_known(target, f"other.example.org {keys['ed25519'].line}")

    with pytest.raises(UnknownHostKey) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=lambda q: True)

    message = str(raised.value)
    assert f"[{HOST}]:2222" in message
    assert hostkeys.fingerprint(keys["ed25519"].pkey) in message
    assert f"ssh-keyscan -p 2222 {HOST} >> {path}" in message
    assert 'strict_host_key_checking = "accept-new"' in message
    assert found_by_ssh_keygen(path, f"[{HOST}]:2222") == []


def test_suggested_keyscan_command_keeps_a_path_with_blanks_whole(tmp_path, keys):
    target = make_target(tmp_path / "Ada Lovelace", "yes")
    with pytest.raises(UnknownHostKey) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)

    command = re.search(r"`(ssh-keyscan [^`]+)`", str(raised.value)).group(1)
    assert shlex.split(command) == [
        "ssh-keyscan", "-p", "22", HOST, ">>", target.known_hosts_files[0]]


@pytest.mark.parametrize("hashed", [False, True])
def test_accept_new_records_the_host(tmp_path, keys, hashed, caplog):
    target = make_target(tmp_path, "accept-new", port=2222, hashed=hashed)
    path = Path(target.known_hosts_files[0])  # neither the file nor its folder exist yet

    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None)

    assert str(path) in verdict
    assert f"Permanently added '[{HOST}]:2222'" in caplog.text
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("|1|") is hashed
    assert (f"[{HOST}]:2222" in lines[0]) is not hashed
    assert lines[0].endswith(keys["ed25519"].line)
    assert len(found_by_ssh_keygen(path, f"[{HOST}]:2222")) == 1
    # Known from now on.
    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:1"


def test_recording_after_a_last_line_without_newline(tmp_path, keys):
    target = make_target(tmp_path, "accept-new")
    path = write_known(target)
    path.write_text(f"other.example.org {keys['ecdsa'].line}")  # no final newline

    hostkeys.verify(target, keys["ed25519"].pkey, ask=None)

    assert path.read_text().splitlines() == [
        f"other.example.org {keys['ecdsa'].line}", f"{HOST} {keys['ed25519'].line}"]
    assert len(found_by_ssh_keygen(path, "other.example.org")) == 1


def test_no_records_the_host_with_a_warning(tmp_path, keys, caplog):
    target = make_target(tmp_path, "no")
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without verifying" in w and hostkeys.fingerprint(keys["ed25519"].pkey) in w
               for w in warnings), warnings
    assert len(found_by_ssh_keygen(Path(target.known_hosts_files[0]), HOST)) == 1


@pytest.mark.parametrize("answer", [True, False])
def test_ask_puts_the_question_and_obeys(tmp_path, keys, answer):
    target = make_target(tmp_path, "ask")
    questions: list[str] = []

    def confirm(question: str) -> bool:
        questions.append(question)
        return answer

    if answer:
        path = Path(target.known_hosts_files[0])
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=confirm)
        assert verdict == f"accepted by the user, recorded in {path}"
        assert len(found_by_ssh_keygen(path, HOST)) == 1
    else:
        with pytest.raises(UnknownHostKey, match="not accepted"):
            hostkeys.verify(target, keys["ed25519"].pkey, ask=confirm)
        assert not Path(target.known_hosts_files[0]).exists()

    assert len(questions) == 1
    assert HOST in questions[0]
    assert hostkeys.fingerprint(keys["ed25519"].pkey) in questions[0]
    assert "ssh-ed25519" in questions[0]


def test_ask_with_nobody_to_ask_is_refused(tmp_path, keys):
    target = make_target(tmp_path, "ask")
    with pytest.raises(UnknownHostKey) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert hostkeys.fingerprint(keys["ed25519"].pkey) in str(raised.value)
    assert not Path(target.known_hosts_files[0]).exists()


def test_ask_whose_prompt_is_unavailable_is_refused(tmp_path, keys):
    target = make_target(tmp_path, "ask")

    def no_terminal(question: str) -> bool:
        raise PromptUnavailable("no terminal")

    with pytest.raises(UnknownHostKey, match="ssh-keyscan"):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=no_terminal)


# --- fingerprints and key types ---------------------------------------------------------


@pytest.mark.parametrize("name", ["ed25519", "ecdsa", "rsa"])
def test_fingerprint_is_what_ssh_keygen_prints(keys, name):
    key = keys[name]
    printed = keygen("-lf", str(key.pub))
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.split()[1] == hostkeys.fingerprint(key.pkey)


def test_known_key_types_in_file_order(tmp_path, keys):
    target = make_target(tmp_path, port=2222,
                         global_lines=(f"[{HOST}]:2222 {keys['ed25519'].line}",))
    path = write_known(
        target,
        f"[{HOST}]:2222 {keys['rsa'].line}",
        f"{HOST} {keys['ed25519-new'].line}",           # port 22: another host
        f"@cert-authority [{HOST}]:2222 {keys['ecdsa'].line}",
        f"[{HOST}]:2222 {keys['ecdsa'].line}",
        f"[{HOST}]:2222 {keys['rsa'].line}",
    )
    assert keygen("-H", "-f", str(path)).returncode == 0  # hashed entries count too

    found = hostkeys.known_key_types(target)
    plain = [t for t in found if not t.endswith("-cert-v01@openssh.com")]
    assert plain == ["ssh-rsa", "ecdsa-sha2-nistp256", "ssh-ed25519"]
    # The @cert-authority line puts certificates first, those of the known types first.
    assert found[:3] == [f"{t}-cert-v01@openssh.com" for t in plain]
    assert found[-3:] == plain
    assert hostkeys.known_key_types(make_target(tmp_path / "empty")) == []


def test_a_revoked_key_does_not_make_its_type_asked_for(tmp_path, keys):
    # Asking first for the type of the revoked key would have the server show that key, and
    # the connection refused, though the host's rsa key is known and good.
    target = make_target(tmp_path, port=2222)
    write_known(target, f"@revoked [{HOST}]:2222 {keys['ed25519-new'].line}",
                f"[{HOST}]:2222 {keys['rsa'].line}")
    assert hostkeys.known_key_types(target) == ["ssh-rsa"]


# --- CheckHostIP's address -----------------------------------------------------------

ADDRESS = "[192.0.2.7]:2222"


@pytest.mark.parametrize("hashed", [False, True])
def test_a_new_host_is_recorded_with_its_address_as_ssh_records_it(tmp_path, keys, hashed):
    target = make_target(tmp_path, "accept-new", port=2222, hashed=hashed)
    path = Path(target.known_hosts_files[0])

    hostkeys.verify(target, keys["ed25519"].pkey, ask=None, address=ADDRESS)

    # One "name,address" line, or, hashed, a line for each.
    lines = path.read_text().splitlines()
    assert len(lines) == (2 if hashed else 1)
    if not hashed:
        assert lines[0] == f"[{HOST}]:2222,{ADDRESS} {keys['ed25519'].line}"
    for name in (f"[{HOST}]:2222", ADDRESS):
        assert len(found_by_ssh_keygen(path, name)) == 1, name


def test_a_new_host_at_a_new_address_is_one_question_under_ask(tmp_path, keys):
    # As ssh: one question for the name, and the answer records the name and the address.
    target = make_target(tmp_path, "ask", port=2222)
    questions: list[str] = []
    verdict = hostkeys.verify(target, keys["ed25519"].pkey,
                              ask=lambda q: questions.append(q) or True, address=ADDRESS)
    (question,) = questions
    assert question.startswith(f"The authenticity of host '[{HOST}]:2222' can't be established.")
    path = Path(target.known_hosts_files[0])
    assert verdict == f"accepted by the user, recorded in {path}"
    assert path.read_text().splitlines() == [f"[{HOST}]:2222,{ADDRESS} {keys['ed25519'].line}"]


@pytest.mark.parametrize("answer", [True, False])
def test_an_address_with_another_key_is_a_question_under_ask(tmp_path, keys, answer):
    target = make_target(tmp_path, "ask", port=2222)
    write_known(target, f"[{HOST}]:2222 {keys['ed25519'].line}",
                f"{ADDRESS} {keys['ed25519-new'].line}")
    questions = []

    def ask(question: str) -> bool:
        questions.append(question)
        return answer

    if answer:
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=ask, address=ADDRESS)
        assert verdict.endswith("accepted by the user")
    else:
        with pytest.raises(ChangedHostKey, match="StrictHostKeyChecking is ask"):
            hostkeys.verify(target, keys["ed25519"].pkey, ask=ask, address=ADDRESS)
    (question,) = questions
    assert f"differs from the key for the IP address '{ADDRESS}'" in question
    with pytest.raises(ChangedHostKey):  # nobody to ask: refused, as ssh in batch mode
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None, address=ADDRESS)


def test_a_known_host_at_a_new_address_has_the_address_recorded(tmp_path, keys, caplog):
    # As ssh: the name's key is checked by the policy, and a new address is added whatever
    # the policy ("Permanently added the ... host key for IP address").
    target = make_target(tmp_path, "yes", port=2222)
    path = write_known(target, f"[{HOST}]:2222 {keys['ed25519'].line}")

    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None, address=ADDRESS)

    assert verdict == f"known_hosts {path}:1, recorded in {path}"
    assert f"Permanently added '{ADDRESS}' (ssh-ed25519) to {path}" in caplog.text
    assert path.read_text().splitlines() == [
        f"[{HOST}]:2222 {keys['ed25519'].line}", f"{ADDRESS} {keys['ed25519'].line}"]
    assert len(found_by_ssh_keygen(path, ADDRESS)) == 1


def test_an_address_with_another_key_is_a_warning_under_no(tmp_path, keys, caplog):
    # The address is stale in both files: the warning names each line, as the user has to
    # look at both.
    target = make_target(tmp_path, "no", port=2222,
                         global_lines=(f"{ADDRESS} {keys['ed25519-new'].line}",))
    path = write_known(target, f"[{HOST}]:2222 {keys['ed25519'].line}",
                       f"{ADDRESS} {keys['ed25519-new'].line}")
    global_file = target.global_known_hosts_files[0]

    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None, address=ADDRESS)

    message = (f"the ssh-ed25519 host key for '[{HOST}]:2222' differs from the key for the IP "
               f"address '{ADDRESS}' ({path}:2, {global_file}:1)")
    assert verdict == f"known_hosts {path}:1; {message}"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"Warning: {message}"]
    assert len(path.read_text().splitlines()) == 2  # nothing recorded over the stale line
