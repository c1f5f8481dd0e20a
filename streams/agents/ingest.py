"""Hop 1: validate source events; refuse bad ones to the dead-letter topic; route the rest.

A customer's events go to the partition that owns the customer, so the
directory, the decision and the customer's later events stay together. An
outage concerns everyone, so it is handed to every partition. Behind what each
batch routed, ingest tells every partition how far it has read each input
(``streams.agents.marks``): the watermarks the decide hop decides by.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import faust
import orjson

from streams.agents import marks
from streams.agents.contain import Containment, Poison
from streams.agents.lag import observe_lag
from streams.agents.topics import Pipeline
from streams.core.clock import NEVER, Input, Quiet, event_time, moves_clock, wall_now
from streams.core.directory import owner_partition
from streams.core.events import deadletter_record, parse_event
from streams.errors import EventError
from streams.kafka import faust_fixes
from streams.kafka.catch_up import CatchUp, InputEnds
from streams.kafka.fail_stop import FailStop
from streams.kafka.sends import Sends
from streams.metrics import EVENTS_CONSUMED, EVENTS_DEADLETTERED

log = logging.getLogger(__name__)

BATCH = 1_000  # events routed before their messages are shipped together
BATCH_WAIT = 0.005  # seconds a batch waits to fill: what a lone event waits at most
# Wall clock: how long a record stamped by its producer may take to reach the broker. An input read to its end
# is read up to when that was checked, less this: a record stamped before, appended after, is not late.
END_GRACE = timedelta(seconds=1)


def routes(event: dict, partitions: int) -> list[tuple[bytes, int]]:
    if event["type"].startswith("outage."):
        key = event["data"]["outage_id"].encode()
        return [(key, p) for p in range(partitions)]
    return [(event["customer_id"].encode(), owner_partition(event["customer_id"], partitions))]


class Ingest:
    """What the agent does with each batch of source events; no faust in here but the records it is handed.

    ``partitions_of(topic)``: how many partitions a source topic has, as far as the consumer knows.
    """

    def __init__(self, pipeline: Pipeline, sends: Sends, catch_up: CatchUp, poison: Poison | None = None,
                 partitions_of: Callable[[str], int | None] = lambda _: None,
                 now: Callable[[], datetime] = wall_now, monotonic: Callable[[], float] = time.monotonic):
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.sends = sends
        self.catch_up = catch_up
        self.containment = Containment("ingest", sends, pipeline.deadletter, poison)
        self.partitions_of = partitions_of
        self.now = now
        topics = self.settings.topics
        # Customer records move no clock; support contacts do, as orders do: they are of the story's time.
        self.clock_topics = (topics.orders, topics.carts, topics.outages, topics.support)
        self.processed: dict[Input, int] = {}  # the last offset of each input whose routing is in the producer
        self._read: dict[Input, datetime] = {}  # how far this batch read each input
        self._told_at_end: set[Input] = set()  # inputs said to be read to their end since their last record
        self._latest: dict[Input, datetime] = {}  # event time: how far each input's records have gone
        # Event time: inputs read to their end hold the others back until every input has been quiet this
        # long; on the wall clock, an input read to its end is read up to when that was checked.
        self.quiet = Quiet(self.settings.event_idle if self.settings.clock == "event" else 0.0, monotonic)
        self.lock = asyncio.Lock()  # the batch and the wall-clock timer share the producer's open batches

    async def batch(self, events) -> None:
        # A batch's messages share record batches: a message each would cost a future and a lingering
        # send. Every batch is in the producer before take_events acks it (faust flushes, then commits).
        async with self.lock:
            await self._hold_back_again(events)
            self._read = {}
            for event in events:
                await self.containment.run(event, self.route)
            await self.sends.end_batch()
            await self.tell(self._read)
            self._latest.update(self._read)
            if self._read:
                self.quiet.heard()
            for event in events:  # under the lock: the end check must not miss a batch in progress
                message = event.message
                self.processed[(message.topic, message.partition)] = message.offset
        observe_lag("ingest", events)
        for event in events:
            message = event.message
            if not self.catch_up.open:
                self.catch_up.processed(message.topic, message.partition, message.offset)

    async def tell(self, times: dict[Input, datetime | None]) -> None:
        """Every decide partition learns how far these inputs are read, behind what was routed to it."""
        if not times:
            return
        partitions = {topic: count for topic in self.clock_topics if (count := self.partitions_of(topic))}
        value = marks.encode(times, partitions)
        for partition in range(self.settings.partitions):
            await self.sends.send(self.pipeline.events, marks.KEY, value, partition)
        await self.sends.end_batch()

    async def _hold_back_again(self, events) -> None:
        """Event time: inputs told to be read to their end hold the others back again, told ahead of the
        batch's events.

        Behind them, a decide partition would still count those inputs read to their end when it reads
        the batch's first events, and decide them and everything due at once. And without it, an input
        found empty before a replay reached it would let every other input's events through ahead of its own.
        """
        if not self._told_at_end or not any(event.message.topic in self.clock_topics for event in events):
            return
        await self.tell({source: self._latest.get(source, NEVER) for source in self._told_at_end})
        self._told_at_end.clear()

    async def tell_read_to_end(self, ends: InputEnds) -> None:
        """Inputs read to their end: on the wall clock, read up to when their end was checked (less
        ``END_GRACE``), told each tick; in event time, holding nothing back until their next record, told once
        they are quiet."""
        if self.settings.clock == "wall":
            await self._tell_wall_ends(ends)
        else:
            await self._tell_event_ends(ends)

    async def _tell_wall_ends(self, ends: InputEnds) -> None:
        # Not "now, until its next record": a record that reached the broker just after its end was read
        # could then wait in a slow ingest while pending messages it cancels fire.
        checked = self.now() - END_GRACE
        done = await ends.read_to_end(self.processed)
        async with self.lock:
            await self.tell({source: checked for source, after in done if self._nothing_read_since(source, after)})

    async def _tell_event_ends(self, ends: InputEnds) -> None:
        if self.quiet.waiting():
            # Not while any input is still being read. A topic that pauses longer than the wait while others
            # flow would let their events through ahead of its own, and a replay must equal the simulator
            # however it is produced.
            return
        done = await ends.read_to_end(self.processed, self._told_at_end)
        async with self.lock:
            news = [source for source, after in done
                    if source not in self._told_at_end and self._nothing_read_since(source, after)]
            await self.tell(dict.fromkeys(news))
            self._told_at_end.update(news)
        if news:
            log.info("event time: %s read to their end, nothing read for %g s: they hold nothing back",
                     ", ".join(f"{topic}/{partition}" for topic, partition in sorted(news)), self.quiet.seconds)

    def _nothing_read_since(self, source: Input, end: int) -> bool:
        """Whether nothing was read from ``source`` since its ``end`` was checked: a record read meanwhile may
        have come after that end, and then the input is read only up to that record's time."""
        return self.processed.get(source, -1) + 1 <= end

    def forget(self) -> None:
        """Partitions moved: decide learns its watermarks again, so every input read to its end is told again."""
        self._told_at_end.clear()

    def _note(self, message, parsed: dict | None) -> None:
        """How far this record moves its input's watermark: its event time; on the wall clock no later than its
        broker time or now."""
        if message.topic not in self.clock_topics:
            return
        if parsed is not None and not moves_clock(parsed):
            return
        moment = event_time(parsed) if parsed is not None else None
        if self.settings.clock == "wall":
            # Bounded by when the broker took it and by now: a record published late, or dated ahead, holds back.
            moment = min(filter(None, (moment, _broker_time(message), self.now())))
        elif moment is None:
            return
        source = (message.topic, message.partition)
        if source not in self._read or moment > self._read[source]:
            self._read[source] = moment

    async def route(self, event) -> None:
        message = event.message
        EVENTS_CONSUMED.labels(message.topic).inc()
        if event.value is None and message.topic == self.pipeline.settings.topics.customers:
            return  # a compaction tombstone: the customer.deleted before it did the forgetting
        try:
            parsed = parse_event(event.value, received=_broker_time(message))
        except EventError as exc:
            self._note(message, None)
            EVENTS_DEADLETTERED.labels(message.topic).inc()
            record = deadletter_record(topic=message.topic, partition=message.partition,
                                       offset=message.offset, key=message.key,
                                       value=event.value, reason=str(exc), hop="ingest")
            await self.sends.send(self.pipeline.deadletter, message.key, orjson.dumps(record))
        else:
            for key, partition in routes(parsed, self.pipeline.settings.partitions):
                await self.sends.send(self.pipeline.events, key, event.value, partition)
            self._note(message, parsed)


def _broker_time(message) -> datetime | None:
    return datetime.fromtimestamp(message.timestamp, timezone.utc) if (message.timestamp or 0) > 0 else None


def register(app: faust.App, pipeline: Pipeline, catch_up: CatchUp, bootstrap: list[str],
             poison: Poison | None = None) -> Ingest:
    hop = Ingest(pipeline, Sends.of_app(app), catch_up, poison,
                 partitions_of=lambda topic: app.consumer.topic_partitions(topic))
    stop = FailStop("ingest")
    ends = InputEnds(app, bootstrap, hop.clock_topics)

    @app.on_partitions_revoked.connect
    async def tell_again(sender, revoked, **kwargs) -> None:
        hop.forget()

    @app.timer(interval=1.0, name="watermarks")
    async def tell_read_to_end() -> None:
        await hop.tell_read_to_end(ends)

    @app.agent(pipeline.sources, concurrency=1, name="ingest")
    async def ingest(stream):
        async for events in faust_fixes.ordered_batches(stream, BATCH, BATCH_WAIT):
            await stop.run(hop.batch, events)

    return hop
