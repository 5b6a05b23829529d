"""``fleche-ssh demo`` and the throwaway SSH server behind it; not used by the cache itself.

* :mod:`.run`: the demo's steps and the ``demo`` command;
* :mod:`.world`: its throwaway world (keys, server, remote workdir, the cache);
* :mod:`.server`: :class:`~.server.LoopbackServer`, the demo-only SSH server on 127.0.0.1,
  built from :mod:`.policy` (who may log in), :mod:`.session` (a command wired to its
  channel), :mod:`.command` (running that command, with or without a shell),
  :mod:`.transport` (the exec reply's ordering) and :mod:`.keys`.
"""
