"""Poison a running pipeline in the middle of a fan-out, fill the outbox disk: nothing lost, nothing doubled.

``FOREWARN_TEST_POISON`` makes one hop fail on the records holding a marker, as
a bug would. Each poisoned record must end on the dead-letter topic naming the
hop; every other message must reach its customer exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streams.kafka.admin import produce_json, read_topic, wait_drained
from streams.tools.local_providers import LocalProviders
from tests.conftest import event
from tests.faults.test_crashes import Pipeline, Scale, account, all_taken, explain, report, wait_until

# One after the other on one xdist worker, beside the kill tests: each fans out against a deadline.
pytestmark = [pytest.mark.broker, pytest.mark.faults, pytest.mark.xdist_group("poison")]
MARKER = "POISON"


def poisoned_orders(marker: str, count: int) -> list[tuple[str, dict]]:
    """Orders whose bytes hold ``marker``, for customers with no rule to trigger: only the poison shows."""
    data = {"items": [{"sku": "RTR-1", "name": "Router", "qty": 1, "unit_price": 10.0}], "total": 10.0,
            "currency": "EUR"}
    return [(f"C9{i:05d}", event(f"ord-{marker}-{i}", "order.placed", {**data, "order_id": f"ORD-{marker}-{i}"},
                                 f"C9{i:05d}")) for i in range(count)]


def dead_letters(bootstrap: str, topic: str) -> list[dict]:
    return [orjson.loads(m.value) for m in read_topic(bootstrap, topic, timeout=30)]


def test_records_that_make_each_hop_fail_in_the_middle_of_a_fan_out_are_dead_lettered_and_nothing_else_is_lost(
        broker, settings, start_worker, tmp_path):
    size = Scale(recipients=1_500, kills=0, carts=30, rate=1000.0)
    with LocalProviders(settings, broker.bootstrap, sms_rate=size.rate * 1.2, email_rate=size.rate * 1.2,
                        post_callbacks=False) as local:
        pipeline = Pipeline(broker, settings, start_worker, tmp_path, size, local)
        # Orders carrying a marker fail in ingest or in decide; one recipient's notification fails in dispatch.
        victim = sorted(pipeline.expected.sms)[0]
        pipeline.expected.sms -= {victim}
        victim_id = f"C{int(victim[5:]):06d}"
        pipeline.env["FOREWARN_TEST_POISON"] = f"ingest:{MARKER}-I,decide:{MARKER}-D,dispatch:{victim_id}"
        worker = pipeline.start()
        pipeline.load(worker)
        pipeline.outage()
        carts = pipeline.carts_in_background(2.0)
        for _ in range(5):  # poison arriving while the fan-out is decided and sent
            produce_json(broker.bootstrap, settings.topics.orders,
                         poisoned_orders(f"{MARKER}-I", 2) + poisoned_orders(f"{MARKER}-D", 2))
            time.sleep(0.2)
        carts.join()
        fake = local.imitation
        finished = wait_until(lambda: all_taken(fake, pipeline.expected), 180)
        assert wait_drained(broker.bootstrap, start_worker.app_id,
                            (*settings.topics.source(), settings.topics.events, settings.topics.notifications),
                            60, alive=lambda: worker.running), worker.log()[-3000:]
        time.sleep(2)
        figures = account(fake, pipeline.expected)
        dead = Counter(d.get("hop") for d in dead_letters(broker.bootstrap, settings.topics.deadletter)
                       if "InjectedFault" in d["reason"])
        report("poison", recipients=size.recipients, dead=dict(dead), **figures)
        if not finished:
            explain(broker, pipeline, fake)
        assert worker.running, worker.log()[-3000:]
        assert figures == {"sms_lost": 0, "sms_duplicates": 0, "sms_unexpected": 0,
                           "email_lost": 0, "email_duplicates": 0, "email_unexpected": 0}
        assert dead == {"ingest": 10, "decide": 10, "dispatch": 1}


def outbox_lines(outbox: Path) -> list[dict]:
    path = outbox / "notifications.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.is_file() else []


class _NoProviders:
    env: dict[str, str] = {}  # no provider settings: the worker writes to its outbox


def test_a_full_outbox_disk_during_a_fan_out_parks_the_messages_and_sends_each_once_when_space_returns(
        broker, settings, start_worker, tmp_path):
    recipients = 300
    pipeline = Pipeline(broker, settings, start_worker, tmp_path, Scale(recipients, 0, 0, 1000.0), _NoProviders())
    pipeline.env.update({"FOREWARN_RETRY_DELAY": "2", "FOREWARN_DISPATCH_ATTEMPTS": "2"})
    outbox = tmp_path / "outbox"  # where start_worker points the worker's outbox
    worker = pipeline.start()
    pipeline.load(worker)
    (outbox / "notifications.jsonl").unlink(missing_ok=True)
    (outbox / "notifications.jsonl").symlink_to("/dev/full")  # ENOSPC on every write
    pipeline.outage()
    retry = settings.topics.retry
    assert wait_until(lambda: len(read_topic(broker.bootstrap, retry, timeout=2)) >= recipients, 120), \
        worker.log()[-3000:]
    assert wait_until(lambda: len(read_topic(broker.bootstrap, retry, timeout=2)) >= 2 * recipients, 60), \
        worker.log()[-3000:]  # a retry round on the full disk: parked again, not dropped
    (outbox / "notifications.jsonl").unlink()  # space returns
    assert wait_until(lambda: len(outbox_lines(outbox)) >= recipients, 120), worker.log()[-3000:]
    time.sleep(3)  # a double would be in by now
    sent = Counter(line["to"] for line in outbox_lines(outbox))
    dead = dead_letters(broker.bootstrap, settings.topics.deadletter)
    report("full-outbox", recipients=recipients, written=sum(sent.values()),
           parked=len(read_topic(broker.bootstrap, retry, timeout=5)), dead=len(dead))
    assert set(sent) == pipeline.expected.sms and max(sent.values()) == 1  # lost 0, doubled 0
    assert dead == []
    assert (outbox / "notifications.jsonl").read_bytes().endswith(b"\n")
    assert worker.running and "Traceback" not in worker.log()
