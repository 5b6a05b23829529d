"""Real OpenSSH servers (and agents) for the test suite.

A plain helper module, no pytest imports: ``tests/conftest.py`` wraps it in
fixtures.  Everything here drives the real Debian binaries -- ``/usr/sbin/sshd``,
``ssh-keygen``, ``ssh-agent``, ``ssh-add``, ``oathtool`` and PAM ``pam_oath`` -- on
127.0.0.1 with ephemeral ports.  Every wait is bounded.

Notes that are easy to trip over:

* sshd must be started by absolute path (it re-executes itself per connection).
* sshd takes its PAM service name from its program name, so the TOTP server is
  started through a uniquely named symlink to ``/usr/sbin/sshd`` and gets its own
  ``/etc/pam.d/<name>`` file, removed again by :meth:`Sshd.stop`.
* sshd uses the *first* value it reads for most keywords, so ``extra_config`` lines
  are written *before* the defaults (lines from the first ``Match`` on go last).
* pam_oath refuses a TOTP code that was already used (or one older than the last
  used one): use :class:`TotpCodes` to hand out a fresh code per login.
* Sessions run with sshd's scrubbed environment (PATH=/usr/bin:/bin:..., no
  PYTHON* variables, no venv): start the remote server with an absolute
  interpreter path such as ``sys.executable``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PAM_OATH_CANDIDATES = (
    "/lib/x86_64-linux-gnu/security/pam_oath.so",
    "/usr/lib/x86_64-linux-gnu/security/pam_oath.so",
    "/lib/aarch64-linux-gnu/security/pam_oath.so",
    "/usr/lib/aarch64-linux-gnu/security/pam_oath.so",
    "/lib/security/pam_oath.so",
    "/usr/lib/security/pam_oath.so",
    "/usr/lib64/security/pam_oath.so",
)
PAM_DIR = Path("/etc/pam.d")
HOST = "127.0.0.1"
START_TIMEOUT = 10.0
TOTP_WINDOW = 5
TOTP_STEP = 30


class SshdError(RuntimeError):
    """sshd (or one of the OpenSSH helper tools) could not be started."""


# ---------------------------------------------------------------------------
# availability checks
# ---------------------------------------------------------------------------


def missing_sshd_tools() -> list[str]:
    """Debian packages whose binaries the plain sshd fixtures need but are missing."""
    missing = []
    if not os.access(SSHD, os.X_OK):
        missing.append("openssh-server")
    if not all(shutil.which(t) for t in ("ssh-keygen", "ssh", "ssh-agent", "ssh-add")):
        missing.append("openssh-client")
    return missing


def pam_oath_module() -> str | None:
    for candidate in PAM_OATH_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    return None


def missing_totp_tools() -> list[str]:
    """Debian packages the TOTP (pam_oath) server needs but are missing."""
    missing = missing_sshd_tools()
    if pam_oath_module() is None:
        missing.append("libpam-oath")
    if shutil.which("oathtool") is None:
        missing.append("oathtool")
    if not PAM_DIR.is_dir() or not os.access(PAM_DIR, os.W_OK):
        missing.append("writable /etc/pam.d (run as root)")
    return missing


# ---------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------


def _run(argv: Sequence[str], *, timeout: float = 30.0, env: dict | None = None) -> str:
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SshdError(f"{argv[0]} failed: {e}") from e
    if proc.returncode != 0:
        raise SshdError(
            f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _stop_process(proc: subprocess.Popen | None, *, timeout: float = 5.0) -> None:
    """terminate -> bounded wait -> kill; also signal the process group it led."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
    # Anything left in the process group (started with start_new_session=True).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n:])


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


# ---------------------------------------------------------------------------
# keys and known_hosts
# ---------------------------------------------------------------------------


def make_client_key(
    path: Path, *, passphrase: str = "", key_type: str = "ed25519", comment: str = "fleche-test"
) -> str:
    """Create an OpenSSH private key at *path* (+ ``.pub``); return the public key line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", comment, "-f", str(path)]
    if key_type == "rsa":
        argv[4:4] = ["-b", "3072"]
    _run(argv)
    path.chmod(0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def known_hosts_entry(host: str, port: int) -> str:
    """The host part of a known_hosts line as OpenSSH writes it."""
    return host if port == 22 else f"[{host}]:{port}"


def hash_known_host(entry: str, salt: bytes | None = None) -> str:
    """OpenSSH ``HashKnownHosts`` form: ``|1|base64(salt)|base64(HMAC-SHA1(salt, entry))``."""
    salt = os.urandom(20) if salt is None else salt
    digest = hmac.new(salt, entry.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


# ---------------------------------------------------------------------------
# TOTP
# ---------------------------------------------------------------------------


def totp_code(secret_hex: str, *, at: float | None = None) -> str:
    """The 6-digit TOTP code for *secret_hex* now (or at unix time *at*), via ``oathtool``."""
    argv = ["oathtool", "--totp", "--digits=6"]
    if at is not None:
        argv.append(f"--now=@{int(at)}")
    argv.append(secret_hex)
    return _run(argv, timeout=10).strip()


class TotpCodes:
    """Hands out TOTP codes pam_oath will accept, one fresh code per login.

    pam_oath rejects a replayed code and any code older than the last accepted
    one, so consecutive logins inside one 30 s step need codes from later steps
    (accepted within ``window`` steps).  When the lead would exceed the window,
    this waits (bounded, < one step) for real time to catch up.
    """

    def __init__(self, secret_hex: str, *, window: int = TOTP_WINDOW, step: int = TOTP_STEP):
        self.secret_hex = secret_hex
        self.window = window
        self.step = step
        self._last_step: int | None = None

    def __call__(self) -> str:
        now_step = int(time.time()) // self.step
        want = now_step if self._last_step is None else max(now_step, self._last_step + 1)
        if want - now_step >= self.window:
            # Too far ahead of the clock: sleep into the next step.
            time.sleep(self.step - time.time() % self.step + 0.1)
            now_step = int(time.time()) // self.step
            want = max(now_step, self._last_step + 1)
        self._last_step = want
        # Middle of the step, so rounding never lands in a neighbour.
        return totp_code(self.secret_hex, at=want * self.step + self.step // 2)

    def current(self) -> str:
        """The plain current code (may be a replay if a login already used it)."""
        return totp_code(self.secret_hex)

    def wrong(self) -> str:
        """A 6-digit code that is not valid anywhere in the window."""
        now_step = int(time.time()) // self.step
        valid = {
            totp_code(self.secret_hex, at=(now_step + d) * self.step + self.step // 2)
            for d in range(-self.window - 1, self.window + 2)
        }
        for n in range(1000000):
            candidate = f"{(123456 + n * 7919) % 1000000:06d}"
            if candidate not in valid:
                return candidate
        raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# sshd
# ---------------------------------------------------------------------------


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
            _stop_process(self.process, timeout=timeout)
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
        out = _run(argv, timeout=15)
        return [ln for ln in out.splitlines() if ln and not ln.startswith("#")]


def _write_pam_service(name: str, usersfile: Path, module: str) -> Path:
    path = PAM_DIR / name
    path.write_text(
        "# written by fleche-ssh tests/sshd.py; removed when the test sshd stops\n"
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
                _stop_process(proc)
                last_error = SshdError(f"{e}\n--- {log_path} (tail) ---\n{_tail(log_path)}")
                if "Address already in use" not in _tail(log_path):
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


# ---------------------------------------------------------------------------
# ssh-agent
# ---------------------------------------------------------------------------


@dataclass
class Agent:
    """A foreground ``ssh-agent -D`` on its own socket."""

    socket_path: Path
    process: subprocess.Popen
    workdir: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SSH_AUTH_SOCK": str(self.socket_path)}

    def add(self, keyfile: Path, *, passphrase: str = "") -> None:
        """``ssh-add keyfile`` into this agent (passphrase fed through SSH_ASKPASS)."""
        env = {**os.environ, **self.env}
        env.pop("DISPLAY", None)
        if passphrase:
            askpass = self.workdir / f"askpass-{uuid.uuid4().hex[:8]}"
            askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' {_sh_quote(passphrase)}\n")
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        _run(["ssh-add", str(keyfile)], env=env, timeout=15)

    def list_keys(self) -> list[str]:
        proc = subprocess.run(
            ["ssh-add", "-L"],
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return [ln for ln in proc.stdout.splitlines() if ln.strip() and " " in ln]

    def stop(self) -> None:
        _stop_process(self.process)
        self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def start_agent(workdir: Path, *, timeout: float = START_TIMEOUT) -> Agent:
    """Start ``ssh-agent -D -a SOCKET`` in the foreground; wait (bounded) for its socket."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "agent.sock"
    if len(str(sock)) > 100:  # AF_UNIX path limit (108) with some margin
        import tempfile

        sock = Path(tempfile.mkdtemp(prefix="flagt-")) / "agent.sock"
    sock.unlink(missing_ok=True)
    log_path = workdir / "ssh-agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(sock)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    agent = Agent(socket_path=sock, process=proc, workdir=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SshdError(f"ssh-agent exited with {proc.returncode}: {_tail(log_path)}")
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(1.0)
                    s.connect(str(sock))
                return agent
            except OSError:
                pass
        time.sleep(0.02)
    agent.stop()
    raise SshdError(f"ssh-agent socket {sock} did not appear in time: {_tail(log_path)}")


# ---------------------------------------------------------------------------
# the remote side's fleche directory
# ---------------------------------------------------------------------------


def write_remote_workdir(path: Path) -> Path:
    """A directory with a ``fleche.toml`` whose caches live inside it, on disk.

    * ``[default] cache = "remote"`` -- cloudpickle files under ``values/`` and
      ``calls/`` (survives across processes, so every ``--serve`` sees it);
    * ``readonly`` -- the same storage wrapped ``read_only = true``.

    ``root = true`` stops fleche's config walk here, so a stray ``fleche.toml``
    further up (``/tmp``, ``/``) or ``~/.config/fleche/cache.toml`` cannot leak in.
    """
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    (path / "values").mkdir(exist_ok=True)
    (path / "calls").mkdir(exist_ok=True)
    storage = (
        'values.type = "cloudpickle"\n'
        f"values.root = {json.dumps(str(path / 'values'))}\n"
        'calls.type = "cloudpickle"\n'
        f"calls.root = {json.dumps(str(path / 'calls'))}\n"
    )
    (path / "fleche.toml").write_text(
        "[default]\n"
        'cache = "remote"\n'
        "root = true\n"
        "\n[remote]\n" + storage + "\n[readonly]\n" + storage + "read_only = true\n"
    )
    return path
