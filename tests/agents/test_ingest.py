"""The ingest hop with fakes: dead letters keep the original bytes, events go to their owner's partition."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from kafka.errors import KafkaTimeoutError

from streams.agents import marks
from streams.agents.contain import Poison
from streams.agents.ingest import END_GRACE, Ingest
from streams.core.clock import NEVER
from streams.core.directory import owner_partition
from streams.kafka.catch_up import CatchUp
from streams.kafka.sends import Sends
from streams.settings import ROOT, Settings
from streams.tools.customer_files import upsert_event
from tests.fakes import FakeProducer, Offsets, fake_pipeline

DEMO_EVENTS = (ROOT / "config" / "demo" / "events.jsonl").read_bytes().splitlines()
OUTAGE = next(line for line in DEMO_EVENTS if b'"outage.started"' in line)
DELAY = next(line for line in DEMO_EVENTS if b'"order.delayed"' in line)
CUSTOMER = orjson.loads((ROOT / "config" / "demo" / "customers.jsonl").read_bytes().splitlines()[0])
NOW = datetime(2026, 11, 25, 16, 0, tzinfo=timezone.utc)


def run(values: list[bytes], catch_up: CatchUp | None = None, poison: Poison | None = None, received: float = 0.0,
        settings: Settings | None = None, topic: str = "orders"):
    pipeline, producer, offsets = fake_pipeline(settings), FakeProducer(auto_ack=True), Offsets()
    catch_up = catch_up or CatchUp([])
    hop = Ingest(pipeline, Sends(lambda: producer), catch_up, poison, partitions_of=lambda _: 3, now=lambda: NOW)
    events = [offsets.event(topic, 0, value, key=b"k", timestamp=received) for value in values]
    asyncio.run(hop.batch(events))
    return pipeline, producer


def with_fields(line: bytes, **fields) -> bytes:
    return orjson.dumps({**orjson.loads(line), **fields})


def dead_and_routed(pipeline, producer) -> tuple[list[dict], list[bytes]]:
    topics = pipeline.settings.topics
    return ([r.json() for r in producer.on(topics.deadletter)],
            [r.value for r in producer.on(topics.events) if r.key != marks.KEY])


def watermarks(pipeline, producer) -> list[tuple[int, dict, dict]]:
    return [(r.partition, *marks.decode(r.value)) for r in producer.on(pipeline.settings.topics.events)
            if r.key == marks.KEY]


def test_behind_each_batch_every_partition_learns_how_far_each_input_is_read_in_event_time():
    late, early = with_fields(DELAY, id="late"), with_fields(DELAY, id="early", occurred_at="2026-11-25T08:00:00+01:00")
    pipeline, producer = run([late, early], settings=Settings(clock="event"))
    routed = producer.on(pipeline.settings.topics.events)
    assert [r.key == marks.KEY for r in routed] == [False, False, True, True, True, True]  # behind the events
    told = watermarks(pipeline, producer)
    latest = datetime.fromisoformat(orjson.loads(late)["occurred_at"])
    partitions = {"orders": 3, "carts": 3, "outages": 3, "support": 3}
    assert told == [(p, {("orders", 0): latest}, partitions) for p in range(4)]


@pytest.mark.parametrize("occurred, received, expected", [
    (-10, -5, -10),  # its event time
    (-1, -5, -5),  # published late: no later than the broker took it
    (30, 60, 0),  # dated ahead: never past now
])
def test_on_the_wall_clock_an_input_is_read_up_to_its_event_time_bounded_by_broker_time_and_now(
        occurred, received, expected):
    minutes = lambda n: NOW + timedelta(minutes=n)  # noqa: E731
    record = with_fields(DELAY, occurred_at=minutes(occurred).isoformat())
    pipeline, producer = run([record], received=minutes(received).timestamp(), settings=Settings(clock="wall"))
    assert {told[("orders", 0)] for _, told, _ in watermarks(pipeline, producer)} == {minutes(expected)}


def test_customer_records_tell_no_watermark():
    record = orjson.dumps(upsert_event(CUSTOMER, NOW))
    pipeline, producer = run([record], settings=Settings(clock="event"), topic="customers")
    assert watermarks(pipeline, producer) == []


class AllAtEnd:
    """InputEnds over these inputs, each read to its end right after what was processed."""

    def __init__(self, inputs):
        self.inputs = inputs

    async def read_to_end(self, processed, known=()):
        return [(source, processed.get(source, -1) + 1) for source in self.inputs if source not in known]


def told_at_end(pipeline, producer, after: int = 0) -> list[set]:
    return [{source for source, moment in told.items() if moment is None}
            for partition, told, _ in watermarks(pipeline, producer)[after:] if partition == 0]


def test_in_event_time_an_input_read_to_its_end_is_told_so_once_quiet_and_holds_back_again_ahead_of_new_events():
    now = [100.0]
    pipeline, producer, offsets = fake_pipeline(Settings(clock="event")), FakeProducer(auto_ack=True), Offsets()
    hop = Ingest(pipeline, Sends(lambda: producer), CatchUp([]), partitions_of=lambda _: 1, now=lambda: NOW,
                 monotonic=lambda: now[0])
    ends = AllAtEnd([("orders", 0), ("carts", 0)])
    asyncio.run(hop.tell_read_to_end(ends))  # nothing read yet: both empty, nothing to wait for
    assert told_at_end(pipeline, producer) == [{("orders", 0), ("carts", 0)}]
    asyncio.run(hop.batch([offsets.event("orders", 0, DELAY, key=b"k")]))
    owner = owner_partition(orjson.loads(DELAY)["customer_id"], pipeline.settings.partitions)
    on_owner = [r for r in producer.on(pipeline.settings.topics.events) if r.partition == owner][1:]
    # Held back again before the event, so the decide partition never reads it while both count as ended.
    assert [marks.decode(r.value)[0] if r.key == marks.KEY else "event" for r in on_owner] == [
        {("orders", 0): NEVER, ("carts", 0): NEVER}, "event",
        {("orders", 0): datetime.fromisoformat(orjson.loads(DELAY)["occurred_at"])}]
    now[0] += 2.9
    asyncio.run(hop.tell_read_to_end(ends))
    assert len(watermarks(pipeline, producer)) == 12  # heard of 2.9 s ago: still waiting
    now[0] += 0.1
    asyncio.run(hop.tell_read_to_end(ends))
    assert told_at_end(pipeline, producer, 12) == [{("orders", 0), ("carts", 0)}]
    asyncio.run(hop.tell_read_to_end(ends))
    assert len(watermarks(pipeline, producer)) == 16  # said once
    asyncio.run(hop.batch([offsets.event("carts", 0, DELAY, key=b"k")]))
    assert [told for p, told, _ in watermarks(pipeline, producer)[16:] if p == owner][0] == {
        ("orders", 0): datetime.fromisoformat(orjson.loads(DELAY)["occurred_at"]), ("carts", 0): NEVER}


def test_on_the_wall_clock_an_input_read_to_its_end_is_read_up_to_when_that_was_checked_told_every_tick():
    now = [NOW]
    pipeline, producer, offsets = fake_pipeline(Settings(clock="wall")), FakeProducer(auto_ack=True), Offsets()
    hop = Ingest(pipeline, Sends(lambda: producer), CatchUp([]), partitions_of=lambda _: 1, now=lambda: now[0])
    asyncio.run(hop.batch([offsets.event("orders", 0, DELAY, key=b"k", timestamp=NOW.timestamp())]))
    for _ in range(2):
        now[0] += timedelta(seconds=1)
        asyncio.run(hop.tell_read_to_end(AllAtEnd([("orders", 0)])))
    told = [marks_told for partition, marks_told, _ in watermarks(pipeline, producer) if partition == 0]
    assert told[1:] == [{("orders", 0): now[0] - timedelta(seconds=1) - END_GRACE},
                        {("orders", 0): now[0] - END_GRACE}]


class EndsFoundBeforeARecord(AllAtEnd):
    """The end is read, then a record arrives and is read before the answer is used."""

    def __init__(self, inputs, hop, record):
        super().__init__(inputs)
        self.hop, self.record = hop, record

    async def read_to_end(self, processed, known=()):
        found = await super().read_to_end(processed, known)
        await self.hop.batch([self.record])
        return found


@pytest.mark.parametrize("clock", ["wall", "event"])
def test_an_input_read_from_while_its_end_was_checked_is_not_told_read_to_its_end(clock):
    pipeline, producer, offsets = fake_pipeline(Settings(clock=clock)), FakeProducer(auto_ack=True), Offsets()
    hop = Ingest(pipeline, Sends(lambda: producer), CatchUp([]), partitions_of=lambda _: 1, now=lambda: NOW,
                 monotonic=lambda: 1000.0)
    record = offsets.event("orders", 0, DELAY, key=b"k", timestamp=(NOW - timedelta(hours=1)).timestamp())
    asyncio.run(hop.tell_read_to_end(EndsFoundBeforeARecord([("orders", 0)], hop, record)))
    occurred = datetime.fromisoformat(orjson.loads(DELAY)["occurred_at"])
    expected = min(occurred, NOW - timedelta(hours=1)) if clock == "wall" else occurred
    assert [told for partition, told, _ in watermarks(pipeline, producer) if partition == 0] == [
        {("orders", 0): expected}]


NESTED = with_fields(next(line for line in DEMO_EVENTS if b'"cart.updated"' in line),
                     data={"cart_id": "CART-1", "items": "DEEP"}).replace(b'"DEEP"', b"[" * 1000 + b"]" * 1000)


@pytest.mark.parametrize("refused, reason", [
    (with_fields(DELAY, occurred_at="9999-12-31T23:30:00Z"), "outside 2000 to 2100"),
    (with_fields(DELAY, occurred_at="1970-01-01T00:00:00Z"), "outside 2000 to 2100"),
    (NESTED, "nested deeper than"),
    (with_fields(DELAY, id="x" * 20_000), "characters exceeds the limit"),
])
def test_an_event_past_the_bounds_is_dead_lettered_with_the_reason_and_the_events_after_it_still_flow(refused, reason):
    follower = with_fields(DELAY, id="after")
    [dead], routed = dead_and_routed(*run([refused, follower]))
    assert reason in dead["reason"] and dead["hop"] == "ingest"
    assert base64.b64decode(dead["value_b64"]) == refused
    assert routed == [follower]


def test_an_event_dated_hours_after_the_broker_took_it_is_refused_one_within_the_hour_is_not():
    occurred = datetime.fromisoformat(orjson.loads(DELAY)["occurred_at"])
    received = occurred.timestamp()
    late = with_fields(DELAY, id="ahead", occurred_at=(occurred + timedelta(hours=2)).isoformat())
    close = with_fields(DELAY, id="close", occurred_at=(occurred + timedelta(minutes=30)).isoformat())
    [dead], routed = dead_and_routed(*run([late, close], received=received))
    assert "after the broker received the event" in dead["reason"]
    assert routed == [close]


def test_a_hop_failure_on_one_event_is_a_dead_letter_naming_the_hop_and_the_exception_and_the_batch_goes_on():
    poisoned = with_fields(DELAY, id="POISON-1")
    after = with_fields(DELAY, id="after")
    [dead], routed = dead_and_routed(*run([DELAY, poisoned, after], poison=Poison("ingest:POISON")))
    assert dead["reason"].startswith("ingest: InjectedFault") and dead["hop"] == "ingest"
    assert (dead["topic"], dead["offset"]) == ("orders", 1)
    assert routed == [DELAY, after]


def test_a_dead_letter_that_kafka_refuses_is_sent_again_until_it_is_taken_and_the_batch_waits_for_it():
    pipeline, producer = fake_pipeline(), FakeProducer()
    hop = Ingest(pipeline, Sends(lambda: producer), CatchUp([]), Poison("ingest:POISON"))
    hop.sends.retry_delay = 0.01
    event = Offsets().event("orders", 0, with_fields(DELAY, id="POISON-1"))

    async def scenario():
        batch = asyncio.ensure_future(hop.batch([event]))
        await asyncio.sleep(0.05)
        producer.fail(0, KafkaTimeoutError())
        await asyncio.sleep(0.1)
        assert not batch.done()  # the offset is not acked while its dead letter is not on Kafka
        producer.acknowledge()
        await batch

    asyncio.run(scenario())
    dead = producer.on(pipeline.settings.topics.deadletter)
    assert len(dead) == 2 and dead[0].value == dead[1].value


def test_bytes_that_are_no_event_become_a_dead_letter_with_the_original_bytes_and_offset():
    garbage = b"\xff not json"
    pipeline, producer = run([DELAY, garbage])
    [dead] = producer.on(pipeline.settings.topics.deadletter)
    record = dead.json()
    assert base64.b64decode(record["value_b64"]) == garbage
    assert (record["topic"], record["partition"], record["offset"]) == ("orders", 0, 1)
    assert record["reason"] and dead.key == b"k"
    assert len(dead_and_routed(pipeline, producer)[1]) == 1  # the valid event still flows


def test_a_customer_event_goes_to_the_partition_that_owns_the_customer_and_an_outage_to_every_partition():
    pipeline, producer = run([DELAY, OUTAGE])
    routed = [r for r in producer.on(pipeline.settings.topics.events) if r.key != marks.KEY]
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
