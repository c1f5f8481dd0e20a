"""The README's table of rule fields, made from ``schemas/rules.json`` so that the two cannot drift."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from streams.settings import ROOT


def rule_fields_markdown(schema_file: Path = ROOT / "schemas" / "rules.json") -> str:
    """| field | | table of every rule field and every ``defaults`` field, with the schema's description."""
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    rule = schema["$defs"]["rule"]
    lines = ["| rule field | |", "| --- | --- |"]
    lines += [_row(name, spec, name in rule["required"]) for name, spec in rule["properties"].items()]
    lines += ["", "| under `defaults` | |", "| --- | --- |"]
    lines += [_row(name, spec, False) for name, spec in schema["properties"]["defaults"]["properties"].items()]
    return "\n".join(lines)


def _row(name: str, spec: dict[str, Any], required: bool) -> str:
    text = spec.get("description", "").replace("|", "\\|")
    return f"| `{name}` | {'required. ' if required else ''}{text} |"


if __name__ == "__main__":  # python -m streams.tools.docs > the part of README.md between the markers
    sys.stdout.write(rule_fields_markdown() + "\n")
