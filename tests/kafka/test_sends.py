"""``Sends`` and ``ChangelogTable`` over a fake producer: what goes how, in which order, and when it waits."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from streams.kafka.sends import ChangelogTable, Sends
from tests.fakes import FakeProducer, FakeTable

TOPIC = "notifications"


def sends_over(producer: FakeProducer, *, bulk_after: int = 64, in_flight: int = 20_000) -> Sends:
    sends = Sends(lambda: producer)
    sends.bulk_after, sends.in_flight = bulk_after, in_flight
    return sends


async def settled_loop(rounds: int = 20) -> None:
    """Let every runnable task run as far as it can."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def message(i: int) -> tuple[bytes, bytes]:
    return f"k{i}".encode(), f"v{i}".encode()


# -- send or record batch --------------------------------------------------------------------------


@pytest.mark.parametrize("bulk_after, count, alone, batched", [
    (3, 2, 2, 0),   # fewer than bulk_after: every one alone
    (3, 3, 3, 0),   # exactly bulk_after
    (3, 7, 3, 4),   # the rest into one record batch
    (0, 5, 0, 5),   # no message alone at all
])
def test_the_first_bulk_after_messages_go_alone_the_rest_in_record_batches(bulk_after, count, alone, batched):
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer, bulk_after=bulk_after)
        for i in range(count):
            await sends.send(TOPIC, *message(i), partition=1)
        await sends.end_batch()
        return producer

    producer = asyncio.run(scenario())
    assert [r.via for r in producer.records] == ["send"] * alone + ["batch"] * batched
    assert [r.value for r in producer.records] == [message(i)[1] for i in range(count)]  # nothing lost or reordered
    assert all(r.partition == 1 and r.topic == TOPIC for r in producer.records)


def test_a_message_without_partition_always_goes_alone():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer, bulk_after=0)
        for i in range(3):
            await sends.send(TOPIC, *message(i))
        await sends.end_batch()
        return producer

    producer = asyncio.run(scenario())
    assert [(s.via, s.partition) for s in producer.shipments] == [("send", None)] * 3


def test_record_batches_are_kept_per_topic_and_partition():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer, bulk_after=0)
        for topic, partition, i in [("a", 0, 0), ("a", 1, 1), ("b", 0, 2), ("a", 0, 3), ("b", 0, 4)]:
            await sends.send(topic, *message(i), partition=partition)
        assert producer.shipments == []  # nothing shipped before the batch of events ends
        await sends.end_batch()
        return producer

    producer = asyncio.run(scenario())
    shipped = {(s.topic, s.partition): [r.value for r in s.records] for s in producer.shipments}
    assert shipped == {("a", 0): [b"v0", b"v3"], ("a", 1): [b"v1"], ("b", 0): [b"v2", b"v4"]}
    assert all(s.via == "send_batch" for s in producer.shipments)


def test_a_full_record_batch_is_shipped_and_a_new_one_opened():
    async def scenario():
        producer = FakeProducer(batch_capacity=2)
        sends = sends_over(producer, bulk_after=0)
        for i in range(3):
            await sends.send(TOPIC, *message(i), partition=0)
        shipped_before_end = [[r.value for r in s.records] for s in producer.shipments]
        await sends.end_batch()
        return producer, shipped_before_end

    producer, shipped_before_end = asyncio.run(scenario())
    assert shipped_before_end == [[b"v0", b"v1"]]  # shipped as soon as the third did not fit
    assert [[r.value for r in s.records] for s in producer.shipments] == [[b"v0", b"v1"], [b"v2"]]
    assert len(producer.builders) == 2


def test_an_empty_record_batch_is_not_shipped():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer)
        await sends.end_batch()
        await sends.flush()
        return producer

    assert asyncio.run(scenario()).shipments == []


def test_a_new_batch_of_events_starts_with_messages_alone_again():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer, bulk_after=1)
        for _ in range(2):
            for i in range(2):
                await sends.send(TOPIC, *message(i), partition=0)
            await sends.end_batch()
        return producer

    assert [r.via for r in asyncio.run(scenario()).records] == ["send", "batch", "send", "batch"]


# -- table changes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value_type, value, logged", [
    (bytes, b"raw bytes", b"raw bytes"),            # a bytes table is logged as it is
    (None, {"pending": {}}, b'{"pending":{}}'),     # others as JSON
])
def test_end_batch_logs_each_changed_key_once_with_its_latest_value(value_type, value, logged):
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer)
        table = ChangelogTable(FakeTable("states", value_type), sends)
        sends.partition = 2
        table["C1"] = "first"
        table["C1"] = value
        await sends.end_batch()
        return producer, table

    producer, table = asyncio.run(scenario())
    assert table.table.data == {"C1": value}
    (record,) = producer.records
    assert (record.topic, record.partition, record.key, record.value) == (
        "forewarn-states-changelog", 2, orjson.dumps("C1"), logged)


def test_a_key_is_logged_in_the_partition_of_the_event_that_changed_it():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer)
        table = ChangelogTable(FakeTable("states"), sends)
        for partition, key in [(0, "A"), (3, "B"), (1, "A")]:
            sends.partition = partition
            table[key] = {"from": partition}
        await sends.end_batch()
        return producer

    logged = {r.key: r.partition for r in asyncio.run(scenario()).records}
    assert logged == {orjson.dumps("A"): 1, orjson.dumps("B"): 3}


def test_a_deleted_key_is_logged_as_a_tombstone():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer)
        table = ChangelogTable(FakeTable("customers", bytes), sends)
        sends.partition = 0
        table["C1"] = b"{}"
        await sends.end_batch()
        del table["C1"]
        await sends.end_batch()
        return producer, table

    producer, table = asyncio.run(scenario())
    assert "C1" not in table
    assert [r.value for r in producer.records] == [b"{}", None]


def test_a_change_outside_an_event_raises():
    sends = sends_over(FakeProducer())
    table = ChangelogTable(FakeTable("states"), sends)
    with pytest.raises(RuntimeError, match="outside an event"):
        table["C1"] = {}


def test_changes_due_once_enough_keys_changed():
    sends = sends_over(FakeProducer())
    sends.changes_per_flush = 2
    table = ChangelogTable(FakeTable("states"), sends)
    sends.partition = 0
    table["A"] = 1
    table["A"] = 2
    assert not sends.changes_due  # the same key twice is one change
    table["B"] = 1
    assert sends.changes_due


# -- settle: the changelog after the notifications ---------------------------------------------------


def test_settle_logs_the_state_only_after_every_earlier_message_is_acknowledged():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer, bulk_after=1)
        states = ChangelogTable(FakeTable("states"), sends)
        sends.partition = 0
        for i in range(3):  # one alone, two in a record batch
            await sends.send(TOPIC, *message(i), partition=0)
        states["C1"] = {"ledger": ["n1"]}
        settling = asyncio.create_task(sends.settle())
        await settled_loop()
        assert not settling.done()
        assert producer.topics() == [TOPIC] * 3  # the batch was shipped, the state was not
        producer.acknowledge(0)
        await settled_loop()
        assert not settling.done() and producer.topics() == [TOPIC] * 3  # one batch still unacknowledged
        producer.acknowledge(1)
        await settling
        return producer

    producer = asyncio.run(scenario())
    assert producer.topics() == [TOPIC] * 3 + ["forewarn-states-changelog"]


def test_end_batch_does_not_wait_for_acknowledgements():
    """The contrast that makes ``settle`` necessary: ``end_batch`` ships the state next to the messages."""
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer)
        states = ChangelogTable(FakeTable("states"), sends)
        sends.partition = 0
        await sends.send(TOPIC, *message(0), partition=0)
        states["C1"] = {}
        await asyncio.wait_for(sends.end_batch(), 1)
        return producer

    producer = asyncio.run(scenario())
    assert producer.topics() == [TOPIC, "forewarn-states-changelog"]
    assert len(producer.unacknowledged()) == 2


def test_flush_waits_for_every_message():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer, bulk_after=0)
        await sends.send(TOPIC, *message(0), partition=0)
        flushing = asyncio.create_task(sends.flush())
        await settled_loop()
        assert not flushing.done()
        producer.acknowledge()
        await asyncio.wait_for(flushing, 1)

    asyncio.run(scenario())


# -- the in-flight bound and failures ------------------------------------------------------------------


def test_more_than_in_flight_unacknowledged_waits_for_the_oldest_half():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer, in_flight=4)
        for i in range(4):
            await asyncio.wait_for(sends.send(TOPIC, *message(i), partition=0), 1)  # at the bound: no wait
        fifth = asyncio.create_task(sends.send(TOPIC, *message(4), partition=0))
        await settled_loop()
        assert not fifth.done() and len(producer.shipments) == 5  # handed over, then waiting
        producer.acknowledge(0, 1)
        await settled_loop()
        assert not fifth.done()  # down to 3 unacknowledged: still above half the bound
        producer.acknowledge(2)
        await asyncio.wait_for(fifth, 1)
        return producer

    producer = asyncio.run(scenario())
    assert [s.future.done() for s in producer.shipments] == [True, True, True, False, False]


def test_the_bound_counts_messages_in_record_batches():
    async def scenario():
        producer = FakeProducer(batch_capacity=3)
        sends = sends_over(producer, bulk_after=0, in_flight=4)
        for i in range(6):  # two record batches of 3; the second is shipped when the seventh does not fit
            await sends.send(TOPIC, *message(i), partition=0)
        seventh = asyncio.create_task(sends.send(TOPIC, *message(6), partition=0))
        await settled_loop()
        assert not seventh.done()  # 6 messages unacknowledged in two record batches
        producer.acknowledge(0)
        await settled_loop()
        assert not seventh.done()  # 3 left: still above half the bound
        producer.acknowledge(1)
        await asyncio.wait_for(seventh, 1)

    asyncio.run(scenario())


class Refused(Exception):
    pass


async def _next_send(sends: Sends) -> None:
    await sends.send(TOPIC, *message(9), partition=0)


async def _flush(sends: Sends) -> None:
    await sends.flush()


async def _settle(sends: Sends) -> None:
    await sends.settle()


@pytest.mark.parametrize("then", [_next_send, _flush, _settle], ids=["next send", "flush", "settle"])
def test_a_failed_message_raises_later_not_swallowed(then):
    async def scenario():
        producer = FakeProducer(auto_ack=False)
        sends = sends_over(producer)
        await sends.send(TOPIC, *message(0), partition=0)
        producer.fail(0, Refused("broker said no"))
        with pytest.raises(Refused):
            await asyncio.wait_for(then(sends), 1)

    asyncio.run(scenario())


def test_a_failure_among_the_oldest_half_raises_from_the_waiting_send():
    async def scenario():
        producer = FakeProducer()
        sends = sends_over(producer, in_flight=2)
        for i in range(2):
            await sends.send(TOPIC, *message(i), partition=0)
        third = asyncio.create_task(sends.send(TOPIC, *message(2), partition=0))
        await settled_loop()
        producer.fail(0, Refused("broker said no"))
        producer.acknowledge(1)
        with pytest.raises(Refused):
            await asyncio.wait_for(third, 1)

    asyncio.run(scenario())
