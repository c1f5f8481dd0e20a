"""Hop 1: validate source events; refuse bad ones to the dead-letter topic; route the rest.

A customer's events go to the partition that owns the customer, so the
directory, the decision and the customer's later events stay together. An
outage concerns everyone, so it is handed to every partition.
"""

from __future__ import annotations

import orjson

from streams.kafka.sends import Sends
from streams.worker import app, catch_up, deadletter_topic, events_topic, settings, source_topics
from streams.core.directory import owner_partition
from streams.errors import EventError
from streams.core.events import deadletter_record, parse_event
from streams.metrics import EVENTS_CONSUMED, EVENTS_DEADLETTERED


def routes(event: dict, partitions: int) -> list[tuple[bytes, int]]:
    if event["type"].startswith("outage."):
        key = event["data"]["outage_id"].encode()
        return [(key, p) for p in range(partitions)]
    return [(event["customer_id"].encode(), owner_partition(event["customer_id"], partitions))]


BATCH = 1_000  # events routed before their messages are shipped together
BATCH_WAIT = 0.005  # seconds a batch waits to fill: what a lone event waits at most


@app.agent(source_topics, concurrency=1)
async def ingest(stream):
    sends = Sends(app)
    # In batches, so that a batch's messages share record batches: a message each would cost a future and
    # a lingering send. Every batch is in the producer before take_events acks it (faust flushes, then commits).
    async for events in stream.take_events(BATCH, within=BATCH_WAIT):
        for event in events:
            await route(sends, event)
        await sends.end_batch()
        if not catch_up.open:
            for event in events:
                catch_up.processed(event.message.topic, event.message.partition, event.message.offset)


async def route(sends: Sends, event) -> None:
    message = event.message
    EVENTS_CONSUMED.labels(message.topic).inc()
    try:
        parsed = parse_event(event.value)
    except EventError as exc:
        EVENTS_DEADLETTERED.labels(message.topic).inc()
        record = deadletter_record(topic=message.topic, partition=message.partition,
                                   offset=message.offset, key=message.key,
                                   value=event.value, reason=str(exc))
        await sends.send(deadletter_topic, message.key, orjson.dumps(record))
    else:
        for key, partition in routes(parsed, settings.partitions):
            await sends.send(events_topic, key, event.value, partition)
