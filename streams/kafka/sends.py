"""Produce from an agent without waiting for each message, and without losing any.

faust flushes its producer before it commits consumer offsets, so a message
handed to the producer while its source message was processed is on the broker
before that source offset is committed: at-least-once holds without waiting
for each acknowledgement (which would cap an agent at one broker round trip
per event).

faust's own ``Topic.send`` costs about 30 µs a message in objects and
callbacks; an outage fan-out sends 100,000 notifications and as many state
changes. So messages go straight to the aiokafka producer under faust:
``producer.send`` (lingering in aiokafka's batch, which faust's flush covers)
for the first ``bulk_after`` messages of a batch of events, then whole record batches
(``create_batch`` / ``send_batch``, 3 µs a message). Every batch is shipped
before the agent takes its next batch of events, so nothing sits outside the producer
when faust flushes and commits. Per partition aiokafka keeps batches in order.

The bound: with more than ``in_flight`` messages unacknowledged, the oldest
half is awaited, so a fan-out cannot pile up unsent messages in memory.

Table writes go the same way (``ChangelogTable``): the value is set in the
table's store and the key marked; at the end of a batch of events, or every
``changes_per_flush`` keys, each marked key's latest value is produced once to
the table's changelog, in the partition of the event that changed it, as faust
itself would. An agent whose state records what it sent (decide) writes them
with ``settle``: only after Kafka has acknowledged those messages. Proved by
``tests/faults/test_crash_state.py`` (a SIGKILL in the middle of a fan-out
leaves no logged state ahead of its notifications) and unit-tested over a fake
producer in ``tests/kafka/test_sends.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import faust
import orjson

log = logging.getLogger(__name__)


class Sends:
    in_flight: int = 20_000
    bulk_after: int = 64
    changes_per_flush: int = 5_000
    retry_delay: float = 0.5  # seconds before a failed acknowledged send is tried again; doubling ...
    retry_cap: float = 30.0  # ... up to this

    def __init__(self, producer: Callable[[], Any]) -> None:
        self._producer_of = producer  # the aiokafka producer, once the worker has started it
        self._pending: deque[tuple[asyncio.Future, int]] = deque()
        self._unacked = 0
        self._open: dict[tuple[str, int], Any] = {}
        self._sent_in_batch = 0
        self._tables: dict[str, ChangelogTable] = {}
        self._changed: dict[tuple[str, Any], int] = {}
        self.partition: int | None = None

    @classmethod
    def of_app(cls, app: faust.App) -> "Sends":
        return cls(lambda: app.producer._producer)  # the aiokafka producer faust flushes before committing

    @property
    def _producer(self):
        return self._producer_of()

    async def send(self, topic: faust.TopicT | str, key: bytes | None, value: bytes | None,
                   partition: int | None = None) -> None:
        name = topic if isinstance(topic, str) else topic.get_topic_name()
        self._sent_in_batch += 1
        if partition is None or self._sent_in_batch <= self.bulk_after:
            await self._track(await self._producer.send(name, value, key=key, partition=partition), 1)
            return
        builder = self._open.get((name, partition))
        if builder is None:
            builder = self._open[(name, partition)] = self._producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            await self._ship(name, partition)
            builder = self._open[(name, partition)] = self._producer.create_batch()
            builder.append(key=key, value=value, timestamp=None)

    async def send_acknowledged(self, topic: faust.TopicT | str, key: bytes | None, value: bytes) -> None:
        """Send one message and wait until Kafka has it, trying again until it does (dead letters)."""
        name = topic if isinstance(topic, str) else topic.get_topic_name()
        delay = self.retry_delay
        while True:
            try:
                await (await self._producer.send(name, value, key=key))
                return
            except Exception as exc:  # noqa: BLE001  the offset waits for this record, however long
                log.warning("sending to %s failed (%s); trying again in %.0f s", name, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_cap)

    def changed(self, table: ChangelogTable, key: Any) -> None:
        self._tables[table.changelog] = table
        if self.partition is None:
            raise RuntimeError("a table was changed outside an event")  # faust refuses the same
        self._changed[(table.changelog, key)] = self.partition

    async def end_batch(self) -> None:
        """Everything the events taken so far caused is in the producer now; call before taking more."""
        await self.write_changes()
        await self._ship_open()
        self._sent_in_batch = 0

    async def flush(self) -> None:
        """End the batch and wait until Kafka has every message."""
        await self.end_batch()
        await self._acknowledged()

    async def settle(self) -> None:
        """End the batch with the changed table keys logged only after Kafka has every message sent before.

        A state that records a notification as emitted must never be on Kafka
        without the notification: after a crash the replayed event would be
        suppressed as already sent. aiokafka ships one batch per partition per
        request, so a changelog batch can overtake the notification batches
        queued before it; only waiting for their acknowledgement orders them.
        """
        await self._ship_open()
        await self._acknowledged()
        await self.end_batch()

    @property
    def changes_due(self) -> bool:
        """Enough table keys changed that their latest values should go to the changelogs now."""
        return len(self._changed) >= self.changes_per_flush

    async def write_changes(self) -> None:
        changed, self._changed = self._changed, {}
        for (changelog, key), partition in changed.items():
            table = self._tables[changelog]
            await self.send(changelog, table.encode_key(key), table.encode_value(key), partition)

    async def _ship_open(self) -> None:
        for name, partition in list(self._open):
            await self._ship(name, partition)

    async def _acknowledged(self) -> None:
        pending, self._pending, self._unacked = self._pending, deque(), 0
        if pending:
            await asyncio.gather(*(future for future, _ in pending))

    async def _ship(self, name: str, partition: int) -> None:
        builder = self._open.pop((name, partition))
        count = builder.record_count()
        if count:
            await self._track(await self._producer.send_batch(builder, name, partition=partition), count)

    async def _track(self, future: asyncio.Future, count: int) -> None:
        pending = self._pending
        while pending and pending[0][0].done():  # acknowledged: let go (a failure raises here)
            done, done_count = pending.popleft()
            done.result()
            self._unacked -= done_count
        pending.append((future, count))
        self._unacked += count
        if self._unacked > self.in_flight:
            oldest = []
            while self._pending and self._unacked > self.in_flight // 2:
                future, count = self._pending.popleft()
                self._unacked -= count
                oldest.append(future)
            await asyncio.gather(*oldest)


def changelog_named(table: faust.Table, topic: str) -> faust.Table:
    """``table`` with its changelog on ``topic`` instead of ``<app>-<table>-changelog``: a topic others read.

    faust registered the table under its default changelog name, which recovery looks tables up by:
    registered again under ``topic``.
    """
    registry = table.app.tables._changelogs
    registry.pop(table.changelog_topic.get_topic_name(), None)
    table.changelog_topic = table._new_changelog_topic().derive_topic(topics=[topic])
    registry[topic] = table
    return table


class ChangelogTable(MutableMapping):
    """A faust table read and written as a mapping, its changelog produced through ``Sends``.

    Values of a ``value_type=bytes`` table are stored and logged as they are;
    others as JSON, which faust's json serializer reads back on recovery.
    """

    def __init__(self, table: faust.Table, sends: Sends):
        self.table = table
        self.sends = sends
        self.changelog = table.changelog_topic.get_topic_name()
        self._raw = table.value_type is bytes
        self._seen_store: Any = None
        self._dict: dict | None = None

    @property
    def _store(self):
        return self.table.data

    def __getitem__(self, key: Any) -> Any:
        return self._store[key]

    def get(self, key: Any, default: Any = None) -> Any:
        store = self._store
        if store is not self._seen_store:  # faust makes the store when the worker starts
            inner = getattr(store, "data", None)
            self._seen_store, self._dict = store, inner if isinstance(inner, dict) else None
        if self._dict is not None:  # the memory store's own dict: a miss costs no KeyError
            return self._dict.get(key, default)
        return store.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __setitem__(self, key: Any, value: Any) -> None:
        self._store[key] = value
        self.sends.changed(self, key)

    def __delitem__(self, key: Any) -> None:
        del self._store[key]
        self.sends.changed(self, key)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def items(self):
        return self._store.items()

    def values(self):
        return self._store.values()

    @staticmethod
    def encode_key(key: Any) -> bytes:
        return orjson.dumps(key)

    def encode_value(self, key: Any) -> bytes | None:
        value = self._store.get(key)
        if value is None:
            return None  # deleted: a tombstone
        return value if self._raw else orjson.dumps(value)
