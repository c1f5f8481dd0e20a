"""Timers wait after a restart or rebalance until the hops have read what their partitions held.

Answers no faust bug but a property of any restart: the pending messages come
back with the state table at once, the events that cancel them may still wait
in the topics. Proved by ``tests/integration/test_restart.py`` (a checkout made
while the worker was down, behind 5,000 other events, still cancels its
reminder) and unit-tested in ``tests/kafka/test_catch_up.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping

import faust
from kafka import TopicPartition

from streams.kafka import faust_fixes
from streams.kafka.admin import read_end_offsets

log = logging.getLogger(__name__)
Offsets = dict[tuple[str, int], int]  # (topic, partition) -> offset


class CatchUp:
    """Whether the hops have read what was on their partitions when this worker got them.

    After a restart or a rebalance the pending messages come back with the
    state table, while the events that cancel them (a cart checked out) may
    still wait in the topics. A timer that fired first would nudge a customer
    who has paid. So timers wait until each stage has processed its partitions
    up to the end offsets taken when the stage before it was done: first the
    source topics (ingest), then ``forewarn-events`` (decide), whose end is
    only known once ingest has routed what it had.
    """

    def __init__(self, stages: list[list[str]]) -> None:
        self.stages = stages  # topic names per stage, upstream first
        self._stage = 0
        self._targets: Offsets | None = None
        self._processed: Offsets = {}
        self.generation = 0  # moves on every reset: end offsets asked for before it are stale

    @property
    def open(self) -> bool:
        return self._stage >= len(self.stages)

    def reset(self) -> None:
        """Partitions moved: read up to their current ends again before timers fire."""
        self._stage, self._targets = 0, None
        self._processed.clear()
        self.generation += 1

    def processed(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset >= self._processed.get(key, -1):
            self._processed[key] = offset

    def wanted(self) -> list[str]:
        """The topics whose end offsets are needed now; empty while they are being waited for, or when open."""
        return [] if self.open or self._targets is not None else self.stages[self._stage]

    def targets(self, ends: Offsets) -> None:
        self._targets = dict(ends)

    def advance(self, committed: Offsets) -> bool:
        """Move through the stages that are done; ``committed``: each partition's committed offset (next to read)."""
        while not self.open and self._targets is not None:
            behind = [tp for tp, end in self._targets.items()
                      if max(self._processed.get(tp, -1) + 1, committed.get(tp, 0)) < end]
            if behind:
                return False
            self._stage, self._targets = self._stage + 1, None
        return self.open


class CatchUpWatch:
    """Asks the broker and faust's consumer whether the stages of ``catch_up`` are done (the 1 s timer asks).

    Knows faust's internals: the consumer's assignment and committed offsets,
    and where ``streams.kafka.faust_fixes`` left each partition after its seek.
    """

    def __init__(self, app: faust.App, catch_up: CatchUp, bootstrap: list[str], events_topic: str):
        self.app = app
        self.catch_up = catch_up
        self.bootstrap = bootstrap
        self.events_topic = events_topic

    async def caught_up(self) -> bool:
        """Whether ingest and decide have read what their partitions held since the last rebalance."""
        app, catch_up = self.app, self.catch_up
        if app.rebalancing or not app.consumer.assignment():
            return False
        topics = catch_up.wanted()
        if topics and not await self._ask_targets(topics):
            return False
        committed = dict(faust_fixes.start_offsets)
        for tp, offset in app.consumer._committed_offset.items():
            committed[(tp.topic, tp.partition)] = max(offset or 0, committed.get((tp.topic, tp.partition), 0))
        if catch_up.advance(committed):
            log.info("caught up with the partitions' events: timers fire")
            return True
        return False

    async def _ask_targets(self, topics: list[str]) -> bool:
        generation = self.catch_up.generation
        partitions = [tp for tp in self.app.consumer.assignment() if tp.topic in topics]
        if self.events_topic in topics:
            await self.app.producer.flush()  # what ingest routed is on the broker, inside the end offsets
        try:
            ends = await asyncio.get_running_loop().run_in_executor(None, self._read_ends, partitions)
        except Exception as exc:  # noqa: BLE001  broker trouble: the timer asks again in a second
            log.warning("reading end offsets to catch up with failed: %r", exc)
            return False
        if self.catch_up.generation != generation:
            return False
        self.catch_up.targets(ends)
        return True

    def _read_ends(self, partitions) -> Offsets:
        if not partitions:
            return {}
        ends = read_end_offsets(self.bootstrap, [TopicPartition(tp.topic, tp.partition) for tp in partitions])
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}


class InputEnds:
    """Which of ingest's source partitions it has read to their end (its watermark is when that was checked).

    Knows faust's internals: the consumer's assignment, highwaters and committed
    offsets. faust's highwater can only be low on Tansu (it is the broker's
    answer to the last fetch), so a partition behind it is behind; one that
    looks read to its end is checked against the true end.
    """

    def __init__(self, app: faust.App, bootstrap: list[str], topics: Iterable[str]):
        self.app = app
        self.bootstrap = bootstrap
        self.topics = set(topics)

    async def read_to_end(self, processed: Mapping[tuple[str, int], int],
                          known: Collection[tuple[str, int]] = ()) -> list[tuple[tuple[str, int], int]]:
        """The assigned partitions whose next offset to read, after ``processed``, is their end; with that offset.

        ``known``: partitions already found so; not asked about again.
        """
        app = self.app
        if app.rebalancing:
            return []
        consumer = app.consumer
        committed = {(tp.topic, tp.partition): offset for tp, offset in consumer._committed_offset.items() if offset}
        candidates: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            if tp.topic not in self.topics or key in known:
                continue
            starts = [processed[key] + 1] if key in processed else []
            starts += [offset for offset in (committed.get(key), faust_fixes.start_offsets.get(key)) if offset is not None]
            after = max(starts, default=None)
            if after is not None and after >= (consumer.highwater(tp) or 0):
                candidates[key] = after
        if not candidates:
            return []
        try:
            ends = await asyncio.get_running_loop().run_in_executor(
                None, read_end_offsets, self.bootstrap, [TopicPartition(*key) for key in candidates])
        except Exception as exc:  # noqa: BLE001  broker trouble: the watermarks wait for the next tick
            log.debug("reading end offsets for the watermarks failed: %r", exc)
            return []
        return [(key, after) for key, after in candidates.items() if after >= ends.get(TopicPartition(*key), after + 1)]
