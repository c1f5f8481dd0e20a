"""Hop 1: validate source events; refuse bad ones to the dead-letter topic; route the rest.

A customer's events go to the partition that owns the customer, so the
directory, the decision and the customer's later events stay together. An
outage concerns everyone, so it is handed to every partition.
"""

from __future__ import annotations

from datetime import datetime, timezone

import faust
import orjson

from streams.agents.contain import Containment, Poison
from streams.agents.lag import observe_lag
from streams.agents.topics import Pipeline
from streams.core.directory import owner_partition
from streams.core.events import deadletter_record, parse_event
from streams.errors import EventError
from streams.kafka.catch_up import CatchUp
from streams.kafka.fail_stop import FailStop
from streams.kafka.sends import Sends
from streams.metrics import EVENTS_CONSUMED, EVENTS_DEADLETTERED

BATCH = 1_000  # events routed before their messages are shipped together
BATCH_WAIT = 0.005  # seconds a batch waits to fill: what a lone event waits at most


def routes(event: dict, partitions: int) -> list[tuple[bytes, int]]:
    if event["type"].startswith("outage."):
        key = event["data"]["outage_id"].encode()
        return [(key, p) for p in range(partitions)]
    return [(event["customer_id"].encode(), owner_partition(event["customer_id"], partitions))]


class Ingest:
    """What the agent does with each batch of source events; no faust in here but the records it is handed."""

    def __init__(self, pipeline: Pipeline, sends: Sends, catch_up: CatchUp, poison: Poison | None = None):
        self.pipeline = pipeline
        self.sends = sends
        self.catch_up = catch_up
        self.containment = Containment("ingest", sends, pipeline.deadletter, poison)

    async def batch(self, events) -> None:
        # A batch's messages share record batches: a message each would cost a future and a lingering
        # send. Every batch is in the producer before take_events acks it (faust flushes, then commits).
        for event in events:
            await self.containment.run(event, self.route)
        await self.sends.end_batch()
        observe_lag("ingest", events)
        if not self.catch_up.open:
            for event in events:
                self.catch_up.processed(event.message.topic, event.message.partition, event.message.offset)

    async def route(self, event) -> None:
        message = event.message
        EVENTS_CONSUMED.labels(message.topic).inc()
        try:
            received = datetime.fromtimestamp(message.timestamp, timezone.utc) if (message.timestamp or 0) > 0 else None
            parsed = parse_event(event.value, received=received)
        except EventError as exc:
            EVENTS_DEADLETTERED.labels(message.topic).inc()
            record = deadletter_record(topic=message.topic, partition=message.partition,
                                       offset=message.offset, key=message.key,
                                       value=event.value, reason=str(exc), hop="ingest")
            await self.sends.send(self.pipeline.deadletter, message.key, orjson.dumps(record))
        else:
            for key, partition in routes(parsed, self.pipeline.settings.partitions):
                await self.sends.send(self.pipeline.events, key, event.value, partition)


def register(app: faust.App, pipeline: Pipeline, catch_up: CatchUp, poison: Poison | None = None) -> Ingest:
    hop = Ingest(pipeline, Sends.of_app(app), catch_up, poison)
    stop = FailStop("ingest")

    @app.agent(pipeline.sources, concurrency=1, name="ingest")
    async def ingest(stream):
        async for events in stream.take_events(BATCH, within=BATCH_WAIT):
            await stop.run(hop.batch, events)

    return hop
