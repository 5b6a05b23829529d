"""Helpers for the test suite and the benchmark: real OpenSSH servers, keys, codes, caches.

Plain modules, no pytest imports: ``tests/conftest.py`` wraps them in
fixtures, and ``benchmarks/harness.py`` builds its world from them.
Everything drives the real Debian binaries (``/usr/sbin/sshd``,
``ssh-keygen``, ``ssh-agent``, ``ssh-add``, ``oathtool``, PAM ``pam_oath``) on
127.0.0.1 with ephemeral ports, and every wait is bounded.

Where things live, one job per module:

* :mod:`.tools`: which of those programs are installed (``missing_sshd_tools``,
  ``missing_totp_tools``), named as the Debian packages ``.ci/run`` installs;
* :mod:`.processes`: running a tool, stopping a process, a free port, a log's
  tail, and :class:`SshdError` for a server or tool that would not start;
* :mod:`.keys`: client keys from ``ssh-keygen``, known_hosts lines (hashed too);
* :mod:`.totp`: one-time codes pam_oath accepts (:class:`TotpCodes`: one fresh
  code per login, since pam_oath refuses replays);
* :mod:`.sshd`: the server itself (:func:`start_sshd`, :class:`Sshd`,
  :func:`pinned_sshd`), with its config lines and PAM service;
* :mod:`.agent`: a real ssh-agent (:func:`start_agent`, :class:`Agent`);
* :mod:`.remote`: the remote side's workdir, whose ``fleche.toml`` keeps its
  caches on disk (:func:`write_remote_workdir`);
* :mod:`.caches`: :class:`CacheFactory`, the ``make`` fixture's caches on
  ``testhost`` (imported on its own: it imports fleche_ssh);
* :mod:`.relay`: :class:`DelayRelay`, a TCP relay in front of sshd, for the
  benchmark's slow links and for a network that drops and comes back
  (imported on its own).

The helpers of the first seven are importable from here too
(``import support; support.start_sshd(...)``), for test files that use
several of them.
"""

from .agent import Agent, start_agent
from .keys import hash_known_host, known_hosts_entry, make_client_key
from .processes import HOST, SshdError, free_port
from .remote import write_remote_workdir
from .sshd import Sshd, pinned_sshd, start_sshd
from .tools import missing_sshd_tools, missing_totp_tools, pam_oath_module
from .totp import TotpCodes, totp_code

__all__ = [
    "HOST", "Agent", "Sshd", "SshdError", "TotpCodes", "free_port", "hash_known_host",
    "known_hosts_entry", "make_client_key", "missing_sshd_tools", "missing_totp_tools",
    "pam_oath_module", "pinned_sshd", "start_agent", "start_sshd", "totp_code",
    "write_remote_workdir",
]
