"""``expect``: a parcel the carrier does not scan within two days of shipping gets a message; a scan stops it."""

from __future__ import annotations

import textwrap

import orjson
import pytest

from streams.core.config import load_config
from streams.core.rules import check_rules
from streams.settings import ROOT, Settings
from streams.tools.simulate import EPOCH, simulate_sources
from tests.conftest import write
from streams.tools.customer_files import upsert_event

CUSTOMER = {**orjson.loads((ROOT / "config" / "demo" / "customers.jsonl").read_bytes().splitlines()[1]),
            "customer_id": "C1", "tier": "standard"}
SHIPPED = {"id": "e-shipped", "type": "order.shipped", "occurred_at": "2026-11-24T10:00:00+01:00",
           "customer_id": "C1", "data": {"order_id": "ORD-1", "carrier": "PostNL",
                                         "tracking_url": "https://tracking.example.nl/1", "eta": "2026-11-25"}}


def event(event_id: str, event_type: str, at: str, **data) -> dict:
    return {"id": event_id, "type": event_type, "occurred_at": at, "customer_id": "C1",
            "data": {"order_id": "ORD-1", **data}}


def run(events: list[dict]) -> list[dict]:
    config = load_config(Settings.from_env())
    customers = iter([("customers", 1, orjson.dumps(upsert_event(CUSTOMER, EPOCH)), None)])
    lines = iter([("events", n, orjson.dumps(e), None) for n, e in enumerate(events, start=1)])
    report = simulate_sources(config, customers, lines, None, keep_messages=True)
    return [{"rule": m.rule, "channel": m.channel, "at": m.created_at, "text": m.text}
            for m in report.messages.get("C1", []) if m.rule == "order-not-moving"]


def test_no_scan_within_48_hours_tells_the_customer_once_on_the_first_channel():
    sent = run([SHIPPED])  # what is pending when the input ends falls due at its own time
    assert [(m["channel"], m["at"]) for m in sent] == [("email", "2026-11-26T09:00:00+00:00")]
    assert "al twee dagen niet gescand" in sent[0]["text"]


@pytest.mark.parametrize("fulfilled", ["shipment.scanned", "order.delivered"])
def test_a_scan_or_the_delivery_within_48_hours_means_no_message(fulfilled):
    sent = run([SHIPPED, event("e-next", fulfilled, "2026-11-25T08:00:00+01:00")])
    assert sent == []


@pytest.mark.parametrize(("extra", "words", "line"), [
    ("    wait: 1h\n", "expect is a wait of its own", 8),
    ("", "cart.updated cannot carry the key data.order_id", 8),
])
def test_rules_check_refuses_an_expect_that_cannot_work(tmp_path, renderer, schemas, extra, words, line):
    any_of = "[cart.updated]" if not extra else "[shipment.scanned]"
    text = textwrap.dedent(f"""\
    version: 1
    rules:
      - id: order-not-moving
        on: order.shipped
        category: service
        channels: [email]
        template: order_not_moving
        expect: {{any_of: {any_of}, within: 48h}}
    """) + extra
    _, problems = check_rules(write(tmp_path / "rules.yaml", text), renderer, schemas)
    assert [(p.line, words in p.message) for p in problems] == [(line, True)], problems
