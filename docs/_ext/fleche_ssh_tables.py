"""Tables of the configuration reference, taken from the code they describe.

``.. fleche-ssh-options::`` renders :data:`fleche_ssh.config.options.OPTIONS` (key,
OpenSSH keyword, meaning), so the reference lists exactly the keywords the
installed code honours.  ``.. fleche-ssh-keywords::`` renders what happens
to each keyword fleche-ssh knows of, in a config file and in ``ssh_options``
(:data:`~fleche_ssh.config.options.OPTIONS`, :data:`~fleche_ssh.config.options.NOT_NEEDED`
and :data:`~fleche_ssh.config.options.UNHONOURED`).  ``.. fleche-ssh-not-needed::``
renders the keywords given in its content and warns (an error under
``sphinx -W``) when they are not exactly :data:`fleche_ssh.config.options.NOT_NEEDED`:
the content only supplies OpenSSH's spelling of each keyword.

The hand-written key tables (``README.md`` and the ``* - ``key`` `` rows of
``configuration.rst``) are checked the same way when the build starts:
every key ``ParamikoCache`` accepts must be listed, and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


class OptionsTable(SphinxDirective):
    """A list-table of every OpenSSH keyword fleche-ssh acts on."""

    def run(self) -> list[nodes.Node]:
        from fleche_ssh.config.options import OPTIONS

        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 25 25 50",
            "",
            "   * - key",
            "     - OpenSSH keyword",
            "     - meaning",
        ]
        for option in OPTIONS:
            meaning = option.doc
            if option.values.collects:
                meaning += " A list; the values of every source are combined."
            elif option.values.is_list:
                meaning += " A list, or several names separated by spaces."
            lines += [f"   * - ``{option.key}``", f"     - ``{option.keyword}``",
                      f"     - {meaning}"]
        return self._parse(lines)

    def _parse(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="fleche_ssh.config.options"), 0, container)
        return container.children


class KeywordTable(OptionsTable):
    """What fleche-ssh does with each OpenSSH keyword, in a config file and in ssh_options."""

    def run(self) -> list[nodes.Node]:
        import logging as std_logging

        from fleche_ssh.config.options import NOT_NEEDED_KEYWORDS, OPTIONS, UNHONOURED

        rows = [(o.keyword, "honoured", "honoured") for o in OPTIONS]
        rows += [(k, "ignored, logged at debug level", "accepted, ignored")
                 for k in NOT_NEEDED_KEYWORDS]
        for row in UNHONOURED:
            level = std_logging.getLevelName(row.level).lower()
            same = ", ".join(f"``{v}``" for v in sorted(row.same))
            logged = f"ignored, logged at {level} level" + (
                f" (at debug level for {same})" if same else "")
            rows.append((row.keyword, f"{logged}: {row.effect}", "refused"))
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 25 50 25",
            "",
            "   * - OpenSSH keyword",
            "     - in an ssh config file",
            "     - in ``ssh_options``",
        ]
        for keyword, in_file, in_options in rows:
            lines += [f"   * - ``{keyword}``", f"     - {in_file}", f"     - {in_options}"]
        lines += ["   * - any other", "     - ignored, logged at debug level", "     - refused"]
        return self._parse(lines)


class NotNeededList(SphinxDirective):
    """The keywords accepted and ignored, checked against the code."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        from fleche_ssh.config.options import NOT_NEEDED

        words = [w.strip() for w in " ".join(self.content).split(",") if w.strip()]
        given = {w.lower() for w in words}
        missing = sorted(NOT_NEEDED - given)
        extra = sorted(given - NOT_NEEDED)
        if missing or extra:
            logger.warning(
                "fleche-ssh-not-needed disagrees with fleche_ssh.config.options.NOT_NEEDED: "
                "missing %s, not in the code %s", missing or "none", extra or "none",
                location=self.get_location(),
            )
        paragraph = nodes.paragraph()
        for i, word in enumerate(sorted(words, key=str.lower)):
            if i:
                paragraph += nodes.Text(", ")
            paragraph += nodes.literal(word, word)
        return [paragraph]


def _cache_keys() -> tuple[set[str], set[str]]:
    """(every key ParamikoCache accepts, the keys of fleche's own SshCache)."""
    from fleche.remote import SshCache

    from fleche_ssh.cache import ParamikoCache

    def keys(cls: type) -> set[str]:
        return {f.name for f in fields(cls) if f.init}

    return keys(ParamikoCache), keys(SshCache)


def _compare(where: str, documented: set[str], expected: set[str]) -> None:
    missing, extra = sorted(expected - documented), sorted(documented - expected)
    if missing or extra:
        logger.warning("%s: key table disagrees with ParamikoCache: missing %s, unknown %s",
                       where, missing or "none", extra or "none")


def check_key_tables(app: Sphinx) -> None:
    from fleche_ssh.config.options import BY_KEY

    every, stock = _cache_keys()
    docs = Path(app.srcdir)
    readme = (docs.parent / "README.md").read_text(encoding="utf-8")
    # The README lists the keys beyond the stock cache's in one table.
    _compare("README.md", set(re.findall(r"^\| `(\w+)` \|", readme, re.MULTILINE)),
             every - stock)
    config = (docs / "configuration.rst").read_text(encoding="utf-8")
    # configuration.rst: the stock and own keys by hand, the OpenSSH ones generated.
    _compare("configuration.rst",
             set(re.findall(r"^   \* - ``(\w+)``", config, re.MULTILINE)) | set(BY_KEY), every)


def setup(app: Sphinx) -> dict[str, bool]:
    app.connect("builder-inited", check_key_tables)
    app.add_directive("fleche-ssh-options", OptionsTable)
    app.add_directive("fleche-ssh-not-needed", NotNeededList)
    app.add_directive("fleche-ssh-keywords", KeywordTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
