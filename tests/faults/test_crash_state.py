"""What a crash leaves on Kafka: enough to carry on with nothing lost.

- The decide agent records each notification id it emits in the customer's
  state (``states`` changelog), and a re-delivered event whose id is recorded
  is suppressed as a duplicate. If that record reached Kafka before the
  notification did, a SIGKILL between the two would lose the message for good:
  the replay says "already sent". So after each kill, read both topics as the
  broker holds them and check that every recorded id is on ``notifications``.
- A restarted worker rebuilds its tables from the changelogs, to their real
  end: a customer missing from the directory after a restart is a customer an
  outage notice never reaches.
"""

from __future__ import annotations

import random
import time

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.tools.customer_files import write_customer_csv
from streams.core.state import decode_state
from streams.kafka.admin import API_VERSION, lag, produce_json, read_topic, wait_drained
from streams.tools.load_customers import load_customers
from tests.conftest import event, write
from tests.faults.test_crashes import OUTAGE_AREAS_FROM, PER_AREA, RULES, row, wait_until

# Run one after the other on one xdist worker: each kills and restarts workers against a deadline.
pytestmark = [pytest.mark.broker, pytest.mark.faults, pytest.mark.xdist_group("kills")]


class Progress:
    """About how many outcomes the decide agent has produced, notified or suppressed (a fan-out decided again
    after a restart adds one per recipient too). Tansu's ListOffsets lags by a batch: enough to time a kill."""

    def __init__(self, bootstrap: str, settings):
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API_VERSION, enable_auto_commit=False)
        self.partitions = [TopicPartition(topic, p)
                           for topic in (settings.topics.notifications, settings.topics.suppressed)
                           for p in self.consumer.partitions_for_topic(topic) or ()]

    def decided(self) -> int:
        return sum(self.consumer.end_offsets(self.partitions).values())

    def past(self, threshold: float, before: int, idle: float = 3.0):
        """A check: the count has reached ``threshold``, or stood still after moving on from ``before`` (or long).

        Made when the worker is ready: the time it stands still is counted from then.
        """
        last = {"count": before, "since": time.monotonic()}

        def check() -> bool:
            count = self.decided()
            if count != last["count"]:
                last.update(count=count, since=time.monotonic())
            still = time.monotonic() - last["since"]
            return count >= threshold or (still > idle and count > before) or still > 10 * idle

        return check

    def close(self) -> None:
        self.consumer.close()


def recorded_ids(bootstrap: str, changelog: str) -> set[str]:
    """Notification ids the latest state of each customer says were emitted."""
    latest: dict[bytes, bytes | None] = {}
    for message in read_topic(bootstrap, changelog, timeout=60):
        latest[message.key] = message.value
    return {i for value in latest.values() if value for i in decode_state(value).sent_ids}


def test_a_killed_fanout_never_leaves_a_state_ahead_of_its_notifications(broker, settings, start_worker, tmp_path,
                                                                         long_run):
    recipients, kills = (60_000, 5) if long_run else (20_000, 2)
    rng = random.Random()
    areas = [str(OUTAGE_AREAS_FROM + a) for a in range(recipients // PER_AREA)]
    customers = write_customer_csv(tmp_path / "customers.csv",
                                   [row(n, f"{areas[n % len(areas)]}AB", sms=True) for n in range(recipients)])
    env = {"FOREWARN_RULES": str(write(tmp_path / "rules.yaml", RULES)), "FOREWARN_CLOCK": "wall",
           "FOREWARN_SMS_RATE": "100000"}  # the outbox: dispatch keeps up, deciding is what is interrupted
    worker = start_worker(**env)
    load_customers(broker.bootstrap, settings.topics.customers, customers)
    assert wait_drained(broker.bootstrap, start_worker.app_id, settings.topics.source(), 180,
                        alive=lambda: worker.running), worker.log()[-3000:]
    notifications, changelog = settings.topics.notifications, f"{start_worker.app_id}-states-changelog"
    checked, progress = [], Progress(broker.bootstrap, settings)
    # Counted before the worker can decide anything: a fan-out decided fast would otherwise be past its kill point.
    decided_before = progress.decided()
    produce_json(broker.bootstrap, settings.topics.outages, [("OUT-S", event(
        "out-s", "outage.started", {"outage_id": "OUT-S", "service": "internet", "areas": areas}))])
    for kill in range(kills):
        # Somewhere in deciding the fan-out (again), mostly after some states were logged.
        threshold = decided_before + rng.uniform(0.3, 0.8) * recipients
        if kill:  # a restart recovers the tables first: 20 s and more for 60,000 customers
            assert wait_until(lambda: "]: Ready" in worker.log(), 180, 0.05), worker.log()[-3000:]
        # A restarted worker decides again only the partitions not committed: it may stop short of the
        # threshold. Then it is killed when it has stopped; the last assertion checks one kill came mid-way.
        wait_until(progress.past(threshold, decided_before), 120, 0.005)
        assert worker.running, worker.log()[-3000:]
        worker.kill()
        time.sleep(1)  # a produce request already on its way is still written after the kill
        recorded = recorded_ids(broker.bootstrap, changelog)
        on_kafka = {orjson.loads(m.value)["id"] for m in read_topic(broker.bootstrap, notifications, timeout=60)}
        checked.append((len(recorded), len(on_kafka)))
        assert recorded <= on_kafka, (f"{len(recorded - on_kafka)} notifications recorded in the state "
                                      f"but not on {notifications}", checked)
        decided_before = progress.decided()  # the killed worker adds no more
        worker = start_worker(**env)
    progress.close()
    wanted, told = {f"+3161{n:07d}" for n in range(recipients)}, set()

    def all_told() -> bool:  # gathered over the reads: one read that stops short of the end misses nothing
        told.update(orjson.loads(m.value)["to"] for m in read_topic(broker.bootstrap, notifications, timeout=60))
        return wanted <= told

    finished = wait_until(all_told, 240, 2.0)
    copies = sum(1 for m in read_topic(broker.bootstrap, settings.topics.events, timeout=60) if m.key == b"OUT-S")
    print(f"FAULTS state-order: recipients={recipients}, kills={kills}, recorded_and_on_kafka_at_kills={checked}, "
          f"outage_copies_on_events={copies}")
    assert finished, (f"{len(wanted - told)} customers not told; not committed: " + ", ".join(
        f"{topic} {lag(broker.bootstrap, start_worker.app_id, [topic])}"
        for topic in (settings.topics.events, notifications)), worker.log()[-3000:])
    assert any(recorded and on_kafka < recipients for recorded, on_kafka in checked), \
        "no kill came in the middle of a fan-out with states already logged: the check proved nothing"


def test_a_restarted_worker_knows_every_customer_loaded_before_the_kill(broker, settings, start_worker, tmp_path):
    recipients = 4_000  # about 1,000 a partition: changelog batches larger than one kafka-python poll
    areas = [str(OUTAGE_AREAS_FROM + a) for a in range(recipients // PER_AREA)]
    customers = write_customer_csv(tmp_path / "customers.csv",
                                   [row(n, f"{areas[n % len(areas)]}AB", sms=True) for n in range(recipients)])
    env = {"FOREWARN_RULES": str(write(tmp_path / "rules.yaml", RULES)), "FOREWARN_CLOCK": "wall",
           "FOREWARN_SMS_RATE": "100000"}
    worker = start_worker(**env)
    load_customers(broker.bootstrap, settings.topics.customers, customers)
    assert wait_drained(broker.bootstrap, start_worker.app_id, settings.topics.source(), 180,
                        alive=lambda: worker.running), worker.log()[-3000:]
    time.sleep(1)  # the last changelog records on their way
    worker.kill()
    worker = start_worker(**env)
    produce_json(broker.bootstrap, settings.topics.outages, [("OUT-R", event(
        "out-r", "outage.started", {"outage_id": "OUT-R", "service": "internet", "areas": areas}))])
    wanted = {f"+3161{n:07d}" for n in range(recipients)}
    told: set[str] = set()

    def all_told() -> bool:
        told.update(orjson.loads(m.value)["to"] for m in read_topic(broker.bootstrap, settings.topics.notifications))
        return wanted <= told

    assert wait_until(all_told, 120, 2.0), (f"{len(wanted - told)} customers not told", worker.log()[-3000:])
