"""The README shows what the commands print today, and every rule field the schema has."""

from __future__ import annotations

import pytest

from streams.settings import ROOT
from streams.tools.docs import rule_fields_markdown
from tests import walkthrough

README = ROOT / "README.md"


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    return walkthrough.blocks(tmp_path_factory.mktemp("walkthrough"))


@pytest.mark.parametrize("name", ["check", "lint", "preview", "diff", "plan"])
def test_the_walkthrough_shows_what_each_command_prints_today(found, name):
    readme = README.read_text(encoding="utf-8")
    start, end = f"<!-- walkthrough:{name} -->\n", f"\n<!-- walkthrough:{name} end -->"
    shown = readme[readme.index(start) + len(start):readme.index(end)]
    assert shown == walkthrough.fenced(found[name]), "regenerate with: .venv/bin/python -m tests.walkthrough"


def test_the_rule_field_tables_are_the_schema():
    readme = README.read_text(encoding="utf-8")
    start, end = readme.index("<!-- rule-fields:start"), readme.index("<!-- rule-fields:end -->")
    assert readme[readme.index("\n", start) + 1:end].strip() == rule_fields_markdown(), \
        "regenerate with: .venv/bin/python -m streams.tools.docs"
