"""What ``verify`` decides, says and writes at the edges of known_hosts files.

The same real keys and files as ``test_hostkeys.py``: the lines a user may
have (hand-edited, broken, huge, in odd places), the exact commands the
messages suggest, and how a new entry is written.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import logging
import os
import stat
import tracemalloc
from pathlib import Path

import pytest
from test_hostkeys import HOST, found_by_ssh_keygen, keygen, keys, make_target, write_known

from fleche_ssh.config.target import Target
from fleche_ssh.errors import ChangedHostKey, HostKeyError, UnknownHostKey
from fleche_ssh.ssh import hostkeys

__all__ = ["keys"]  # the module-scoped fixture of real keys, shared with test_hostkeys.py


def debug_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --- lines that cannot be used are skipped, saying where -----------------------------


def test_a_broken_hashed_entry_is_skipped_and_the_next_line_used(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(target, f"|1|not-base64|x {keys['ed25519'].line}",
                       f"|1|only-two {keys['ed25519'].line}",
                       f"{HOST} {keys['ed25519'].line}")
    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:3"


def test_a_hashed_entry_for_another_host_does_not_match(tmp_path, keys):
    target = make_target(tmp_path)
    write_known(target, f"{hostkeys.hash_name('other.example.org')} {keys['ed25519'].line}")
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)


def test_hash_name_writes_openssh_s_form(keys):
    magic, salt, digest = hostkeys.hash_name(HOST).split("|")[1:]
    assert magic == "1"
    assert len(base64.b64decode(salt)) == 20  # the salt length OpenSSH uses (SHA-1 size)
    assert len(base64.b64decode(digest)) == 20
    assert hostkeys.hash_name(HOST) != hostkeys.hash_name(HOST)  # a fresh salt each time


def test_unusable_lines_are_logged_with_file_and_line(tmp_path, keys, caplog):
    target = make_target(tmp_path)
    path = write_known(target, "garbage", f"{HOST} ssh-ed25519 !!!not-base64!!!",
                       f"{HOST} {keys['ed25519'].line}")
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.hostkeys"):
        assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:3"
    assert debug_lines(caplog) == [f"{path}:1: not a known_hosts entry, skipped",
                                   f"{path}:2: key is not base64, skipped"]


def test_a_key_that_is_not_base64_is_neither_known_nor_changed(tmp_path, keys):
    """A mangled line for the host must not turn an unknown host into a "changed" key."""
    target = make_target(tmp_path)
    write_known(target, f"{HOST} ssh-ed25519 AAAA-C3Nz")  # base64 once the "-" is dropped
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert hostkeys.known_key_types(target) == []


def test_a_comment_line_is_not_an_entry(tmp_path, keys):
    target = make_target(tmp_path)
    write_known(target, f"#{HOST} {keys['ed25519'].line}", f"  # {HOST} {keys['ed25519'].line}")
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)


def test_a_marker_line_without_a_key_is_skipped(tmp_path, keys, caplog):
    target = make_target(tmp_path)
    path = write_known(target, f"@revoked {HOST} ssh-ed25519", f"{HOST} {keys['ed25519'].line}")
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.hostkeys"):
        assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:2"
    assert debug_lines(caplog) == [f"{path}:1: not a known_hosts entry, skipped"]


def test_a_revoked_line_for_another_key_refuses_nothing(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(target, f"@revoked * {keys['ecdsa'].line}", f"{HOST} {keys['ed25519'].line}")
    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:2"


def test_the_revoked_message_says_whom_to_ask(tmp_path, keys):
    target = make_target(tmp_path, port=2222)
    write_known(target, f"@revoked * {keys['ed25519'].line}")
    with pytest.raises(HostKeyError) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert f"ask the administrators of {HOST} for the current key" in str(raised.value)
    assert f"host key of [{HOST}]:2222 " in str(raised.value)


# --- files that are not what they seem are skipped without a hang --------------------


@pytest.mark.timeout(10)  # the failure this guards against is a hang
def test_a_fifo_as_known_hosts_is_skipped_with_a_warning(tmp_path, keys, caplog):
    target = make_target(tmp_path)
    fifo = Path(target.known_hosts_files[0])
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"), \
            pytest.raises(UnknownHostKey):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert f"known_hosts file {fifo} is not a regular file; skipped" in warnings(caplog)


def test_dev_null_as_known_hosts_is_skipped_silently(tmp_path, keys, caplog):
    target = dataclasses.replace(make_target(tmp_path), known_hosts_files=(os.devnull,))
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.hostkeys"):
        assert hostkeys.read_known_hosts([os.devnull], HOST) == []
        assert hostkeys.known_key_types(target) == []
    assert caplog.records == []


def test_an_unreadable_path_is_skipped_with_the_reason(tmp_path, keys, caplog):
    (tmp_path / "a-file").write_text("")
    path = str(tmp_path / "a-file" / "known_hosts")  # a file as its folder: ENOTDIR
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        assert hostkeys.read_known_hosts([path], HOST) == []
    assert warnings(caplog) == [f"cannot read known_hosts file {path}: Not a directory"]


# --- long lines and large files are read within bounds -------------------------------


def test_a_line_of_the_longest_size_is_read_and_a_longer_one_skipped(tmp_path, keys, caplog):
    target = make_target(tmp_path)
    entry = f"{HOST} {keys['ed25519'].line}"
    longest = "x" * (hostkeys.MAX_LINE_BYTES - len(entry) - 2) + "," + entry  # with its \n
    too_long = "y" + longest
    assert len(longest) + 1 == 64 * 1024
    path = write_known(target, too_long, "z" * (3 * hostkeys.MAX_LINE_BYTES), longest)
    with caplog.at_level(logging.DEBUG, logger="fleche_ssh.hostkeys"):
        assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:3"
    assert debug_lines(caplog) == [f"{path}:{n}: longer than 65536 bytes, skipped" for n in (1, 2)]

    write_known(target, too_long)
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)


def test_entries_past_16_mib_are_ignored_with_a_warning(tmp_path, keys, caplog):
    target = make_target(tmp_path)
    filler = "# " + "f" * 1021 + "\n"  # 1 KiB a line
    path = write_known(target)
    with path.open("w") as f:
        f.write(filler * (16 * 1024 - 1))
        f.write(f"{HOST} {keys['ed25519'].line}".ljust(1023) + "\n")  # ends at 16 MiB exactly
        f.write(f"{HOST} {keys['ecdsa'].line}\n")
    assert path.stat().st_size > hostkeys.MAX_KNOWN_HOSTS_BYTES
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == (
            f"known_hosts {path}:{16 * 1024}")
        with pytest.raises(UnknownHostKey):
            hostkeys.verify(target, keys["ecdsa"].pkey, ask=None)
    assert warnings(caplog)[-1] == (f"known_hosts file {path} is larger than 16 MiB; entries "
                                    "past that point are ignored")


def test_a_file_of_exactly_16_mib_is_read_whole_without_a_warning(tmp_path, keys, caplog):
    target = make_target(tmp_path)
    path = write_known(target)
    with path.open("w") as f:
        f.write(("# " + "f" * 1021 + "\n") * (16 * 1024 - 1))
        f.write(f"{HOST} {keys['ed25519'].line}".ljust(1023) + "\n")
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert caplog.records == []


def test_a_huge_file_without_line_breaks_is_read_a_line_s_worth_at_a_time(tmp_path, keys, caplog):
    # A known_hosts path that names something else (an image, a log of zeros): the read
    # stops at 16 MiB, never holding more than a line's worth, and what follows is not read.
    path = tmp_path / "known_hosts"
    with path.open("wb") as f:
        f.truncate(2 * hostkeys.MAX_KNOWN_HOSTS_BYTES)  # zeros: one line of 32 MiB
        f.seek(0, os.SEEK_END)
        f.write(f"\n{HOST} {keys['ed25519'].line}\n".encode())
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
            entries = hostkeys.read_known_hosts([str(path)], HOST)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert entries == []
    assert peak < 1 << 20
    assert warnings(caplog) == [f"known_hosts file {path} is larger than 16 MiB; entries "
                                "past that point are ignored"]


def test_a_file_one_byte_over_16_mib_is_warned_about_inside_a_long_line(tmp_path, caplog):
    path = tmp_path / "known_hosts"
    with path.open("wb") as f:
        f.truncate(hostkeys.MAX_KNOWN_HOSTS_BYTES)  # one line too long to read
        f.seek(0, os.SEEK_END)
        f.write(b"\n")
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        assert hostkeys.read_known_hosts([str(path)], HOST) == []
    assert warnings(caplog) == [f"known_hosts file {path} is larger than 16 MiB; entries "
                                "past that point are ignored"]


# --- a changed key: the message names every line and the command that works ----------


def test_changed_key_names_every_line_and_an_unquoted_command(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(target, f"{HOST} {keys['ed25519'].line}", f"{HOST} {keys['ecdsa'].line}",
                       f"*.example.org {keys['ed25519'].line}")
    with pytest.raises(ChangedHostKey) as raised:
        hostkeys.verify(target, keys["ed25519-new"].pkey, ask=None)
    message = str(raised.value)
    assert f"but {path}:1, {path}:3 records a different one." in message
    assert message.endswith(f"ssh-keygen -R {HOST} -f {path}")


def test_changed_key_quotes_a_bracketed_name_for_the_shell(tmp_path, keys):
    target = make_target(tmp_path, port=2222)
    path = write_known(target, f"[{HOST}]:2222 {keys['ed25519'].line}")
    with pytest.raises(ChangedHostKey) as raised:
        hostkeys.verify(target, keys["ed25519-new"].pkey, ask=None)
    assert str(raised.value).endswith(f'ssh-keygen -R "[{HOST}]:2222" -f {path}')


# --- an unknown host: what is suggested -----------------------------------------------


def test_unknown_host_message_suggests_ssh_and_keyscan(tmp_path, keys):
    target = make_target(tmp_path, port=2222)
    with pytest.raises(UnknownHostKey) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    known = target.known_hosts_files[0]
    assert str(raised.value) == (
        f"Host [{HOST}]:2222 is not in known_hosts ({known}); it offered a ssh-ed25519 key "
        f"{hostkeys.fingerprint(keys['ed25519'].pkey)}. Check the fingerprint with the host's "
        f"administrators, then either run `ssh -p 2222 {target.user}@{HOST}` once and answer "
        f"yes, or `ssh-keyscan -p 2222 {HOST} >> {known}`, or set strict_host_key_checking = "
        f"\"accept-new\" to record new hosts automatically.")


def test_unknown_host_under_an_alias_says_to_record_it_under_the_alias(tmp_path, keys):
    target = dataclasses.replace(make_target(tmp_path, port=2222), host_key_alias="cluster")
    with pytest.raises(UnknownHostKey) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    known = target.known_hosts_files[0]
    assert str(raised.value) == (
        f"Host cluster is not in known_hosts ({known}); it offered a ssh-ed25519 key "
        f"{hostkeys.fingerprint(keys['ed25519'].pkey)}. Check the fingerprint with the host's "
        f"administrators, then either run `ssh -p 2222 -o HostKeyAlias=cluster "
        f"{target.user}@{HOST}` once and answer yes, or `ssh-keyscan -p 2222 {HOST}` with the "
        f"name in front changed to cluster, added to {known}, or set strict_host_key_checking = "
        f"\"accept-new\" to record new hosts automatically.")


def test_with_no_user_file_keyscan_is_pointed_at_the_default(tmp_path, keys):
    target = dataclasses.replace(make_target(tmp_path), known_hosts_files=())
    with pytest.raises(UnknownHostKey) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert f"`ssh-keyscan -p 22 {HOST} >> ~/.ssh/known_hosts`" in str(raised.value)


def test_with_no_user_file_a_new_host_is_accepted_but_not_recorded(tmp_path, keys, caplog):
    target = dataclasses.replace(make_target(tmp_path, "accept-new"), known_hosts_files=())
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert verdict == "new host, StrictHostKeyChecking=accept-new"
    assert caplog.records == []
    assert list(tmp_path.iterdir()) == []


def test_accept_new_records_quietly_apart_from_the_added_line(tmp_path, keys, caplog):
    target = make_target(tmp_path, "accept-new")
    path = Path(target.known_hosts_files[0])
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert verdict == f"new host, StrictHostKeyChecking=accept-new, recorded in {path}"
    assert warnings(caplog) == [f"Permanently added '{HOST}' (ssh-ed25519) to {path}"]


def test_no_says_which_host_is_unverified(tmp_path, keys, caplog):
    target = make_target(tmp_path, "no")
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert verdict.startswith("new host, StrictHostKeyChecking=no, recorded in ")
    fp = hostkeys.fingerprint(keys["ed25519"].pkey)
    assert warnings(caplog)[0] == f"Connecting to {HOST} without verifying its ssh-ed25519 key {fp}"


def test_ask_shows_openssh_s_question(tmp_path, keys):
    target = make_target(tmp_path, "ask")
    questions: list[str] = []
    hostkeys.verify(target, keys["ed25519"].pkey, ask=lambda q: questions.append(q) or True)
    fp = hostkeys.fingerprint(keys["ed25519"].pkey)
    assert questions == [f"The authenticity of host '{HOST}' can't be established.\n"
                         f"ssh-ed25519 key {fp}.\n"
                         "Are you sure you want to continue connecting (yes/no)? "]


def test_a_refused_question_names_the_key(tmp_path, keys):
    target = make_target(tmp_path, "ask")
    with pytest.raises(UnknownHostKey) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=lambda q: False)
    fp = hostkeys.fingerprint(keys["ed25519"].pkey)
    assert str(raised.value) == f"Host key of {HOST} (ssh-ed25519 key {fp}) was not accepted."


def test_ask_is_not_asked_under_other_policies(tmp_path, keys):
    asked: list[str] = []
    for policy in ("yes", "accept-new", "no"):
        target = make_target(tmp_path / policy, policy)
        try:
            hostkeys.verify(target, keys["ed25519"].pkey, ask=lambda q: asked.append(q) or True)
        except UnknownHostKey:
            assert policy == "yes"
    assert asked == []


# --- how a new entry is written -------------------------------------------------------


def test_the_folder_made_for_known_hosts_is_private(tmp_path, keys):
    target = make_target(tmp_path, "accept-new")
    hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    folder = Path(target.known_hosts_files[0]).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_tilde_in_the_user_file_means_home(tmp_path, keys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    target = dataclasses.replace(make_target(tmp_path, "accept-new"),
                                 known_hosts_files=("~/.ssh/known_hosts",))
    verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    path = tmp_path / "home" / ".ssh" / "known_hosts"
    assert verdict.endswith(f"recorded in {path}")
    assert len(found_by_ssh_keygen(path, HOST)) == 1


def test_a_bare_file_name_is_recorded_in_the_working_folder(tmp_path, keys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = dataclasses.replace(make_target(tmp_path, "accept-new"),
                                 known_hosts_files=("known_hosts",))
    hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert (tmp_path / "known_hosts").read_text() == f"{HOST} {keys['ed25519'].line}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["known_hosts"]  # nothing else made


def test_an_empty_file_gets_the_entry_as_its_first_line(tmp_path, keys):
    target = make_target(tmp_path, "accept-new")
    path = write_known(target)
    hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert path.read_text() == f"{HOST} {keys['ed25519'].line}\n"


def test_a_file_that_ends_with_a_newline_gets_no_blank_line(tmp_path, keys):
    target = make_target(tmp_path, "accept-new")
    path = write_known(target, f"other.example.org {keys['ecdsa'].line}")
    hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert path.read_text() == (f"other.example.org {keys['ecdsa'].line}\n"
                                f"{HOST} {keys['ed25519'].line}\n")


def test_a_file_that_cannot_be_written_accepts_and_says_so(tmp_path, keys, caplog):
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "known_hosts"
    target = dataclasses.replace(make_target(tmp_path, "accept-new"),
                                 known_hosts_files=(str(path),))
    with caplog.at_level(logging.WARNING, logger="fleche_ssh.hostkeys"):
        verdict = hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert verdict == "new host, StrictHostKeyChecking=accept-new (not recorded: File exists)"
    assert warnings(caplog)[-1] == (f"could not record host key of {HOST} in {path}: "
                                    f"[Errno {errno.EEXIST}] File exists: '{path.parent}'")


def test_user_files_are_read_before_global_ones(tmp_path, keys):
    target = make_target(tmp_path, global_lines=(f"{HOST} {keys['ed25519'].line}",))
    path = write_known(target, f"{HOST} {keys['ed25519'].line}")
    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:1"
    assert [e.path for e in hostkeys.known_entries(target)] == [
        str(path), target.global_known_hosts_files[0]]


def test_entries_read_once_serve_both_the_key_order_and_the_check(tmp_path, keys):
    """Connecting reads known_hosts once: what was read then is what decides."""
    target = make_target(tmp_path)
    path = write_known(target, f"{HOST} {keys['ecdsa'].line}")
    entries = hostkeys.known_entries(target)
    path.write_text(f"{HOST} {keys['ed25519'].line}\n")  # changed after the read
    assert hostkeys.known_key_types(target, entries) == ["ecdsa-sha2-nistp256"]
    assert hostkeys.verify(target, keys["ecdsa"].pkey, None, entries) == f"known_hosts {path}:1"
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(target, keys["ed25519"].pkey, None, entries)


def test_an_entry_read_for_every_host_says_which_hosts_it_covers(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(target, "# hosts of the example lab",
                       f"{hostkeys.hash_name(HOST)} {keys['ed25519'].line}",
                       f"#{HOST} {keys['rsa'].line}",  # an entry commented out
                       f"*.example.org,!{HOST} {keys['ecdsa'].line}",
                       f"other.example.org {keys['rsa'].line}")
    entries = hostkeys.read_known_hosts([str(path)])
    assert [e.line for e in entries] == [2, 4, 5]
    assert [e.matches(HOST) for e in entries] == [True, False, False]
    assert [e.matches("other.example.org") for e in entries] == [False, True, True]


def test_an_unknown_host_names_every_user_file_searched(tmp_path, keys):
    first, second = tmp_path / "a" / "known_hosts", tmp_path / "b" / "known_hosts"
    target = dataclasses.replace(make_target(tmp_path), known_hosts_files=(str(first), str(second)))
    with pytest.raises(UnknownHostKey) as raised:
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)
    assert f"Host {HOST} is not in known_hosts ({first}, {second}); it offered" in str(raised.value)
    assert f">> {first}`" in str(raised.value)  # new entries go to the first


def test_a_comment_after_the_key_is_allowed(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(target, f"{HOST} {keys['ed25519'].line} root@server added by hand")
    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:1"


def test_a_line_that_is_not_utf8_does_not_spoil_the_file(tmp_path, keys):
    target = make_target(tmp_path)
    path = write_known(target)
    path.write_bytes("# Gerät im Labor\n".encode("latin-1")
                     + f"{HOST} {keys['ed25519'].line}\n".encode())
    assert hostkeys.verify(target, keys["ed25519"].pkey, ask=None) == f"known_hosts {path}:2"


# --- a KnownHostsCommand's lines count as known_hosts lines --------------------------


def command_target(tmp_path: Path, *lines: str) -> tuple[Target, Path]:
    """A target whose KnownHostsCommand logs its arguments and prints *lines*."""
    log, printed = tmp_path / "invocations", tmp_path / "printed"
    printed.write_text("".join(f"{line}\n" for line in lines))
    script = tmp_path / "known-hosts-command"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\ncat {printed}\n')
    script.chmod(0o755)
    return make_target(tmp_path, known_hosts_command=f"{script} %I %H %t %f %K"), log


def key_words(key) -> str:
    """``%t %f %K`` for *key*: its type, its fingerprint as ssh-keygen prints it, its base64."""
    fingerprint = keygen("-l", "-f", str(key.pub)).stdout.split()[1]
    return f"{key.pkey.get_name()} {fingerprint} {key.pkey.get_base64()}"


def test_a_known_hosts_command_s_key_is_known_by_its_line_number(tmp_path, keys):
    key = keys["ed25519"]
    target, log = command_target(tmp_path, "# printed by the command",
                                 f"other.example.org {keys['ecdsa'].line}", f"{HOST} {key.line}")
    assert hostkeys.verify(target, key.pkey, ask=None) == "known_hosts KnownHostsCommand:3"
    assert log.read_text().splitlines() == [f"HOSTNAME {HOST} {key_words(key)}"]
    assert not Path(target.known_hosts_files[0]).exists()  # known, so nothing recorded


def test_a_known_hosts_command_s_line_for_another_host_is_not_this_host_s(tmp_path, keys):
    target, _ = command_target(tmp_path, f"other.example.org {keys['ed25519-new'].line}")
    with pytest.raises(UnknownHostKey):  # unknown, not changed: the line is not for HOST
        hostkeys.verify(target, keys["ed25519"].pkey, ask=None)


def test_a_known_hosts_command_is_asked_for_the_address_too(tmp_path, keys):
    key = keys["ed25519"]
    target, log = command_target(tmp_path, f"{HOST},192.0.2.7 {key.line}")
    verdict = hostkeys.verify(target, key.pkey, ask=None, address="192.0.2.7")
    assert verdict == "known_hosts KnownHostsCommand:1"
    assert log.read_text().splitlines() == [f"HOSTNAME {HOST} {key_words(key)}",
                                            f"ADDRESS 192.0.2.7 {key_words(key)}"]
    assert not Path(target.known_hosts_files[0]).exists()  # the address is known as well


def test_a_known_hosts_command_is_asked_for_the_key_order(tmp_path, keys):
    # As ssh: before the handshake there is no key, so %t, %f and %K are NONE.
    target, log = command_target(tmp_path, f"{HOST} {keys['ecdsa'].line}")
    assert hostkeys.known_key_types(target) == ["ecdsa-sha2-nistp256"]
    assert log.read_text().splitlines() == [f"ORDER {HOST} NONE NONE NONE"]
