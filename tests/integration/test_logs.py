"""No customer data in a worker's log at any level: a worker restarted with state, at debug level.

Table recovery reads the customers back from their changelog; kafka-python and
aiokafka log the raw bytes of what they fetch at debug level, so those loggers
must stay quiet from the worker's first line, and the rest is masked.
"""

from __future__ import annotations

import time

import orjson
import pytest

from streams.kafka.admin import produce_json, wait_drained
from streams.settings import ROOT
from streams.tools.load_customers import load_customers
from tests.conftest import event

pytestmark = pytest.mark.broker
CUSTOMERS = ROOT / "config" / "demo" / "customers.jsonl"
DEMO_EVENTS = ROOT / "config" / "demo" / "events.jsonl"


def until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def customer_data() -> list[str]:
    records = [orjson.loads(line) for line in CUSTOMERS.read_bytes().splitlines()]
    return [value for record in records for value in (record["phone"], record["email"], record["name"])]


def test_a_worker_restarted_with_state_at_debug_level_logs_no_phone_number_email_or_name(broker, settings,
                                                                                          start_worker):
    env = {"FOREWARN_LOG_LEVEL": "debug"}
    first = start_worker(**env)
    load_customers(broker.bootstrap, settings.topics.customers, CUSTOMERS)
    placed = next(orjson.loads(line) for line in DEMO_EVENTS.read_bytes().splitlines() if b"order.placed" in line)
    produce_json(broker.bootstrap, settings.topics.orders, [
        (placed["customer_id"], event("o1", "order.placed", placed["data"], placed["customer_id"]))])
    source = (*settings.topics.source(), settings.topics.events)
    assert wait_drained(broker.bootstrap, start_worker.app_id, source, 90, alive=lambda: first.running), \
        first.log()[-2000:]
    first.kill()
    second = start_worker(**env)
    assert until(lambda: "Worker]: Ready" in second.log(), 90), second.log()[-2000:]
    assert wait_drained(broker.bootstrap, start_worker.app_id, source, 30, alive=lambda: second.running)
    logs = first.log() + second.log()
    assert "Restoring state from changelog" in second.log() and "DEBUG" in logs  # it did recover, at debug level
    leaked = [value for value in customer_data() if value in logs]
    assert leaked == [], f"{len(leaked)} customer values in the log, e.g. {leaked[:1]}"
