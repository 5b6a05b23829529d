"""Tables of the configuration reference, taken from the code they describe.

``.. fleche-ssh-options::`` renders :data:`fleche_ssh.options.OPTIONS` (key,
OpenSSH keyword, meaning), so the reference lists exactly the keywords the
installed code honours.  ``.. fleche-ssh-not-needed::`` renders the keywords
given in its content and warns (an error under ``sphinx -W``) when they are
not exactly :data:`fleche_ssh.options.NOT_NEEDED`: the content only supplies
OpenSSH's spelling of each keyword.
"""

from __future__ import annotations

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


class OptionsTable(SphinxDirective):
    """A list-table of every OpenSSH keyword fleche-ssh acts on."""

    def run(self) -> list[nodes.Node]:
        from fleche_ssh.options import OPTIONS

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
            if option.many:
                meaning += " A list; the values of every source are combined."
            elif option.split:
                meaning += " A list, or several names separated by spaces."
            lines += [f"   * - ``{option.key}``", f"     - ``{option.keyword}``",
                      f"     - {meaning}"]
        return self._parse(lines)

    def _parse(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="fleche_ssh.options"), 0, container)
        return container.children


class NotNeededList(SphinxDirective):
    """The keywords accepted and ignored, checked against the code."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        from fleche_ssh.options import NOT_NEEDED

        words = [w.strip() for w in " ".join(self.content).split(",") if w.strip()]
        given = {w.lower() for w in words}
        missing = sorted(NOT_NEEDED - given)
        extra = sorted(given - NOT_NEEDED)
        if missing or extra:
            logger.warning(
                "fleche-ssh-not-needed disagrees with fleche_ssh.options.NOT_NEEDED: "
                "missing %s, not in the code %s", missing or "none", extra or "none",
                location=self.get_location(),
            )
        paragraph = nodes.paragraph()
        for i, word in enumerate(sorted(words, key=str.lower)):
            if i:
                paragraph += nodes.Text(", ")
            paragraph += nodes.literal(word, word)
        return [paragraph]


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("fleche-ssh-options", OptionsTable)
    app.add_directive("fleche-ssh-not-needed", NotNeededList)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
