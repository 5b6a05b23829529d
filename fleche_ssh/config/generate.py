"""The dataclass fields the option rows imply, for ``Target`` and ``ParamikoCache``.

Each row of :data:`~fleche_ssh.config.options.OPTIONS` is a field of
:class:`~fleche_ssh.config.target.Target` (what it resolved to) and a key
of :class:`~fleche_ssh.ParamikoCache` (what the user set, ``None`` when
nothing); each row of :data:`~fleche_ssh.config.options.OWN_KEYS` is a
key too.  :mod:`fleche_ssh.config.fields` makes the two base classes from
:func:`target_fields` and :func:`cache_fields` when it is imported, so a
new row is a new field without an edit anywhere else.

mypy cannot run that code, so it reads ``fields.pyi`` instead: the same
fields written out by :func:`stub` (``python -m fleche_ssh.config.generate``
rewrites it).  A test checks that the file is what :func:`stub` gives, so
the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from .options import OPTIONS, OWN_KEYS
from .tokens import Computed, Written

STUB = Path(__file__).with_name("fields.pyi")


@dataclass(frozen=True)
class Spec:
    """One generated dataclass field."""

    name: str
    type: str
    default: Any
    kw_only: bool = False
    repr: bool = True
    doc: str = ""


def target_fields() -> list[Spec]:
    """One keyword-only field per option; one whose default needs the host has none."""
    return [Spec(o.target_field, o.target_type,
                 MISSING if isinstance(o.default, (Computed, Written)) else o.default,
                 kw_only=True, doc=o.doc) for o in OPTIONS]


def cache_fields() -> list[Spec]:
    """One key per option (``None``: not set), then fleche-ssh's own keys."""
    return [*(Spec(o.key, o.key_type, None, doc=o.doc) for o in OPTIONS),
            *(Spec(k.key, k.type, k.default, repr=k.repr, doc=k.doc) for k in OWN_KEYS)]


#: The docstring of each generated class.
DOCS = {
    "TargetFields": "The fields of a Target, one per OpenSSH keyword fleche-ssh acts on.",
    "CacheFields": "The keys beyond the stock cache's: one per OpenSSH keyword, then our own.",
}


def make(name: str, specs: list[Spec], *bases: type) -> type:
    """A frozen dataclass with the fields of *specs*, after those of *bases*."""
    return dataclasses.make_dataclass(
        name,
        [(s.name, s.type, dataclasses.field(default=s.default, kw_only=s.kw_only, repr=s.repr))
         for s in specs],
        bases=bases, frozen=True,
        namespace={"__module__": "fleche_ssh.config.fields", "__doc__": DOCS[name]},
    )


def _field(spec: Spec) -> list[str]:
    arguments = [*([] if spec.default is MISSING else [f"default={spec.default!r}"]),
                 *(["kw_only=True"] if spec.kw_only else []),
                 *([] if spec.repr else ["repr=False"])]
    if arguments == [f"default={spec.default!r}"]:
        value = f" = {spec.default!r}"
    else:
        value = f" = field({', '.join(arguments)})" if arguments else ""
    lines = [f"    {spec.name}: {spec.type}{value}"]
    if len(lines[0]) > 100:
        lines = [f"    {spec.name}: {spec.type} = field(", f"        {', '.join(arguments)})"]
    doc = textwrap.wrap(spec.doc, 90)
    if doc:
        doc[0] = '"""' + doc[0]
        doc[-1] += '"""'
        lines += [f"    {line}" for line in doc]
    return lines


def stub() -> str:
    """The text of ``fields.pyi``: the generated classes as mypy should see them."""
    lines = [
        "# Generated from the rows of fleche_ssh/config/options.py by",
        "# `python -m fleche_ssh.config.generate`; tests/test_options.py checks it is current.",
        '"""The classes fields.py makes from the option rows at import time, written out."""',
        "",
        "from collections.abc import Sequence",
        "from dataclasses import dataclass, field",
        "from typing import Any",
        "",
        "from fleche.remote import SshCache",
        "",
        "from .algorithms import Algorithms",
        "from .target import Target",
    ]
    for name, base, specs in (("TargetFields", "", target_fields()),
                              ("CacheFields", "(SshCache)", cache_fields())):
        lines += ["", "@dataclass(frozen=True)", f"class {name}{base}:",
                  f'    """{DOCS[name]}"""', ""]
        for spec in specs:
            lines += _field(spec)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    STUB.write_text(stub(), encoding="utf-8")
    sys.stdout.write(f"wrote {STUB}\n")
