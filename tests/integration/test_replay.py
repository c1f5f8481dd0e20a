"""Live equals simulated at any speed: a generated week, produced at full speed, gives the simulator's messages.

Produced in the file's order and topic by topic, through one worker and
through two: the same notifications, ids and texts, as ``forewarn simulate``.
The full week is ``bench/replay.py`` (README, bench/RESULTS.md).
"""

from __future__ import annotations

import pytest

from streams.core.config import load_config
from streams.kafka.admin import wait_drained
from streams.tools.generate import WeekSpec, generate_week
from streams.tools.load_customers import load_customers
from streams.tools.replay import compare, produce_events, read_notifications
from streams.tools.simulate import simulate

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    out = tmp_path_factory.mktemp("week")
    generate_week(WeekSpec(customers=150, postcodes=15, outages=4), out)
    return out


def drained(broker, settings, app_id, workers) -> None:
    topics = (*settings.topics.source(), settings.topics.events, settings.topics.due, settings.topics.notifications)
    assert wait_drained(broker.bootstrap, app_id, topics, 180, settle=settings.event_idle + 4,
                        alive=lambda: all(w.running for w in workers)), workers[0].log()[-3000:]


@pytest.mark.parametrize("order, count", [("interleaved", 1), ("by-topic", 2)])
def test_the_week_produced_at_full_speed_gives_exactly_the_simulators_notifications(
        broker, settings, start_worker, tmp_path, week, order, count):
    workers = [start_worker() for _ in range(count)]
    load_customers(broker.bootstrap, settings.topics.customers, week / "customers.jsonl")
    drained(broker, settings, start_worker.app_id, workers)
    produce_events(broker.bootstrap, settings.topics.for_event_type,
                   (week / "events.jsonl").read_bytes().splitlines(), order)
    drained(broker, settings, start_worker.app_id, workers)

    simulate(load_config(settings), week / "customers.jsonl", week / "events.jsonl", tmp_path / "sim")
    simulated = read_notifications(tmp_path / "sim" / "notifications.jsonl")
    result = compare(read_notifications(tmp_path / "outbox" / "notifications.jsonl"), simulated)
    assert len(simulated) > 40 and {n["rule"] for n in simulated} >= {"cart-reminder", "outage-started"}
    assert result.identical, result.describe()
