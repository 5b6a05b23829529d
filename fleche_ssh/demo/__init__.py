"""``fleche-ssh demo`` and the throwaway SSH server behind it; not used by the cache itself.

* :mod:`.run`: the demo's steps and the ``demo`` command;
* :mod:`.world`: its throwaway world (keys, server, remote workdir, the cache);
* :mod:`.keys`: the throwaway host and client keys;
* :mod:`.server`: :class:`~.server.LoopbackServer`, the demo-only SSH server on 127.0.0.1.
"""
