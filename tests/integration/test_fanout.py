"""An outage fan-out through a real worker: the right customers, each once, and the all-clear to exactly them.

3,000 customers in 30 PC4 areas go in through kafka-python; then some move
house (a new postcode, in or out of the outage's areas) before the outage. The
notices are counted on the ``notifications`` topic, where a double would show.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import orjson
import pytest

from streams.tools.customer_files import write_customer_csv
from streams.kafka.admin import produce_json, read_topic, wait_drained
from streams.tools.load_customers import load_customers
from tests.conftest import write

pytestmark = pytest.mark.broker

RULES = """\
version: 1
defaults: {quiet_hours: false}
rules:
  - id: outage-started
    on: outage.started
    category: service
    audience: area
    channels: [sms, email]
    template: outage_started
    essential: true
  - id: outage-resolved
    on: outage.resolved
    category: service
    audience: told
    channels: [sms, email]
    template: outage_resolved
    essential: true
"""
AREAS = 30
PER_AREA = 100
HIT = [str(1000 + a) for a in range(0, AREAS, 3)]  # 10 of the 30 areas
MOVED_IN = {f"C{n:05d}": "1000ZZ" for n in range(1, 60, 3)}  # from areas 1001/1002 into 1000
MOVED_OUT = {f"C{n:05d}": "2999AA" for n in range(0, 60, 3)}  # out of area 1000


def customer_row(number: int, postcode: str) -> list[str]:
    return [f"C{number:05d}", "Jan Jansen", f"+3161{number:07d}", f"klant{number}@example.nl", "nl",
            "Europe/Amsterdam", ("basic", "standard", "premium")[number % 3], postcode, "",
            "true" if number % 97 == 0 else "false", "true" if number % 4 else "false", "true"]


def outage_event(event_id: str, event_type: str, data: dict) -> dict:
    return {"id": event_id, "type": event_type, "occurred_at": datetime.now(timezone.utc).isoformat(),
            "data": {"outage_id": "OUT-UTR-1", **data}}


def notices(bootstrap: str, topic: str, rule: str, expected: int, timeout: float = 90) -> Counter:
    """Notifications of ``rule`` per customer, once ``expected`` are there (and a moment for any extra)."""
    def count() -> Counter:
        found = (orjson.loads(m.value) for m in read_topic(bootstrap, topic))
        return Counter(n["customer_id"] for n in found if n["rule"] == rule)

    deadline = time.monotonic() + timeout
    while sum(count().values()) < expected and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(2)  # anything extra, a double say, would have arrived by now
    return count()


def test_outage_reaches_the_area_once_each_and_the_all_clear_exactly_those(broker, settings, start_worker, tmp_path):
    numbers = range(AREAS * PER_AREA)
    postcodes = {f"C{n:05d}": f"{1000 + n % AREAS}AB" for n in numbers}
    initial = write_customer_csv(tmp_path / "customers.csv", [customer_row(n, postcodes[f"C{n:05d}"]) for n in numbers])
    worker = start_worker(FOREWARN_RULES=str(write(tmp_path / "rules.yaml", RULES)), FOREWARN_CLOCK="wall")
    assert load_customers(broker.bootstrap, settings.topics.customers, initial)[0] == len(numbers)
    moves = {**MOVED_IN, **MOVED_OUT}
    moved = write_customer_csv(tmp_path / "moved.csv", [customer_row(int(cid[1:]), pc) for cid, pc in moves.items()])
    load_customers(broker.bootstrap, settings.topics.customers, moved)
    postcodes.update(moves)
    pipeline = (settings.topics.customers, settings.topics.events)
    assert wait_drained(broker.bootstrap, start_worker.app_id, pipeline, 120, settle=1, alive=lambda: worker.running)

    # Who the outage should reach, by where they live now; every customer here has an email address.
    affected = {cid for cid, pc in postcodes.items() if pc[:4] in HIT}
    assert MOVED_IN.keys() <= affected and not MOVED_OUT.keys() & affected
    produce_json(broker.bootstrap, settings.topics.outages,
                 [("OUT-UTR-1", outage_event("o-start", "outage.started",
                                             {"service": "internet", "areas": HIT,
                                              "expected_end": "2026-11-25T23:00:00+01:00"}))])
    started = notices(broker.bootstrap, settings.topics.notifications, "outage-started", len(affected))
    assert set(started) == affected and set(started.values()) == {1}

    produce_json(broker.bootstrap, settings.topics.outages,
                 [("OUT-UTR-1", outage_event("o-end", "outage.resolved",
                                             {"resolved_at": datetime.now(timezone.utc).isoformat()}))])
    resolved = notices(broker.bootstrap, settings.topics.notifications, "outage-resolved", len(affected))
    assert set(resolved) == affected and set(resolved.values()) == {1}
    assert worker.running
    assert b"Traceback" not in worker.log().encode()
