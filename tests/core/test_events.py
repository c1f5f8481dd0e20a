"""The event contract at the door: bounds that keep one event from crashing a hop or moving a clock, addresses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.core.events import BOUNDS, parse_event
from streams.errors import EventError
from streams.settings import ROOT
from streams.tools.customer_files import upsert_event

CUSTOMER = orjson.loads((ROOT / "config" / "demo" / "customers.jsonl").read_bytes().splitlines()[0])
DEMO = [orjson.loads(line) for line in (ROOT / "config" / "demo" / "events.jsonl").read_bytes().splitlines()]
DELAY = next(e for e in DEMO if e["type"] == "order.delayed")


def upsert(**fields) -> bytes:
    return orjson.dumps(upsert_event({**CUSTOMER, **fields}, datetime(2026, 11, 25, tzinfo=timezone.utc)))


@pytest.mark.parametrize("email", ["jan\x00@example.nl", "jan\u202e@example.nl", "jan\x07@example.nl",
                                   "jan@example.nl\n", "jan@localhost", "jan@[127.0.0.1]", "jan"])
def test_an_address_with_nul_control_or_bidi_characters_or_no_domain_is_refused(email):
    with pytest.raises(EventError, match="email"):  # the schema refuses some, the validator the rest
        parse_event(upsert(email=email))


def test_an_ordinary_address_and_an_international_one_pass():
    for email in ("sanne.devries@example.nl", "jürgen@exämple.de"):
        assert parse_event(upsert(email=email))["data"]["email"] == email


@pytest.mark.parametrize("field, value", [("occurred_at", "9999-12-31T23:30:00Z"),
                                          ("occurred_at", "1999-12-31T23:59:59Z")])
def test_an_event_time_outside_2000_to_2100_is_refused(field, value):
    with pytest.raises(EventError, match="outside 2000 to 2100"):
        parse_event(orjson.dumps({**DELAY, field: value}))


def test_a_timestamp_in_the_data_outside_the_range_is_refused_too():
    with pytest.raises(EventError, match="outside 2000 to 2100"):
        parse_event(orjson.dumps({**DELAY, "data": {**DELAY["data"], "new_eta": "9999-01-01T00:00:00Z"}}))


@pytest.mark.parametrize("shape, message", [
    ("[" * 20 + "]" * 20, "nested deeper"),
    (orjson.dumps(list(range(BOUNDS.items + 1))).decode(), "entries in one array"),
    (orjson.dumps("x" * (BOUNDS.string + 1)).decode(), "characters exceeds"),
])
def test_depth_length_and_size_past_the_bounds_are_refused_before_any_schema_is_read(shape, message):
    raw = orjson.dumps({**DELAY, "data": {**DELAY["data"], "reason": "SHAPE"}}).replace(b'"SHAPE"', shape.encode())
    with pytest.raises(EventError, match=message):
        parse_event(raw)


def test_an_event_may_be_at_most_an_hour_ahead_of_the_broker():
    occurred = datetime.fromisoformat(DELAY["occurred_at"])
    parse_event(orjson.dumps(DELAY), received=occurred - BOUNDS.ahead)
    with pytest.raises(EventError, match="after the broker received"):
        parse_event(orjson.dumps(DELAY), received=occurred - BOUNDS.ahead - timedelta(seconds=1))
