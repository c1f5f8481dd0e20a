"""The activity store kept up to date from the topics, without a consumer group.

Partitions are assigned and sought to where the store says it stopped (``ActivityStore.next_offsets``),
else to their start; nothing is committed to Kafka, so the store's file is the only bookmark and a
new file is a rebuild. ``catch_up`` reads to the true end (``streams.kafka.admin.end_offsets``: Tansu's
ListOffsets says less) with ``streams.tools.topic_input``'s reader; ``run`` then follows the topics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from streams.console.store import ActivityStore, TopicRecord
from streams.core.clock import wall_now
from streams.errors import BrokerError
from streams.kafka.admin import WHOLE_BATCH, client_options
from streams.settings import Settings
from streams.tools.topic_input import partitions_of, reachable, read_records

log = logging.getLogger("forewarn.console")

BATCH = 2_000  # records per transaction while catching up: a crash loses at most this much reading
ASSIGN_SECONDS = 30.0  # how often ``run`` looks for topics and partitions that were not there
PRUNE_SECONDS = 3600.0  # how often ``run`` drops what is past the store's retention


class Feed:
    """Keeps an ActivityStore up to date from the topics, without a consumer group (assign + seek to
    store.next_offsets(), else beginning)."""

    def __init__(self, store: ActivityStore, bootstrap: str, settings: Settings):
        self.store = store
        self.bootstrap = bootstrap
        self.settings = settings
        topics = settings.topics
        self.topics = [topics.events, topics.notifications, topics.suppressed, topics.deliveries, topics.deadletter]
        if store.states_changelog:
            self.topics.append(store.states_changelog)

    def catch_up(self, timeout: float = 30.0) -> int:
        """Read every topic to the end it has now; how many records were new to the store.

        ``timeout``: seconds without a record, the end not reached, before BrokerError (a long first
        read is not cut short). A topic that does not exist is empty.
        """
        reachable(self.bootstrap)
        consumer = self._consumer()
        try:
            positions = {TopicPartition(topic, part): offset
                         for (topic, part), offset in self.store.next_offsets().items()}
            records = read_records(consumer, partitions_of(consumer, self.topics), positions, stall=timeout)
            return self._store_all(_topic_record(record) for record in records)
        except KafkaError as exc:
            raise BrokerError(f"reading the topics from {self.bootstrap} failed: {exc}") from None
        finally:
            consumer.close()

    def _store_all(self, records: Iterator[TopicRecord]) -> int:
        added = 0
        while batch := list(islice(records, BATCH)):
            added += self.store.add_many(batch)
        return added

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """Keep reading until ``stop`` is set; a broker that goes away is waited for, not an error."""
        reachable(self.bootstrap)
        # The fetch wait of the worker: Tansu does not answer a waiting fetch when another partition gets data.
        consumer = self._consumer(fetch_max_wait_ms=self.settings.fetch_max_wait_ms, auto_offset_reset="earliest")
        assigned: set[TopicPartition] = set()
        looked = pruned = float("-inf")
        try:
            while not stop.is_set():
                if time.monotonic() - pruned >= PRUNE_SECONDS:
                    self.store.prune(wall_now())
                    pruned = time.monotonic()
                try:
                    if time.monotonic() - looked >= ASSIGN_SECONDS:
                        assigned = self._assign(consumer, assigned)
                        looked = time.monotonic()
                    self._poll(consumer, assigned, stop, poll_seconds)
                except KafkaError as exc:  # kafka-python reconnects by itself; say so and try again
                    log.warning("console feed: %s; trying again", exc)
                    stop.wait(poll_seconds)
        finally:
            consumer.close()

    def _poll(self, consumer: KafkaConsumer, assigned: set[TopicPartition], stop: threading.Event,
              poll_seconds: float) -> None:
        if not assigned:  # none of the topics exist yet
            stop.wait(poll_seconds)
            return
        batch = consumer.poll(timeout_ms=int(poll_seconds * 1000), max_records=WHOLE_BATCH)
        if batch:
            self.store.add_many(_topic_record(record) for records in batch.values() for record in records)

    def _assign(self, consumer: KafkaConsumer, assigned: set[TopicPartition]) -> set[TopicPartition]:
        """Assign every partition of the topics; those new to the assignment go where the store stopped."""
        partitions = set(partitions_of(consumer, self.topics))
        if partitions == assigned:
            return assigned
        consumer.assign(sorted(partitions))  # keeps the position of partitions already assigned
        offsets = self.store.next_offsets()
        for tp in sorted(partitions - assigned):
            offset = offsets.get((tp.topic, tp.partition))
            if offset is None:
                consumer.seek_to_beginning(tp)
            else:  # out of range (retention, a topic made anew): auto_offset_reset takes it to the start
                consumer.seek(tp, offset)
        return partitions

    def _consumer(self, **options: Any) -> KafkaConsumer:
        return KafkaConsumer(**client_options(self.bootstrap), group_id=None, enable_auto_commit=False, **options)


def _topic_record(record: ConsumerRecord) -> TopicRecord:
    return TopicRecord(record.topic, record.partition, record.offset, record.key, record.value, record.timestamp)

