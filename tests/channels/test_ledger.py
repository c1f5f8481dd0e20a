"""The send ledger's rules, on a plain dict: what a notification seen again gets."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from streams.channels.ledger import DONE, SENDING, SendLedger


def test_a_notification_is_unknown_then_sending_then_done():
    ledger = SendLedger({})
    since = datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)
    assert ledger.get("ntf-1") is None
    ledger.sending("ntf-1", 2, since)
    mark = ledger.get("ntf-1")
    assert (mark.state, mark.partition, datetime.fromisoformat(mark.since)) == (SENDING, 2, since)
    ledger.done("ntf-1", 2, "queued")
    mark = ledger.get("ntf-1")
    assert (mark.state, mark.status, mark.parked) == (DONE, "queued", False)


def test_parked_is_done_for_the_first_round_only():
    ledger = SendLedger({})
    ledger.done("ntf-2", 0, "parked")
    assert ledger.get("ntf-2").parked


def test_marks_past_the_retention_expire_with_their_partition():
    marks: dict[str, bytes] = {}
    ledger = SendLedger(marks, retention=60)
    ledger.sweep_every = 0
    ledger.done("old", 3, "queued")
    made = ledger.get("old").at
    assert ledger.expired(now=made + 59) == []
    assert ledger.expired(now=made + 61) == [("old", 3)]
    ledger.forget("old")
    assert marks == {} and ledger.get("old") is None


def test_a_sweep_looks_at_a_chunk_of_marks_per_call_and_passes_over_all_of_them():
    marks: dict[str, bytes] = {}
    ledger = SendLedger(marks, retention=60)
    ledger.sweep_chunk = 3
    for n in range(7):
        ledger.done(f"ntf-{n}", n % 4, "queued")
    later = ledger.get("ntf-6").at + 61
    marks["fresh"] = orjson.dumps({"state": SENDING, "at": later - 1, "partition": 1})
    chunks = []
    while found := ledger.expired(now=later):
        chunks.append(found)
    assert [len(c) for c in chunks] == [2, 3, 2]  # the first chunk held the fresh mark, which stays
    assert sorted(key for chunk in chunks for key in chunk) == sorted((f"ntf-{n}", n % 4) for n in range(7))
    ledger.done("ntf-7", 0, "queued")
    assert ledger.expired(now=later + 1000) == []  # the next pass waits for sweep_every
