"""The tables of the configuration reference, rendered from the option rows.

Each directive renders rows of :mod:`fleche_ssh.config.options`, so the
reference lists exactly the keys and keywords the installed code knows,
with the defaults and checks it applies:

* ``.. fleche-ssh-keys:: stock`` and ``.. fleche-ssh-keys:: own``: the keys
  of the stock cache (:data:`~fleche_ssh.config.options.STOCK_KEYS`) and of
  fleche-ssh (:data:`~fleche_ssh.config.options.OWN_KEYS`), with the
  defaults of ``ParamikoCache``'s fields;
* ``.. fleche-ssh-options::``: the OpenSSH keywords fleche-ssh acts on
  (:data:`~fleche_ssh.config.options.OPTIONS`): key, keyword, default, meaning;
* ``.. fleche-ssh-flags::``: the ``ssh`` command-line flags that set them;
* ``.. fleche-ssh-keywords::``: what happens to each keyword fleche-ssh knows
  of, in a config file and in ``ssh_options`` (``OPTIONS``,
  :data:`~fleche_ssh.config.options.NOT_NEEDED` and
  :data:`~fleche_ssh.config.options.UNHONOURED`);
* ``.. fleche-ssh-not-needed::``: the keywords accepted and ignored
  (:data:`~fleche_ssh.config.options.NOT_NEEDED_KEYWORDS`), as a sentence.

The README's key table cannot be generated; ``tests/test_options.py``
checks it against the rows.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def _list_table(widths: str, header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines += [f"   * - {row[0]}", *(f"     - {cell}" for cell in row[1:])]
    return lines


def _toml(value: Any) -> str:
    """A default as fleche.toml would write it."""
    if value is MISSING:
        return "(required)"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return "``[]``" if not value else ", ".join(_toml(v) for v in value)
    if isinstance(value, str):
        return f'``"{value}"``'
    return f"``{value:g}``" if isinstance(value, float) else f"``{value}``"


def _ssh(option: Any) -> str:
    """An option's default as ssh_config would write it, or as its row says it."""
    from fleche_ssh.config.tokens import Computed, Written

    if option.default_doc:
        return option.default_doc
    value = option.default.value if isinstance(option.default, Written) else option.default
    if isinstance(value, Computed):
        logger.warning("fleche_ssh.config.options: %s has a computed default and no "
                       "default_doc to show for it", option.keyword)
        return "?"
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "``yes``" if value else "``no``"
    if isinstance(value, tuple):
        return ", ".join(f"``{v}``" for v in value)
    return f"``{value:g}``" if isinstance(value, float) else f"``{value}``"


class _RowsDirective(SphinxDirective):
    def _parse(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="fleche_ssh.config.options"), 0,
                                container)
        return container.children


class KeysTable(_RowsDirective):
    """The keys of the stock cache (``stock``) or of fleche-ssh itself (``own``)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from fleche_ssh.cache import ParamikoCache
        from fleche_ssh.config.options import OWN_KEYS, STOCK_KEYS

        rows = {"stock": STOCK_KEYS, "own": OWN_KEYS}.get(self.arguments[0])
        if rows is None:
            raise self.error("fleche-ssh-keys takes 'stock' or 'own'")
        defaults = {f.name: f.default for f in fields(ParamikoCache)}
        return self._parse(_list_table(
            "20 20 60", ["key", "default", "meaning"],
            [[f"``{k.key}``", _toml(defaults[k.key]), k.doc] for k in rows]))


class OptionsTable(_RowsDirective):
    """A list-table of every OpenSSH keyword fleche-ssh acts on."""

    def run(self) -> list[nodes.Node]:
        from fleche_ssh.config.options import OPTIONS

        rows = []
        for option in OPTIONS:
            meaning = option.doc
            if option.values.collects:
                meaning += " A list; the values of every source are combined."
            elif option.values.is_list:
                meaning += " A list, or several names separated by spaces."
            rows.append([f"``{option.key}``", f"``{option.keyword}``", _ssh(option), meaning])
        return self._parse(_list_table("20 20 20 40",
                                       ["key", "OpenSSH keyword", "default", "meaning"], rows))


class FlagsList(_RowsDirective):
    """The ``ssh`` command-line flags that set a keyword, as a sentence."""

    def run(self) -> list[nodes.Node]:
        from fleche_ssh.config.options import FLAGS

        said = [f"``{row.flag}`` (``{row.keyword}{' ' + row.flag_sets if row.flag_sets else ''}``)"
                for row in FLAGS.values()]
        return self._parse([", ".join(said)])


class KeywordTable(_RowsDirective):
    """What fleche-ssh does with each OpenSSH keyword, in a config file and in ssh_options."""

    def run(self) -> list[nodes.Node]:
        import logging as std_logging

        from fleche_ssh.config.options import NOT_NEEDED_KEYWORDS, OPTIONS, UNHONOURED

        rows = [[f"``{o.keyword}``", "honoured", "honoured"] for o in OPTIONS]
        rows += [[f"``{k}``", "ignored, logged at debug level", "accepted, ignored"]
                 for k in NOT_NEEDED_KEYWORDS]
        for row in UNHONOURED:
            level = std_logging.getLevelName(row.level).lower()
            same = ", ".join(f"``{v}``" for v in sorted(row.same))
            logged = f"ignored, logged at {level} level" + (
                f" (at debug level for {same})" if same else "")
            rows.append([f"``{row.keyword}``", f"{logged}: {row.effect}", "refused"])
        rows.append(["any other", "ignored, logged at debug level", "refused"])
        return self._parse(_list_table(
            "25 50 25", ["OpenSSH keyword", "in an ssh config file", "in ``ssh_options``"],
            rows))


class NotNeededList(SphinxDirective):
    """The keywords accepted and ignored, in OpenSSH's spelling, as a sentence."""

    def run(self) -> list[nodes.Node]:
        from fleche_ssh.config.options import NOT_NEEDED_KEYWORDS

        paragraph = nodes.paragraph()
        for i, word in enumerate(sorted(NOT_NEEDED_KEYWORDS, key=str.lower)):
            if i:
                paragraph += nodes.Text(", ")
            paragraph += nodes.literal(word, word)
        return [paragraph]


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("fleche-ssh-keys", KeysTable)
    app.add_directive("fleche-ssh-options", OptionsTable)
    app.add_directive("fleche-ssh-flags", FlagsList)
    app.add_directive("fleche-ssh-not-needed", NotNeededList)
    app.add_directive("fleche-ssh-keywords", KeywordTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
