"""The README's walk-through of a rule change, as commands and what they print today.

``python -m tests.walkthrough`` rewrites the blocks between the ``walkthrough:NAME`` markers of the
README from real runs; ``tests/test_readme.py`` fails when the README and the commands part ways.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from streams.cli import cli
from streams.settings import ROOT

WIDTH = 100
EXAMPLES = "docs/examples"
# The unsubscribe token is signed with a key made for the run: it differs every time.
_VARYING = re.compile(r"/unsubscribe/\S+")


def _run(args: list[str], shown: str) -> str:
    from streams import cli as command

    # The consoles were made when the module was first imported, with whatever width the terminal had.
    widths = command.console.width, command.err.width
    command.console.width = command.err.width = WIDTH
    try:
        result = CliRunner().invoke(cli, args, terminal_width=WIDTH)
    finally:
        command.console.width, command.err.width = widths
    return f"$ {shown}\n{result.output}"


def check_broken() -> str:
    return _run(["rules", "check", f"{EXAMPLES}/broken-rules.yaml"],
                f"forewarn rules check {EXAMPLES}/broken-rules.yaml")


def check_sms(work: Path) -> str:
    templates = work / "templates"
    shutil.copytree(ROOT / "templates", templates, dirs_exist_ok=True)
    with (templates / "sms" / "nl" / "outage_started.body.j2").open("a", encoding="utf-8") as body:
        body.write("Je wordt geïnformeerd.\n")
    output = _run(["rules", "check", "--templates", str(templates)], "forewarn rules check")
    return output.replace(str(templates), "templates")


def preview() -> str:
    output = _run(["preview", "cart-reminder", "--rules", f"{EXAMPLES}/carts-over-50.yaml",
                   "--event", f"{EXAMPLES}/cart.json", "--customer", f"{EXAMPLES}/customer.json",
                   "--at", "2026-11-25T20:30:00+01:00"],
                  f"forewarn preview cart-reminder --rules {EXAMPLES}/carts-over-50.yaml \\\n"
                  f"    --event {EXAMPLES}/cart.json --customer {EXAMPLES}/customer.json --at 2026-11-25T20:30:00+01:00")
    shown = []
    for line in output.splitlines():  # up to the unsubscribe link: its token is signed with a key for the run
        if "/unsubscribe/" in line:
            shown.append(_VARYING.sub("/unsubscribe/…", line))
            break
        shown.append(line)
    return "\n".join(shown) + "\n"


def week(work: Path) -> Path:
    out = work / "week"
    if not out.exists():
        CliRunner().invoke(cli, ["generate", "--customers", "1000", "--out", str(out)])
    return out


def diff(work: Path) -> str:
    data = week(work)
    output = _run(["simulate", "--rules", f"{EXAMPLES}/carts-over-50.yaml", "--against", "config/rules.yaml",
                   "--customers", str(data / "customers.jsonl"), "--events", str(data / "events.jsonl"),
                   "--out", str(work / "simulation"), "--sample", "2"],
                  f"forewarn simulate --rules {EXAMPLES}/carts-over-50.yaml --against config/rules.yaml \\\n"
                  "    --customers week/customers.jsonl --events week/events.jsonl --sample 2")
    return output.replace(str(work) + "/", "")


def plan(work: Path) -> str:
    data = week(work)
    outage = next(line for line in (data / "events.jsonl").read_text().splitlines() if "outage.started" in line)
    (work / "outage.json").write_text(outage + "\n")
    return _run(["plan", str(work / "outage.json"), "--customers", str(data / "customers.jsonl")],
                "forewarn plan outage.json --customers week/customers.jsonl")


def deflection(work: Path) -> str:
    data = week(work)
    output = _run(["report", "deflection", "--customers", str(data / "customers.jsonl"),
                   "--events", str(data / "events.jsonl")],
                  "forewarn report deflection --customers week/customers.jsonl --events week/events.jsonl")
    return output.replace(str(work) + "/", "")


def blocks(work: Path) -> dict[str, str]:
    return {"check": check_broken(), "lint": check_sms(work), "preview": preview(), "diff": diff(work),
            "plan": plan(work), "deflection": deflection(work)}


def fenced(text: str) -> str:
    return "```\n" + text.rstrip("\n") + "\n```"


def rewrite(readme: str, found: dict[str, str]) -> str:
    for name, text in found.items():
        start, end = f"<!-- walkthrough:{name} -->", f"<!-- walkthrough:{name} end -->"
        before, rest = readme.split(start, 1)
        _, after = rest.split(end, 1)
        readme = f"{before}{start}\n{fenced(text)}\n{end}{after}"
    return readme


if __name__ == "__main__":
    path = ROOT / "README.md"
    with tempfile.TemporaryDirectory() as scratch:
        path.write_text(rewrite(path.read_text(encoding="utf-8"), blocks(Path(scratch))), encoding="utf-8")
    sys.stdout.write("README.md walk-through rewritten\n")
