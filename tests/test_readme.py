"""The README shows what the commands print today, and every rule field the schema has."""

from __future__ import annotations

from streams.settings import ROOT
from streams.tools.docs import rule_fields_markdown
from tests import walkthrough

README = ROOT / "README.md"


def test_the_walkthrough_shows_what_each_command_prints_today(tmp_path):
    """One test, not one per step: the steps share a generated week, made once."""
    readme = README.read_text(encoding="utf-8")
    for name, printed in walkthrough.blocks(tmp_path).items():
        start, end = f"<!-- walkthrough:{name} -->\n", f"\n<!-- walkthrough:{name} end -->"
        shown = readme[readme.index(start) + len(start):readme.index(end)]
        assert shown == walkthrough.fenced(printed), f"{name}: regenerate with .venv/bin/python -m tests.walkthrough"


def test_the_rule_field_tables_are_the_schema():
    readme = README.read_text(encoding="utf-8")
    start, end = readme.index("<!-- rule-fields:start"), readme.index("<!-- rule-fields:end -->")
    assert readme[readme.index("\n", start) + 1:end].strip() == rule_fields_markdown(), \
        "regenerate with: .venv/bin/python -m streams.tools.docs"
