"""The input a replay needs, read straight from the source topics: customers whole, events since a moment.

For ``forewarn simulate --from-kafka`` and ``forewarn plan --from-kafka``. No
consumer group is joined and nothing is committed: partitions are assigned and
read from their start to their true end (``streams.kafka.admin.end_offsets``;
Tansu's ListOffsets says less), as they were when the read began.

The event topics are read from their start as well and filtered on event time.
``offsets_for_times`` cannot skip the old part: it seeks by the record's
timestamp, not by ``occurred_at`` (a late record is stamped after its event), and
Tansu 0.6 answers it with offset 0 for every time before the last record
(``tests/tools/test_topic_input.py`` holds it to that).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from streams.core.clock import event_time, wall_now
from streams.errors import BrokerError
from streams.kafka.admin import WHOLE_BATCH, client_options, end_offsets
from streams.settings import Settings

CONNECT_SECONDS = 10.0  # for the first answer of the broker
STALL_SECONDS = 30.0  # no record for this long with the end not reached: the broker stopped answering
POLL_MS = 200


@dataclass(frozen=True)
class TopicHistory:
    """What the topics held: the customers now, and the events since ``since``."""

    customers: list[bytes]  # newest customer.upserted per key, the forgotten left out; by their last write
    events: list[bytes]  # source events at or after ``since``, by (event time, topic, partition, offset)
    since: datetime  # the start of the window
    read: dict[str, int]  # records read per topic
    skipped: int  # records that are not JSON objects or have no parseable event time


def read_history(settings: Settings, bootstrap: str, since: timedelta, now: datetime | None = None) -> TopicHistory:
    """Read the customers topic whole and the event topics from ``now - since``; see ``TopicHistory``."""
    moment = (now or wall_now()) - since
    if moment.tzinfo is None:
        raise ValueError("now must carry a time zone: event times are compared with it")
    topics = settings.topics
    fold = _Fold(moment, topics.customers, (topics.orders, topics.carts, topics.outages))
    reachable(bootstrap)
    consumer = KafkaConsumer(**client_options(bootstrap), group_id=None, enable_auto_commit=False)
    try:
        for record in read_records(consumer, partitions_of(consumer, fold.topics())):
            fold.add(record)
    except KafkaError as exc:
        raise BrokerError(f"reading the topics from {bootstrap} failed: {exc}") from None
    finally:
        consumer.close()
    return fold.history()


def reachable(bootstrap: str) -> None:
    """Raise BrokerError unless the broker answers within ``CONNECT_SECONDS``.

    A consumer cannot tell: kafka-python 3 waits for its first metadata for ever
    (``KafkaConsumer.bootstrap(timeout_ms)`` joins a wait that has no deadline),
    while the admin client's start honours ``bootstrap_timeout_ms``.
    """
    try:
        KafkaAdminClient(**client_options(bootstrap), bootstrap_timeout_ms=int(CONNECT_SECONDS * 1000)).close()
    except KafkaError:
        raise BrokerError(f"no answer from Kafka at {bootstrap} within {CONNECT_SECONDS:g} s") from None


def partitions_of(consumer: KafkaConsumer, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``; a topic that does not exist has none."""
    return [TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic))]


def read_records(consumer: KafkaConsumer, partitions: list[TopicPartition],
                 positions: Mapping[TopicPartition, int] | None = None,
                 stall: float = STALL_SECONDS) -> Iterator[ConsumerRecord]:
    """Every record of ``partitions``, from ``positions`` (else their start) to the end they had when this began.

    A position before the start (retention took those records) or past the end (the topic was made anew)
    reads from the start. ``stall``: seconds without a record, the end not reached, before BrokerError.
    """
    ends = end_offsets(consumer, partitions)
    starts = consumer.beginning_offsets(partitions)
    froms = {tp: _within(positions.get(tp) if positions else None, starts[tp], ends[tp]) for tp in partitions}
    todo = {tp: ends[tp] for tp in partitions if ends[tp] > froms[tp]}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, froms[tp])  # a known position: no offset reset to wait for
    heard = time.monotonic()
    while todo:
        batch = consumer.poll(timeout_ms=POLL_MS, max_records=WHOLE_BATCH)
        for tp, messages in batch.items():
            end = todo.get(tp, 0)
            yield from (message for message in messages if message.offset < end)  # later ones: after the read began
        # The position, not the last offset seen: compaction and transaction markers leave gaps before the end.
        for tp in [tp for tp, end in todo.items() if consumer.position(tp) >= end]:
            del todo[tp]
            consumer.pause(tp)
        if batch:
            heard = time.monotonic()
        elif time.monotonic() - heard > stall:
            raise BrokerError(f"{', '.join(f'{tp.topic}/{tp.partition}' for tp in todo)} not read to the end: "
                              f"nothing came for {stall:g} s")


def _within(position: int | None, start: int, end: int) -> int:
    return position if position is not None and start <= position <= end else start


@dataclass
class _Fold:
    """The records as they come in, folded into a ``TopicHistory``; only their bytes are kept."""

    since: datetime
    customer_topic: str
    event_topics: tuple[str, ...]
    read: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    _customers: dict[bytes, tuple[int, int, bytes]] = field(default_factory=dict)  # key: partition, offset, value
    _events: list[tuple[datetime, str, int, int, bytes]] = field(default_factory=list)

    def topics(self) -> list[str]:
        return list(dict.fromkeys((self.customer_topic, *self.event_topics)))

    def add(self, record: ConsumerRecord) -> None:
        self.read[record.topic] = self.read.get(record.topic, 0) + 1
        parsed = _parsed(record.value)
        tombstone = record.value is None and record.topic == self.customer_topic
        if parsed is None and not tombstone:
            self.skipped += 1
        if record.topic == self.customer_topic:
            self._customer(record, parsed)
        if record.topic in self.event_topics and parsed is not None and parsed[1] >= self.since:
            self._events.append((parsed[1], record.topic, record.partition, record.offset, record.value))

    def _customer(self, record: ConsumerRecord, parsed: tuple[dict[str, Any], datetime] | None) -> None:
        """An upsert replaces the key's record, a tombstone or ``customer.deleted`` forgets it; the rest changes
        nothing (the decide hop too keeps a customer over a record it refuses)."""
        event = parsed[0] if parsed else {}
        key = record.key
        if key is None and isinstance(event.get("customer_id"), str):  # Kafka refuses keyless records here
            key = event["customer_id"].encode()
        if key is None:
            return
        if record.value is None or event.get("type") == "customer.deleted":
            self._customers.pop(key, None)
        elif event.get("type") == "customer.upserted":
            self._customers[key] = (record.partition, record.offset, record.value)

    def history(self) -> TopicHistory:
        customers = sorted(self._customers.values())  # by partition, then offset: one key, one partition
        return TopicHistory(customers=[value for *_, value in customers],
                            events=[value for *_, value in sorted(self._events)],
                            since=self.since, read={topic: self.read.get(topic, 0) for topic in self.topics()},
                            skipped=self.skipped)


def _parsed(value: bytes | None) -> tuple[dict[str, Any], datetime] | None:
    """The event and its event time; None if it is not a JSON object with a time zoned ``occurred_at``."""
    if value is None:
        return None
    try:
        event = orjson.loads(value)
        moment = event_time(event)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):  # not an object, no time
        return None
    return (event, moment) if moment.tzinfo is not None else None  # a time without zone cannot be placed
