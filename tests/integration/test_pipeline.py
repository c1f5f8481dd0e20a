"""A real faust worker on the embedded broker: events in, outbox and dead letters out."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone
from urllib.request import urlopen
from pathlib import Path

import orjson
import pytest

from streams.core.config import load_config
from streams.tools.customer_files import read_customer_rows, upsert_event
from streams.kafka.admin import produce_json, read_topic, replay_in_order, wait_drained
from streams.tools.load_customers import load_customers
from streams.settings import ROOT
from streams.tools.simulate import simulate

pytestmark = pytest.mark.broker
DEMO = ROOT / "config" / "demo"
IN_OUTAGE = {"C1001", "C1002", "C1003", "C1004", "C1005", "C1006"}


def replay(bootstrap: str, settings, lines: list[bytes]) -> None:
    replay_in_order(bootstrap, settings.topics.for_event_type, lines, settings.topics.orders,
                    ingested=(settings.topics.events, settings.topics.deadletter))


def drain(broker, settings, app_id, worker, timeout=90.0) -> None:
    """Until the worker has consumed everything and has been idle long enough to flush what was pending."""
    topics = (*settings.topics.source(), settings.topics.events, settings.topics.due, settings.topics.notifications)
    assert wait_drained(broker.bootstrap, app_id, topics, timeout, settle=settings.event_idle + 3,
                        alive=lambda: worker.running), worker.log()[-3000:]


def outbox_lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "outbox" / "notifications.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def comparable(notification: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in notification.items() if k != "created_at"))


def test_demo_events_become_outbox_messages_identical_to_the_simulation(broker, settings, start_worker, tmp_path):
    worker = start_worker()
    load_customers(broker.bootstrap, settings.topics.customers, DEMO / "customers.jsonl")
    # A customer updated long after the demo's day: customer data must not move the worker's event clock.
    _, first, _ = next(read_customer_rows(DEMO / "customers.jsonl"))
    produce_json(broker.bootstrap, settings.topics.customers, [(first["customer_id"], upsert_event(
        first, at=datetime(2099, 1, 1, tzinfo=timezone.utc)))])
    drain(broker, settings, start_worker.app_id, worker)
    replay(broker.bootstrap, settings, DEMO.joinpath("events.jsonl").read_bytes().splitlines())
    drain(broker, settings, start_worker.app_id, worker)

    sent = outbox_lines(tmp_path)
    started = {n["customer_id"] for n in sent if n["rule"] == "outage-started"}
    assert started == IN_OUTAGE
    assert {n["locale"] for n in sent} == {"nl", "en"}
    assert {n["channel"] for n in sent} == {"sms", "email"}
    assert {"order-delayed", "cart-reminder", "outage-resolved"} <= {n["rule"] for n in sent}
    emails = [n for n in sent if n["channel"] == "email"]
    for n in emails:
        assert (tmp_path / "outbox" / "email" / f"{n['id']}.eml").exists()
    deliveries = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.deliveries)]
    assert {d["notification_id"] for d in deliveries} == {n["id"] for n in sent}

    metrics = urlopen(f"http://127.0.0.1:{worker.env['FOREWARN_METRICS_PORT']}/metrics", timeout=5).read().decode()
    assert 'forewarn_events_consumed_total{topic="outages"} 5.0' in metrics
    assert 'forewarn_notifications_total{channel="sms",rule="outage-started"}' in metrics
    assert "forewarn_processing_seconds_bucket" in metrics
    # Every outage SMS of the demo goes to a Dutch number: 0.085 a segment by the shipped defaults.cost.
    outage_sms = [n for n in sent if n["rule"] == "outage-started" and n["channel"] == "sms"]
    line = next(m for m in metrics.splitlines()
                if m.startswith('forewarn_estimated_cost_total{channel="sms",rule="outage-started"}'))
    assert float(line.split()[-1]) == pytest.approx(0.085 * sum(n.get("segments", 1) for n in outage_sms))

    log = worker.log()
    for customer in map(orjson.loads, DEMO.joinpath("customers.jsonl").read_bytes().splitlines()):
        assert customer["phone"] not in log and customer["email"] not in log

    config = load_config(settings)
    simulate(config, DEMO / "customers.jsonl", DEMO / "events.jsonl", tmp_path / "sim")
    simulated = [orjson.loads(line) for line in (tmp_path / "sim" / "notifications.jsonl").read_bytes().splitlines()]
    assert sorted(map(comparable, sent)) == sorted(map(comparable, simulated))


def test_garbage_and_invalid_events_reach_deadletter_while_valid_ones_flow(broker, settings, start_worker, tmp_path):
    worker = start_worker()
    load_customers(broker.bootstrap, settings.topics.customers, DEMO / "customers.jsonl")
    drain(broker, settings, start_worker.app_id, worker)  # customers and orders are separate topics
    valid = orjson.loads(next(line for line in DEMO.joinpath("events.jsonl").read_bytes().splitlines()
                              if b'"order.delayed"' in line))
    bad = [
        b"\x00\xffnot json at all",
        b'{"id": "x1", "type": "order.delayed", "occurred_at": "2026-11-25T14:00:00", "customer_id": "C1", "data": {}}',
        b'{"id": "x2", "type": "order.exploded", "occurred_at": "2026-11-25T14:00:00+01:00", "data": {}}',
        b"[1, 2, 3]",
    ]
    produce_json(broker.bootstrap, settings.topics.orders,
                 [(None, bad[0]), (None, bad[1]), (None, orjson.dumps(valid)), (None, bad[2]), (None, bad[3])])
    drain(broker, settings, start_worker.app_id, worker)

    dead = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.deadletter)]
    assert sorted(base64.b64decode(d["value_b64"]) for d in dead) == sorted(bad)
    reasons = {base64.b64decode(d["value_b64"]): d["reason"] for d in dead}
    assert reasons[bad[0]].startswith("not JSON")
    assert "schema" in reasons[bad[1]]
    assert "unknown event type" in reasons[bad[2]]
    assert "JSON object" in reasons[bad[3]]
    assert all(d["topic"] == settings.topics.orders and d["offset"] >= 0 for d in dead)
    expected = [("order-delayed", "email"), ("order-delayed", "sms")]  # a premium customer: SMS and email
    deadline = time.monotonic() + 60  # held for coalescing, decided when the replay goes idle, then dispatched
    while sorted((n["rule"], n["channel"]) for n in outbox_lines(tmp_path)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted((n["rule"], n["channel"]) for n in outbox_lines(tmp_path)) == expected
    assert worker.running
