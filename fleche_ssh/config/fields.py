"""The dataclass fields of ``Target`` and ``ParamikoCache``, made from the option rows.

:class:`TargetFields` has one field per OpenSSH keyword fleche-ssh acts on;
:class:`CacheFields` is fleche's ``SshCache`` with one key per keyword and
fleche-ssh's own keys.  See :mod:`fleche_ssh.config.generate`: mypy reads
``fields.pyi``, the same fields written out.
"""

from fleche.remote import SshCache

from .generate import cache_fields, make, target_fields

TargetFields = make("TargetFields", target_fields())
CacheFields = make("CacheFields", cache_fields(), SshCache)
