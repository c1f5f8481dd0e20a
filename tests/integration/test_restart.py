"""Durable timers: SIGKILL the worker while messages are pending, start it again.

Wall-clock mode, as in production, with waits shortened to seconds. Every due
message must come out exactly once, counted on the notifications topic (the
outbox would hide a double), and no cancelled one ever.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.kafka.admin import produce_json, read_topic, wait_drained

from streams.tools.load_customers import load_customers
from streams.settings import ROOT
from tests.conftest import cart, event, write

pytestmark = pytest.mark.broker
DEMO = ROOT / "config" / "demo"
WAIT = 25  # seconds; long enough to kill and restart the worker before anything falls due

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
    tiers:
      basic: {{channels: [email, sms]}}
      premium: {{channels: [sms, email], channel_mode: all}}
  - id: cart-reminder
    on: cart.updated
    category: marketing
    channels: [email]
    template: cart_reminder
    wait: {WAIT}s
    cancel_on: [cart.checked_out]
"""


def test_pending_messages_survive_sigkill_and_fire_exactly_once(broker, settings, start_worker, tmp_path):
    rules = write(tmp_path / "rules.yaml", RULES)
    env = {"FOREWARN_RULES": str(rules), "FOREWARN_CLOCK": "wall"}
    first = start_worker(**env)
    load_customers(broker.bootstrap, settings.topics.customers, DEMO / "customers.jsonl")
    source = (*settings.topics.source(), settings.topics.events)
    assert wait_drained(broker.bootstrap, start_worker.app_id, source, 90, alive=lambda: first.running), first.log()[-2000:]

    produced_at, produced_wall = time.monotonic(), datetime.now(timezone.utc)
    produce_json(broker.bootstrap, settings.topics.carts, [
        ("C1010", cart("k1", "C1010", "CART-A")),
        ("C1011", cart("k2", "C1011", "CART-B")),
        ("C1011", event("k3", "cart.checked_out", {"cart_id": "CART-B", "order_id": "ORD-9"}, "C1011")),
        ("C1014", cart("k4", "C1014", "CART-C")),
    ])
    produce_json(broker.bootstrap, settings.topics.outages, [
        ("OUT-R", event("o1", "outage.started", {"outage_id": "OUT-R", "service": "internet", "areas": ["3011"],
                                                 "expected_end": "2026-11-25T23:00:00+01:00"})),
        ("OUT-U", event("o2", "outage.started", {"outage_id": "OUT-U", "service": "tv", "areas": ["3511"]})),
        ("OUT-U", event("o3", "outage.resolved", {"outage_id": "OUT-U",
                                                  "resolved_at": datetime.now(timezone.utc).isoformat()})),
    ])
    assert wait_drained(broker.bootstrap, start_worker.app_id, source, 30, settle=0.5), first.log()[-2000:]
    assert time.monotonic() - produced_at < WAIT - 5, "too slow to kill before the due time; raise WAIT"
    assert read_topic(broker.bootstrap, settings.topics.notifications, timeout=0.5) == []
    first.kill()

    second = start_worker(**env)
    deadline = produced_at + WAIT + 120  # a restart includes a group join and table recovery
    expected = {("cart-reminder", "C1010", "email"), ("cart-reminder", "C1014", "email"),
                ("outage-started", "C1012", "sms"), ("outage-started", "C1013", "sms"),
                ("outage-started", "C1013", "email"), ("outage-started", "C1014", "email")}
    seen: Counter = Counter()
    while time.monotonic() < deadline and set(seen) != expected:
        time.sleep(1)
        seen = Counter((n["rule"], n["customer_id"], n["channel"]) for n in
                       (orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.notifications)))
    topics = (*source, settings.topics.due, settings.topics.notifications)
    assert wait_drained(broker.bootstrap, start_worker.app_id, topics, 30, settle=3), second.log()[-2000:]

    notifications = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.notifications)]
    seen = Counter((n["rule"], n["customer_id"], n["channel"]) for n in notifications)
    assert set(seen) == expected, second.log()[-2000:]
    assert all(count == 1 for count in seen.values()), seen
    assert len({n["id"] for n in notifications}) == len(notifications)
    cancelled = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.suppressed)]
    assert {(s["rule"], s["customer_id"], s["reason"]) for s in cancelled} >= {
        ("cart-reminder", "C1011", "cancelled"), ("outage-started", "C1006", "cancelled")}
    for n in notifications:  # at or after the due time, never early
        assert datetime.fromisoformat(n["created_at"]) >= produced_wall + timedelta(seconds=WAIT - 1)


def test_a_checkout_made_while_the_worker_was_down_cancels_the_reminder_that_fell_due(broker, settings,
                                                                                     start_worker, tmp_path):
    """After a restart the recovered timer is overdue, the checkout still waits behind a backlog: it must win."""
    # Long enough that the first worker is surely killed before it fires: its commit interval and the
    # lag polls can take several seconds on a loaded machine.
    wait = 10
    rules = write(tmp_path / "rules.yaml", RULES.replace(f"wait: {WAIT}s", f"wait: {wait}s"))
    env = {"FOREWARN_RULES": str(rules), "FOREWARN_CLOCK": "wall"}
    first = start_worker(**env)
    load_customers(broker.bootstrap, settings.topics.customers, DEMO / "customers.jsonl")
    source = (*settings.topics.source(), settings.topics.events)
    assert wait_drained(broker.bootstrap, start_worker.app_id, source, 90, alive=lambda: first.running), first.log()[-2000:]
    produce_json(broker.bootstrap, settings.topics.carts, [("C1010", cart("k1", "C1010", "CART-A"))])
    abandoned_at = time.monotonic()
    assert wait_drained(broker.bootstrap, start_worker.app_id, source, 30, settle=0.5), first.log()[-2000:]
    first.kill()  # the reminder is pending in the state table
    assert time.monotonic() - abandoned_at < wait, "the reminder fell due before the first worker was killed"
    assert list(read_topic(broker.bootstrap, settings.topics.notifications)) == []

    backlog = [(f"X{i}", cart(f"x{i}", f"X{i}", f"CART-X{i}")) for i in range(5_000)]  # unknown customers
    produce_json(broker.bootstrap, settings.topics.carts, [
        *backlog, ("C1010", event("k2", "cart.checked_out", {"cart_id": "CART-A", "order_id": "ORD-1"}, "C1010"))])
    time.sleep(max(0.0, abandoned_at + wait + 1 - time.monotonic()))  # overdue when the worker comes back
    second = start_worker(**env)
    topics = (*source, settings.topics.due, settings.topics.notifications)
    assert wait_drained(broker.bootstrap, start_worker.app_id, topics, 120, settle=3,
                        alive=lambda: second.running), second.log()[-2000:]
    time.sleep(2)  # a due record fired late would be in by now
    notifications = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.notifications)]
    assert notifications == [], second.log()[-2000:]
    outcomes = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.suppressed)]
    assert ("cart-reminder", "C1010", "cancelled") in {(s["rule"], s["customer_id"], s["reason"]) for s in outcomes}
    assert "caught up with the partitions' events" in second.log()
