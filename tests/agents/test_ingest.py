"""The ingest hop with fakes: dead letters keep the original bytes, events go to their owner's partition."""

from __future__ import annotations

import asyncio
import base64

from streams.agents.ingest import Ingest
from streams.core.directory import owner_partition
from streams.kafka.catch_up import CatchUp
from streams.kafka.sends import Sends
from streams.settings import ROOT
from tests.fakes import FakeProducer, Offsets, fake_pipeline

DEMO_EVENTS = (ROOT / "config" / "demo" / "events.jsonl").read_bytes().splitlines()
OUTAGE = next(line for line in DEMO_EVENTS if b'"outage.started"' in line)
DELAY = next(line for line in DEMO_EVENTS if b'"order.delayed"' in line)


def run(values: list[bytes], catch_up: CatchUp | None = None):
    pipeline, producer, offsets = fake_pipeline(), FakeProducer(auto_ack=True), Offsets()
    catch_up = catch_up or CatchUp([])
    hop = Ingest(pipeline, Sends(lambda: producer), catch_up)
    events = [offsets.event("orders", 0, value, key=b"k") for value in values]
    asyncio.run(hop.batch(events))
    return pipeline, producer


def test_bytes_that_are_no_event_become_a_dead_letter_with_the_original_bytes_and_offset():
    garbage = b"\xff not json"
    pipeline, producer = run([DELAY, garbage])
    [dead] = producer.on(pipeline.settings.topics.deadletter)
    record = dead.json()
    assert base64.b64decode(record["value_b64"]) == garbage
    assert (record["topic"], record["partition"], record["offset"]) == ("orders", 0, 1)
    assert record["reason"] and dead.key == b"k"
    assert len(producer.on(pipeline.settings.topics.events)) == 1  # the valid event still flows


def test_a_customer_event_goes_to_the_partition_that_owns_the_customer_and_an_outage_to_every_partition():
    pipeline, producer = run([DELAY, OUTAGE])
    routed = producer.on(pipeline.settings.topics.events)
    partitions = pipeline.settings.partitions
    assert [(r.key, r.partition) for r in routed[:1]] == [(b"C1010", owner_partition("C1010", partitions))]
    assert sorted(r.partition for r in routed[1:]) == list(range(partitions))
    assert {r.key for r in routed[1:]} == {b"OUT-20261125-01"} and all(r.value == OUTAGE for r in routed[1:])


def test_while_catching_up_every_processed_offset_is_recorded():
    catch_up = CatchUp([["orders"]])
    run([DELAY, b"{}", DELAY], catch_up)
    catch_up.targets({("orders", 0): 3})
    assert catch_up.advance({}) is True  # offsets 0..2 were processed: the stage is done
    behind = CatchUp([["orders"]])
    run([DELAY], behind)
    behind.targets({("orders", 0): 3})
    assert behind.advance({}) is False
