"""Under lag, nothing wrong: a wall-clock worker far behind its input sends no cancelled message.

The worker is made to lag by more than the rules' wait: a backlog of
thousands of events is produced ahead of it, with a checkout and a blip's
resolution inside. A pending message fires only once every input of its rule
has been read past its due time, so the checkout and the resolution are read
first: no reminder for the buyer, no outage notice. The reminder that is due
does go out, late by at most the lag.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.kafka.admin import producer, read_topic, wait_drained
from streams.settings import ROOT
from streams.tools.load_customers import load_customers
from tests.conftest import cart, event, write

pytestmark = pytest.mark.broker
DEMO = ROOT / "config" / "demo"
WAIT = 2  # seconds
FILLER = 3_000  # events per source topic pair in the backlog: many seconds of work for one worker

RULES = f"""\
version: 1
defaults:
  quiet_hours: false
rules:
  - id: outage-started
    on: outage.started
    category: service
    audience: area
    channels: [sms, email]
    template: outage_started
    essential: true
    wait: {WAIT}s
    cancel_on: [outage.resolved]
  - id: cart-reminder
    on: cart.updated
    category: marketing
    channels: [email]
    template: cart_reminder
    wait: {WAIT}s
    cancel_on: [cart.checked_out]
"""


def filler(n: int) -> list[tuple[str, dict]]:
    """Events no rule sends anything for, spread over every partition of the three clock topics."""
    out = []
    for i in range(n):
        out.append(("orders", event(f"fill-o{i}", "order.delivered", {"order_id": f"F{i}"}, f"X{i}")))
        out.append(("carts", event(f"fill-c{i}", "cart.checked_out", {"cart_id": f"F{i}", "order_id": f"F{i}"},
                                   f"X{i}")))
        if i % 15 == 0:
            out.append(("outages", event(f"fill-u{i}", "outage.updated", {
                "outage_id": f"NONE-{i}", "expected_end": datetime.now(timezone.utc).isoformat()})))
    return out


def produce(bootstrap: str, records: list[tuple[str, dict]]) -> None:
    sender = producer(bootstrap, batch_size=256 * 1024, linger_ms=20)
    try:
        for topic, record in records:
            key = record.get("customer_id") or record["data"].get("outage_id")
            sender.send(topic, key=key.encode(), value=orjson.dumps(record))
        sender.flush()
    finally:
        sender.close()


def test_a_lagging_worker_reads_the_checkout_and_the_resolution_before_their_messages_fall_due(
        broker, settings, start_worker, tmp_path):
    worker = start_worker(FOREWARN_RULES=str(write(tmp_path / "rules.yaml", RULES)), FOREWARN_CLOCK="wall")
    load_customers(broker.bootstrap, settings.topics.customers, DEMO / "customers.jsonl")
    topics = (*settings.topics.source(), settings.topics.events, settings.topics.due)
    assert wait_drained(broker.bootstrap, start_worker.app_id, topics, 90, alive=lambda: worker.running)

    blip = {"outage_id": "OUT-LAG", "service": "internet", "areas": ["1012"], "description": "Korte storing",
            "expected_end": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}
    left = cart("lag-cart-left", "C1014", "CART-LEFT")
    started = time.monotonic()
    produce(broker.bootstrap, [
        ("carts", cart("lag-cart-paid", "C1011", "CART-PAID")),
        ("carts", left),
        ("outages", event("lag-blip", "outage.started", blip)),
        *filler(FILLER),
        ("carts", event("lag-paid", "cart.checked_out", {"cart_id": "CART-PAID", "order_id": "O-PAID"}, "C1011")),
        ("outages", event("lag-fixed", "outage.resolved", {"outage_id": "OUT-LAG",
                                                            "resolved_at": datetime.now(timezone.utc).isoformat()})),
        *filler(FILLER // 10),
    ])
    produced = time.monotonic()
    assert wait_drained(broker.bootstrap, start_worker.app_id, topics, 300, settle=1, alive=lambda: worker.running)
    lag = time.monotonic() - started
    assert lag > 2 * WAIT, f"the worker kept up ({lag:.1f} s): the backlog must be larger for this test to mean anything"
    time.sleep(WAIT + 2)  # anything still pending has fallen due

    notifications = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.notifications)]
    assert [(n["rule"], n["customer_id"]) for n in notifications] == [("cart-reminder", "C1014")], (
        [(n["rule"], n["customer_id"]) for n in notifications], f"lag {lag:.1f} s, produced in {produced - started:.1f} s")
    [reminder] = notifications
    due = datetime.fromisoformat(left["occurred_at"]) + timedelta(seconds=WAIT)
    late = (datetime.fromisoformat(reminder["created_at"]) - due).total_seconds()
    assert late <= lag + 2, f"the reminder came {late:.1f} s after it was due; the lag was {lag:.1f} s"
