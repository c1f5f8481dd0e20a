"""``forewarn demo`` (what ``make demo`` runs) writes the outbox it wrote before the code was rearranged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams.settings import ROOT

pytestmark = pytest.mark.broker
GOLDEN = Path(__file__).parent / "golden" / "demo_outbox.jsonl"


def comparable(path: Path) -> list[dict]:
    """Every message with its id and texts, timestamps aside, in id order."""
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    for row in rows:
        row.pop("created_at", None)
    return sorted(rows, key=lambda row: row["id"])


def test_the_demo_writes_the_same_messages_as_before(tmp_path):
    outbox = tmp_path / "outbox"
    result = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--outbox", str(outbox)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    written = comparable(outbox / "notifications.jsonl")
    expected = comparable(GOLDEN)
    assert [row["id"] for row in written] == [row["id"] for row in expected]
    assert written == expected
    emails = {row["id"] for row in expected if row["channel"] == "email"}
    assert {path.stem for path in (outbox / "email").glob("*.eml")} == emails
