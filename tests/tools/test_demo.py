"""``forewarn demo`` (what ``make demo`` runs) writes the outbox it wrote before the code was rearranged."""

from __future__ import annotations

import re
import subprocess
import sys
from email import message_from_bytes
from pathlib import Path

import orjson
import pytest

from streams.settings import ROOT

pytestmark = pytest.mark.broker
GOLDEN = Path(__file__).parent / "golden" / "demo_outbox.jsonl"


# The demo signs its unsubscribe links with a key made for the run: the token differs, nothing else may.
TOKEN = re.compile(r"(/unsubscribe/|unsubscribe%20)[A-Za-z0-9_.-]+")


def comparable(path: Path) -> list[dict]:
    """Every message with its id and texts, timestamps and unsubscribe tokens aside, in id order."""
    text = TOKEN.sub(r"\1TOKEN", path.read_text(encoding="utf-8"))
    rows = [orjson.loads(line) for line in text.splitlines() if line.strip()]
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
    for row in written:  # the cart reminder carries one-click unsubscribe (RFC 8058), service mail does not
        if row["channel"] == "email":
            mail = message_from_bytes((outbox / "email" / f"{row['id']}.eml").read_bytes())
            marketing = row["category"] == "marketing"
            assert (mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click") is marketing, row["rule"]
            if marketing:
                https, mailto = mail["List-Unsubscribe"].split(", ")
                assert https.startswith("<http") and mailto.startswith("<mailto:") and "TOKEN" not in https
                assert "/unsubscribe/TOKEN" in row["body"] and "/unsubscribe/TOKEN" in row["html"]  # and in the text
    assert any(row["rule"] == "cart-reminder" for row in written)
