"""The option table: one row per key and keyword, and what is made from the rows.

``Target`` and ``ParamikoCache`` get their fields from the rows when
:mod:`fleche_ssh.config.fields` is imported; mypy reads ``fields.pyi``,
the same fields written out, so these tests hold the stub to the rows and
to the classes Python actually builds.  The README's key table is written
by hand, so it is held to the rows here too.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

from fleche.remote import SshCache

from fleche_ssh import ParamikoCache
from fleche_ssh.config import fields, generate, options
from fleche_ssh.config.target import Target
from fleche_ssh.config.tokens import Computed

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_stub_mypy_reads_is_the_one_the_rows_give():
    assert generate.STUB.read_text(encoding="utf-8") == generate.stub(), (
        "fields.pyi is out of date: run python -m fleche_ssh.config.generate")


def _stub_fields() -> dict[str, list[tuple[str, str, str | None]]]:
    """Per class of fields.pyi: (name, annotation, default or None) of each field."""
    tree = ast.parse(generate.STUB.read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            found[node.name] = [
                (item.target.id, ast.unparse(item.annotation),
                 None if item.value is None else ast.unparse(item.value))
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)]
    return found


def _runtime_fields(cls: type) -> list[tuple[str, str, str | None]]:
    """The same for a class Python built, its own fields only."""
    own = [f for f in dataclasses.fields(cls) if f.name in inspect.get_annotations(cls)]
    out = []
    for f in own:
        arguments = [*([] if f.default is dataclasses.MISSING else [f"default={f.default!r}"]),
                     *(["kw_only=True"] if f.kw_only else []),
                     *([] if f.repr else ["repr=False"])]
        value = (repr(f.default) if arguments == [f"default={f.default!r}"]
                 else f"field({', '.join(arguments)})")
        out.append((f.name, str(f.type), value))
    return out


def test_the_stub_says_what_python_builds():
    stub = _stub_fields()
    for cls in (fields.TargetFields, fields.CacheFields):
        # ast.unparse normalises quotes and spacing the same way on both sides.
        built = [(n, t, v and ast.unparse(ast.parse(v, mode="eval")))
                 for n, t, v in _runtime_fields(cls)]
        assert stub[cls.__name__] == built


def test_every_cache_key_is_a_row_and_every_row_a_key():
    stock = [f.name for f in dataclasses.fields(SshCache) if f.init]
    keys = [f.name for f in dataclasses.fields(ParamikoCache) if f.init]
    assert keys == [*stock, *(o.key for o in options.OPTIONS),
                    *(k.key for k in options.OWN_KEYS)]
    assert sorted(stock) == sorted(k.key for k in options.STOCK_KEYS)
    assert sorted(keys) == sorted(options.KEYS)


def test_every_target_field_is_a_row():
    names = [f.name for f in dataclasses.fields(Target)]
    assert names == [*(o.target_field for o in options.OPTIONS), "alias", "origins"]


def test_each_keyword_and_each_key_has_one_row():
    keywords = [k.lower() for k in (
        *(o.keyword for o in options.OPTIONS), *options.NOT_NEEDED_KEYWORDS,
        *(u.keyword for u in options.UNHONOURED), *(k.keyword for k in options.OTHER_KEYWORDS))]
    assert len(keywords) == len(set(keywords))
    keys = [k.key for k in (*options.STOCK_KEYS, *options.OPTIONS, *options.OWN_KEYS)]
    assert len(keys) == len(set(keys))
    flags = [o.flag.split()[0] for o in options.OPTIONS if o.flag]
    assert len(flags) == len(set(flags))


def test_a_default_found_at_resolve_time_says_what_it_is():
    # The configuration reference shows default_doc where the value cannot speak for itself.
    for option in options.OPTIONS:
        assert option.default_doc or not isinstance(option.default, Computed), option.keyword


def test_the_readme_key_table_lists_the_rows():
    text = README.read_text(encoding="utf-8")
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| `")]
    assert [row[0].strip("`") for row in rows] == [
        *(o.key for o in options.OPTIONS), *(k.key for k in options.OWN_KEYS)]
    for row in rows:
        option = options.BY_KEY.get(row[0].strip("`"))
        if option is not None:
            assert row[1] == f"`{option.keyword}`", row
    stock = ", ".join(f"`{k.key}`" for k in options.STOCK_KEYS)
    assert f"Besides the keys of the stock cache ({stock}):" in " ".join(text.split())
