"""Runs at interpreter start (from ``fleche_ssh_bridge.pth``): watch for ``fleche.config``.

fleche 0.22 has no hook for cache types, and users should not have to
``import fleche_ssh`` for ``type = "paramiko"`` to work.  This module adds
an import finder that, the moment ``fleche.config`` finishes loading, hands
it to :func:`fleche_ssh.plugin.install`.  It imports nothing else: a
program that never imports fleche pays for two tiny modules and nothing
more (no Paramiko, no entry-point scan).
"""

import sys


class ConfigWatcher:
    """A meta-path finder that only ever answers for ``fleche.config``."""

    def find_spec(self, name, path=None, target=None):
        if name != "fleche.config":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                _wrap(spec.loader)
                return spec
        return None


def _wrap(loader):
    exec_module = loader.exec_module

    def exec_and_install(module):
        exec_module(module)
        remove_watcher()
        try:
            from fleche_ssh.plugin import install

            install(module)
        except Exception as e:  # never break `import fleche` over the plugin
            import warnings

            warnings.warn(f"fleche-ssh could not register its cache types: {e}", stacklevel=2)

    loader.exec_module = exec_and_install


def remove_watcher():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, ConfigWatcher)]


def activate():
    module = sys.modules.get("fleche.config")
    if module is not None:
        from fleche_ssh.plugin import install

        install(module)
    elif not any(isinstance(f, ConfigWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, ConfigWatcher())


activate()
