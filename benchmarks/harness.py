"""The benchmark's world: a loopback sshd, a throwaway client home, a remote workdir.

Both implementations reach the *same* sshd through the *same* ssh config
(``ssh_options = ["-F", config, "-o", "BatchMode=yes"]``, which the stock
``ssh`` binary and ``ParamikoCache`` both understand) and serve the *same*
remote workdir, so a difference in the figures is a difference in the
client.  The remote cache is the on-disk one ``tests/support/remote.py`` writes
(cloudpickle files): it is what users run, and every server process sees
what another one saved, which the memory probe (a separate process) and
multi-channel caches rely on.

Host aliases: ``bench`` goes straight to sshd; ``bench-rtt<N>`` goes
through a :class:`~support.relay.DelayRelay` that adds N ms to every round
trip, ``bench-rtt<N>-<M>mbit`` through one that also caps the bandwidth at
M Mbit/s.  Each relay runs in a process of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from support.keys import hash_known_host, known_hosts_entry, make_client_key  # noqa: E402
from support.remote import write_remote_workdir  # noqa: E402
from support.sshd import Sshd, start_sshd  # noqa: E402
from support.tools import missing_sshd_tools  # noqa: E402

HOST = "bench"
#: Bound on a relay process stopping once its stdin closes.
RELAY_STOP = 10.0


def relay_host(rtt_ms: int, mbit: int | None = None) -> str:
    """The alias through the relay adding *rtt_ms*, capped at *mbit* Mbit/s if given."""
    return f"{HOST}-rtt{rtt_ms}" + (f"-{mbit}mbit" if mbit else "")


@dataclass(frozen=True)
class Bench:
    """What a measurement needs to build either cache against the shared server."""

    home: Path
    config: Path
    remote_dir: Path
    python: str
    sshd: Sshd

    @property
    def ssh_options(self) -> tuple[str, ...]:
        return ("-F", str(self.config), "-o", "BatchMode=yes")

    def cache_kwargs(self, host: str = HOST) -> dict[str, Any]:
        """Keyword arguments both ``SshCache`` and ``ParamikoCache`` take."""
        return {
            "host": host,
            "python": self.python,
            "workdir": str(self.remote_dir),
            "ssh_options": self.ssh_options,
        }


def _host_block(alias: str, port: int, ssh_dir: Path) -> str:
    return (
        f"Host {alias}\n"
        "    HostName 127.0.0.1\n"
        f"    Port {port}\n"
        "    User root\n"
        f"    IdentityFile {ssh_dir / 'id_ed25519'}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {ssh_dir / 'known_hosts'}\n"
        "    StrictHostKeyChecking yes\n"
    )


def _client_home(root: Path, server: Sshd, key: Path,
                 ports: dict[str, int]) -> Path:
    """``root/home/.ssh`` with the key, known_hosts for every port, and one block per alias."""
    ssh_dir = root / "home" / ".ssh"
    ssh_dir.mkdir(parents=True)
    ssh_dir.chmod(0o700)
    shutil.copyfile(key, ssh_dir / "id_ed25519")
    (ssh_dir / "id_ed25519").chmod(0o600)
    lines = []
    for port in ports.values():
        entry = known_hosts_entry(server.host, port)
        lines += [f"{hash_known_host(entry)} {pub}"
                  for pub in server.host_public_keys.values()]
    (ssh_dir / "known_hosts").write_text("".join(line + "\n" for line in lines))
    config = ssh_dir / "config"
    config.write_text("\n".join(_host_block(a, p, ssh_dir) for a, p in ports.items()))
    config.chmod(0o600)
    return config


@contextlib.contextmanager
def relay_process(target_port: int, one_way_delay: float,
                  rate: float | None = None) -> Iterator[int]:
    """A :class:`~support.relay.DelayRelay` in a process of its own; yields its port.

    Not in this process: its threads would take the interpreter lock from
    the Python client being timed, and not from the stock client.
    """
    argv = [sys.executable, str(TESTS / "support" / "relay.py"), str(target_port),
            str(one_way_delay), *([] if rate is None else [str(rate)])]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdin is not None
            yield int(proc.stdout.readline())
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(RELAY_STOP)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def bench_world(rtts_ms: Sequence[int],
                capped: Sequence[tuple[int, int]] = ()) -> Iterator[Bench]:
    """Start sshd and one relay per added RTT; point ``$HOME`` at a throwaway home.

    *capped* adds a relay per ``(rtt_ms, mbit)`` that also caps the bandwidth.

    ``$HOME`` is set for the whole process (and the memory probes it starts),
    and ``SSH_AUTH_SOCK`` removed, so the developer's own keys and agent never
    take part.
    """
    missing = missing_sshd_tools()
    if missing:
        raise SystemExit(f"The benchmark needs Debian package(s): {', '.join(missing)}")
    root = Path(tempfile.mkdtemp(prefix="fleche-bench-"))
    saved_env = {k: os.environ.get(k) for k in ("HOME", "SSH_AUTH_SOCK", "SSH_AGENT_PID")}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        stack.callback(_restore_env, saved_env)
        key = root / "key" / "id_ed25519"
        public = make_client_key(key)
        server = start_sshd(root / "sshd", authorized_keys=[public])
        stack.callback(server.stop)
        ports = {HOST: server.port}
        for rtt in rtts_ms:
            ports[relay_host(rtt)] = stack.enter_context(relay_process(server.port, rtt / 2000))
        for rtt, mbit in capped:
            ports[relay_host(rtt, mbit)] = stack.enter_context(
                relay_process(server.port, rtt / 2000, rate=mbit * 1e6 / 8))
        config = _client_home(root, server, key, ports)
        os.environ["HOME"] = str(config.parent.parent)
        os.environ.pop("SSH_AUTH_SOCK", None)
        os.environ.pop("SSH_AGENT_PID", None)
        yield Bench(
            home=config.parent.parent, config=config,
            remote_dir=write_remote_workdir(root / "remote"),
            python=sys.executable, sshd=server,
        )


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
