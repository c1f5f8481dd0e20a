"""The console's answers in the terminal, over a store file: history, outage, deadletter list and redrive."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from streams.cli import cli
from streams.console.store import ActivityStore
from tests.console.test_store import OUTAGE, TOPICS, outage_day

runner = CliRunner()


@pytest.fixture
def store_file(tmp_path, monkeypatch):
    path = tmp_path / "console.sqlite3"
    store = ActivityStore(path, topics=TOPICS)
    records = outage_day()
    records.dead("orders", 0, 17, b'{"id": "bad"}', "not an event", "2026-11-25T13:20:00+01:00")
    store.add_many(records.made)
    store.close()
    from streams import cli as command

    monkeypatch.setattr(command.console, "width", 200)  # made at import, with the terminal's width then
    monkeypatch.setenv("FOREWARN_CONSOLE_DB", str(path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    return path


def test_history_lists_sent_and_held_back_with_reasons_and_masks_addresses(store_file):
    result = runner.invoke(cli, ["history", "C1"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "outage-started" in result.output and "delivered" in result.output
    assert "no_marketing_consent" in result.output and "contacted support" in result.output
    assert "+31612345678" not in result.output and "anna@example.nl" not in result.output
    revealed = runner.invoke(cli, ["history", "C1", "--reveal"], terminal_width=200)
    assert "+31612345678" in revealed.output


def test_outage_tells_who_was_told_per_channel_and_tier(store_file):
    result = runner.invoke(cli, ["outage", OUTAGE], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"outage {OUTAGE}: started" in result.output and "premium" in result.output
    assert "no_consent 1" in result.output
    missing = runner.invoke(cli, ["outage", "OUT-NONE"])
    assert missing.exit_code == 2 and "no outage OUT-NONE" in missing.output


def test_deadletter_list_shows_where_and_why_and_redrive_needs_a_broker(store_file):
    result = runner.invoke(cli, ["deadletter", "list"], terminal_width=200)
    assert result.exit_code == 0 and "orders/0/17" in result.output and "not an event" in result.output
    refused = runner.invoke(cli, ["deadletter", "redrive", "orders/0/17", "--who", "Femke"])
    assert refused.exit_code == 2 and "KAFKA_BOOTSTRAP_SERVERS" in refused.output
    wrong = runner.invoke(cli, ["deadletter", "redrive", "orders-17", "--who", "Femke"])
    assert wrong.exit_code == 2 and "TOPIC/PARTITION/OFFSET" in wrong.output


def test_a_redrive_is_checked_against_todays_schemas_before_anything_is_sent():
    from datetime import datetime, timezone

    import orjson

    from streams.console.serve import redrive_for
    from streams.console.store import DeadLetterEntry
    from streams.settings import ROOT, Settings

    valid = next(line for line in (ROOT / "config" / "demo" / "events.jsonl").read_bytes().splitlines()
                 if b"order.delivered" in line)
    invalid = orjson.dumps({**orjson.loads(valid), "data": {}})

    def entry(original: bytes, complete: bool = True) -> DeadLetterEntry:
        return DeadLetterEntry("orders", 0, 5, "ingest", "was invalid", datetime.now(timezone.utc), original,
                               None, None, b"C1013", complete)

    check = redrive_for(Settings(), "127.0.0.1:1").check  # check never reaches the broker
    assert check(entry(valid)) is None
    assert "refused again" in check(entry(invalid))
    assert "only the start" in check(entry(valid, complete=False))
