"""Reading a replay's input straight from the topics (``streams.tools.topic_input``) on the embedded broker."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.errors import BrokerError
from streams.kafka.admin import client_options, ensure_topics, producer
from streams.kafka.embedded import free_port
from streams.settings import Settings
from streams.tools import topic_input
from streams.tools.topic_input import read_history

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
WEEK = timedelta(days=7)  # the window starts at 2026-11-23T12:00Z


def customer(customer_id: str, version: int) -> bytes:
    return orjson.dumps({"id": f"cust-{customer_id}-{version}", "type": "customer.upserted",
                         "occurred_at": f"2026-11-0{version}T08:00:00+01:00", "customer_id": customer_id,
                         "data": {"name": f"{customer_id} v{version}", "language": "nl"}})


def deleted(customer_id: str) -> bytes:
    return orjson.dumps({"id": f"forget-{customer_id}", "type": "customer.deleted",
                         "occurred_at": "2026-11-05T08:00:00Z", "customer_id": customer_id, "data": {}})


def event(event_id: str, event_type: str, occurred_at: str) -> bytes:
    return orjson.dumps({"id": event_id, "type": event_type, "occurred_at": occurred_at,
                         "customer_id": "C1", "data": {}})


def send(bootstrap: str, records: list[tuple]) -> None:
    """(topic, partition, key, value[, timestamp_ms]) in this order; one partition's records keep it."""
    sender = producer(bootstrap)
    try:
        for topic, partition, key, value, *stamp in records:
            sender.send(topic, key=key.encode() if key else None, value=value, partition=partition,
                        timestamp_ms=stamp[0] if stamp else None)
        sender.flush()
    finally:
        sender.close()


def ids(values: list[bytes]) -> list[str]:
    return [orjson.loads(value)["id"] for value in values]


@pytest.mark.broker
def test_customers_are_the_newest_upsert_per_key_without_the_tombstoned_or_deleted(broker, settings):
    topic = settings.topics.customers
    send(broker.bootstrap, [
        (topic, 0, "C1", customer("C1", 1)),  # 0
        (topic, 0, "C2", customer("C2", 1)),  # 1: C2's last write that counts
        (topic, 0, "C3", customer("C3", 1)),  # 2
        (topic, 0, "C1", customer("C1", 2)),  # 3: replaces C1's first
        (topic, 0, "C3", None),  # 4: tombstone
        (topic, 0, "C4", customer("C4", 1)),  # 5
        (topic, 0, "C4", deleted("C4")),  # 6: forgotten
        (topic, 0, "C2", b"{not json"),  # 7: skipped, C2 stays as it was
        (topic, 0, "C5", customer("C5", 1)),  # 8
        (topic, 0, "C3", customer("C3", 3)),  # 9: back after its tombstone
        (topic, 1, "C6", customer("C6", 1)),  # another partition: after partition 0's
    ])
    history = read_history(settings, broker.bootstrap, WEEK, now=NOW)
    assert history.customers == [customer("C2", 1), customer("C1", 2), customer("C5", 1), customer("C3", 3),
                                 customer("C6", 1)]
    assert history.events == []
    assert history.read == {"customers": 11, "orders": 0, "carts": 0, "outages": 0}
    assert history.skipped == 1
    assert history.since == datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


@pytest.mark.broker
def test_events_since_the_window_start_in_event_time_order_then_topic_partition_offset(broker, settings):
    old_stamp = int(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp() * 1000)
    send(broker.bootstrap, [
        ("orders", 0, "C1", event("o-late", "order.shipped", "2026-11-29T10:00:00Z")),
        ("outages", 1, None, event("out-tie", "outage.updated", "2026-11-25T10:00:00+01:00")),  # 09:00Z
        ("orders", 3, "C2", event("o-tie-p3", "order.delayed", "2026-11-25T09:00:00Z")),
        ("orders", 0, "C1", event("o-tie", "order.placed", "2026-11-25T09:00:00Z")),
        ("orders", 0, "C1", event("o-tie-b", "order.delayed", "2026-11-25T09:00:00.000Z")),
        ("carts", 2, "C1", event("c-tie", "cart.updated", "2026-11-25T09:00:00Z")),
        ("orders", 0, "C1", event("o-old", "order.placed", "2026-11-20T09:00:00Z")),
        ("carts", 0, "C3", event("c-just-before", "cart.updated", "2026-11-23T11:59:59.999Z")),
        ("orders", 1, "C4", event("o-edge", "order.placed", "2026-11-23T13:00:00+01:00")),  # the window start
        ("outages", 2, None, event("out-1", "outage.started", "2026-11-24T08:00:00+01:00")),
        # Stamped by the broker long before the window: the event time decides, not the record's timestamp.
        ("carts", 0, "C3", event("c-stamped-old", "cart.checked_out", "2026-11-26T00:00:00Z"), old_stamp),
        ("orders", 0, "C1", b"not json"),
        ("orders", 0, "C1", None),
        ("carts", 1, "C5", orjson.dumps({"id": "c-no-time", "type": "cart.updated", "data": {}})),
        ("outages", 0, None, event("out-bad-time", "outage.started", "yesterday")),
        ("outages", 0, None, event("out-no-zone", "outage.started", "2026-11-25T09:00:00")),
    ])
    history = read_history(settings, broker.bootstrap, WEEK, now=NOW)
    assert ids(history.events) == ["o-edge", "out-1", "c-tie", "o-tie", "o-tie-b", "o-tie-p3", "out-tie",
                                   "c-stamped-old", "o-late"]
    assert history.events[0] == event("o-edge", "order.placed", "2026-11-23T13:00:00+01:00")  # the bytes as sent
    assert history.read == {"customers": 0, "orders": 8, "carts": 4, "outages": 4}
    assert history.skipped == 5
    assert history.customers == []


@pytest.mark.broker
def test_a_topic_that_does_not_exist_reads_as_empty(broker, settings):
    absent = replace(settings, topics=replace(settings.topics, orders="no-orders-here", customers="no-customers"))
    send(broker.bootstrap, [("carts", 0, "C1", event("c-1", "cart.updated", "2026-11-28T09:00:00Z"))])
    history = read_history(absent, broker.bootstrap, WEEK, now=NOW)
    assert ids(history.events) == ["c-1"]
    assert history.customers == []
    assert history.read == {"no-customers": 0, "no-orders-here": 0, "carts": 1, "outages": 0}


@pytest.mark.broker
def test_a_last_batch_larger_than_one_poll_is_read_to_its_true_end(broker, settings):
    """Tansu's ListOffsets says the batch's first offset + 1; kafka-python hands out 500 records a poll."""
    start = datetime(2026, 11, 29, tzinfo=timezone.utc)
    values = [event(f"o-{n}", "order.placed", (start - timedelta(seconds=n)).isoformat()) for n in range(3_000)]
    sender = producer(broker.bootstrap, batch_size=1_000_000, linger_ms=500)
    for value in values:
        sender.send("orders", key=b"C1", value=value, partition=0)
    sender.flush()
    sender.close()
    history = read_history(settings, broker.bootstrap, WEEK, now=NOW)
    assert history.read["orders"] == 3_000
    assert history.events == values[::-1]  # the newest was sent first


@pytest.mark.broker
def test_tansu_answers_offsets_for_times_with_offset_zero_whatever_the_time(broker):
    """Why the event topics are read from their start: no offset by time to skip to (were it fixed, this fails)."""
    ensure_topics(broker.bootstrap, ["stamped"], 1)
    day = 86_400_000
    base = int(NOW.timestamp() * 1000) - 10 * day
    for n in range(5):  # a batch each
        send(broker.bootstrap, [("stamped", 0, "k", b"%d" % n, base + n * day)])
    consumer = KafkaConsumer(**client_options(broker.bootstrap), group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition("stamped", 0)
        found = {n: consumer.offsets_for_times({tp: base + n * day})[tp].offset for n in (0, 2, 4, 6)}
    finally:
        consumer.close()
    assert found == {0: 0, 2: 0, 4: 0, 6: 0}  # Kafka: 0, 2, 4 and None (after the last)


def test_an_unreachable_broker_is_one_plain_line(monkeypatch):
    monkeypatch.setattr(topic_input, "CONNECT_SECONDS", 1.0)
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerError) as raised:
        read_history(Settings.from_env(), bootstrap, WEEK, now=NOW)
    assert str(raised.value) == f"no answer from Kafka at {bootstrap} within 1 s"
