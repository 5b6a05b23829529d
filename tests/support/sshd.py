"""Real ``sshd -D`` servers on 127.0.0.1, each with its own host keys, config and log.

Notes that are easy to trip over:

* sshd must be started by absolute path (it re-executes itself per connection).
* sshd takes its PAM service name from its program name, so the TOTP server is
  started through a uniquely named symlink to ``/usr/sbin/sshd`` and gets its own
  ``/etc/pam.d/<name>`` file, removed again by :meth:`Sshd.stop`.
* sshd uses the *first* value it reads for most keywords, so ``extra_config`` lines
  are written *before* the defaults (lines from the first ``Match`` on go last).
* Sessions run with sshd's scrubbed environment (PATH=/usr/bin:/bin:..., no
  PYTHON* variables, no venv): start the remote server with an absolute
  interpreter path such as ``sys.executable``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .keys import hash_known_host, known_hosts_entry, make_client_key
from .processes import HOST, START_TIMEOUT, SshdError, free_port, run_tool, stop_process, tail
from .tools import PAM_DIR, SSHD, missing_sshd_tools, missing_totp_tools, pam_oath_module
from .totp import TOTP_WINDOW


def _wait_for_banner(port: int, proc: subprocess.Popen, deadline: float) -> str:
    """Wait until 127.0.0.1:port accepts TCP and sends an ``SSH-2.0`` banner."""
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SshdError(f"sshd exited with {proc.returncode} before accepting connections")
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as s:
                s.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
                data = b""
                while b"\n" not in data and len(data) < 512:
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"SSH-2.0"):
                    return data.split(b"\r\n")[0].decode("ascii", "replace")
                last_error = SshdError(f"unexpected banner {data!r}")
        except OSError as e:
            last_error = e
        time.sleep(0.05)
    raise SshdError(f"sshd on port {port} did not send its banner in time ({last_error})")


@dataclass
class Sshd:
    """A running ``sshd -D`` on 127.0.0.1.

    ``host_public_keys`` maps the key type (``ssh-ed25519``, ``ecdsa-sha2-nistp256``)
    to its ``"type base64"`` line.  ``pam_service`` is the ``/etc/pam.d`` file
    this server owns (TOTP server only).
    """

    port: int
    workdir: Path
    log_path: Path
    config_path: Path
    host_public_keys: dict[str, str]
    process: subprocess.Popen
    host: str = HOST
    banner: str = ""
    totp_secret_hex: str | None = None
    pam_service: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    # -- lifecycle ---------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate sshd (bounded wait, then kill) and remove its PAM service file."""
        try:
            stop_process(self.process, timeout=timeout)
        finally:
            if self.pam_service is not None:
                self.pam_service.unlink(missing_ok=True)
            self._stopped = True

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    # -- introspection -----------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def known_hosts_host(self) -> str:
        return known_hosts_entry(self.host, self.port)

    def known_hosts_lines(
        self, hashed: bool = True, key_types: Iterable[str] | None = None
    ) -> list[str]:
        """known_hosts lines for this server's host keys (``[127.0.0.1]:PORT``).

        Built directly from the host key files (same format ``ssh-keyscan [-H]``
        prints); hashed lines use a fresh random salt each, as OpenSSH does.
        """
        entry = self.known_hosts_host
        lines = []
        for key_type, pub in self.host_public_keys.items():
            if key_types is not None and key_type not in key_types:
                continue
            name = hash_known_host(entry) if hashed else entry
            lines.append(f"{name} {pub}")
        return lines

    def keyscan_lines(self, hashed: bool = True) -> list[str]:
        """The same, but from the real ``ssh-keyscan`` (slower; cross-check only)."""
        argv = ["ssh-keyscan", "-T", "5", "-p", str(self.port)]
        if hashed:
            argv.append("-H")
        argv.append(self.host)
        out = run_tool(argv, timeout=15)
        return [ln for ln in out.splitlines() if ln and not ln.startswith("#")]


def _write_pam_service(name: str, usersfile: Path, module: str) -> Path:
    path = PAM_DIR / name
    path.write_text(
        "# written by fleche-ssh tests/support/sshd.py; removed when the test sshd stops\n"
        f"auth required {module} usersfile={usersfile} window={TOTP_WINDOW} digits=6\n"
        "account required pam_permit.so\n"
        "session required pam_permit.so\n"
    )
    return path


def _config_lines(
    *,
    port: int,
    workdir: Path,
    host_keys: list[Path],
    authorized_keys_file: Path,
    pid_file: Path,
    auth_methods: str,
    totp: bool,
    allow_tcp_forwarding: bool,
    trusted_user_ca_keys: Path | None,
    extra_config: Sequence[str],
) -> list[str]:
    extra = list(extra_config)
    match_at = next(
        (i for i, ln in enumerate(extra) if ln.strip().lower().startswith("match ")), len(extra)
    )
    head, tail = extra[:match_at], extra[match_at:]
    lines = ["# extra_config (first value wins in sshd_config)", *head, "# defaults"]
    lines += [
        f"ListenAddress {HOST}",
        f"Port {port}",
        *(f"HostKey {k}" for k in host_keys),
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys_file}",
        "PermitRootLogin yes",
        "StrictModes no",
        "PasswordAuthentication no",
        "PermitEmptyPasswords no",
        "PubkeyAuthentication yes",
        "HostbasedAuthentication no",
        "GSSAPIAuthentication no",
        "LogLevel VERBOSE",
        "MaxSessions 50",
        "MaxStartups 100:30:200",
        "MaxAuthTries 20",
        "LoginGraceTime 30",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "PermitUserEnvironment no",
        f"AllowTcpForwarding {'yes' if allow_tcp_forwarding else 'no'}",
        "Subsystem sftp internal-sftp",
    ]
    if trusted_user_ca_keys is not None:
        lines.append(f"TrustedUserCAKeys {Path(trusted_user_ca_keys).resolve()}")
    if totp:
        lines += [
            "UsePAM yes",
            "KbdInteractiveAuthentication yes",
            "AuthenticationMethods publickey,keyboard-interactive",
        ]
    else:
        lines += ["UsePAM no", "KbdInteractiveAuthentication no"]
        if auth_methods:
            lines.append(f"AuthenticationMethods {auth_methods}")
    # No AcceptEnv line: the client's environment never reaches the session.
    lines += tail
    return lines


def _supports_option(config_path: Path, option: str) -> bool:
    """Whether this sshd accepts ``-o option`` on top of *config_path* (``sshd -t``)."""
    try:
        proc = subprocess.run(
            [SSHD, "-t", "-f", str(config_path), "-o", option],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def start_sshd(
    workdir: Path,
    *,
    authorized_keys: list[str],
    auth_methods: str = "publickey",
    totp_secret_hex: str | None = None,
    extra_config: Sequence[str] = (),
    allow_tcp_forwarding: bool = False,
    trusted_user_ca_keys: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> Sshd:
    """Start a real ``sshd -D`` on 127.0.0.1:<ephemeral> with its own host keys.

    With *totp_secret_hex* the server demands ``publickey,keyboard-interactive``
    where the second factor is a real pam_oath TOTP check (user ``root``).
    """
    if missing := (missing_totp_tools() if totp_secret_hex else missing_sshd_tools()):
        raise SshdError(f"missing: {', '.join(missing)}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir

    host_keys = []
    host_public_keys: dict[str, str] = {}
    for kt in ("ed25519", "ecdsa"):
        key = workdir / f"ssh_host_{kt}_key"
        if not key.exists():
            make_client_key(key, key_type=kt, comment=f"test-sshd-{kt}")
        pub = key.with_name(key.name + ".pub").read_text().split()
        host_public_keys[pub[0]] = f"{pub[0]} {pub[1]}"
        host_keys.append(key)

    authorized_keys_file = workdir / "authorized_keys"
    authorized_keys_file.write_text("".join(k.strip() + "\n" for k in authorized_keys))
    authorized_keys_file.chmod(0o600)
    pid_file = workdir / "sshd.pid"

    program = SSHD
    pam_service: Path | None = None
    if totp_secret_hex:
        name = f"fleche-test-sshd-{uuid.uuid4().hex[:12]}"
        link = workdir / name
        link.unlink(missing_ok=True)
        link.symlink_to(SSHD)
        program = str(link)
        usersfile = workdir / "users.oath"
        usersfile.write_text(f"HOTP/T30/6 root - {totp_secret_hex}\n")
        usersfile.chmod(0o600)
        module = pam_oath_module()
        assert module is not None
        pam_service = _write_pam_service(name, usersfile, module)

    last_error: Exception | None = None
    try:
        for attempt in range(3):  # the free port may be taken by a racing process
            port = free_port()
            config_path = workdir / "sshd_config"
            lines = _config_lines(
                port=port,
                workdir=workdir,
                host_keys=host_keys,
                authorized_keys_file=authorized_keys_file,
                pid_file=pid_file,
                auth_methods=auth_methods,
                totp=bool(totp_secret_hex),
                allow_tcp_forwarding=allow_tcp_forwarding,
                trusted_user_ca_keys=trusted_user_ca_keys,
                extra_config=extra_config,
            )
            config_path.write_text("\n".join(lines) + "\n")
            # OpenSSH >= 9.8 penalises sources after failed/aborted logins, which
            # would lock 127.0.0.1 out after a few negative tests.
            if _supports_option(config_path, "PerSourcePenalties=no"):
                lines.insert(0, "PerSourcePenalties no")
                config_path.write_text("\n".join(lines) + "\n")
            log_path = workdir / f"sshd-{attempt}.log" if attempt else workdir / "sshd.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [program, "-D", "-e", "-f", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=workdir,
                )
            server = Sshd(
                port=port,
                workdir=workdir,
                log_path=log_path,
                config_path=config_path,
                host_public_keys=host_public_keys,
                process=proc,
                totp_secret_hex=totp_secret_hex,
                pam_service=pam_service,
            )
            try:
                server.banner = _wait_for_banner(port, proc, time.monotonic() + timeout)
                return server
            except SshdError as e:
                stop_process(proc)
                last_error = SshdError(f"{e}\n--- {log_path} (tail) ---\n{tail(log_path)}")
                if "Address already in use" not in tail(log_path):
                    break
        raise last_error or SshdError("sshd did not start")
    except BaseException:
        if pam_service is not None:
            pam_service.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def pinned_sshd(workdir: Path, known_hosts: Path, **options) -> Iterator[Sshd]:
    """:func:`start_sshd` with *options*, its host keys appended to *known_hosts*; stopped after."""
    server = start_sshd(workdir, **options)
    try:
        with open(known_hosts, "a") as f:
            f.writelines(line + "\n" for line in server.known_hosts_lines())
        yield server
    finally:
        server.stop()
