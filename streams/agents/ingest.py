"""Admission: validate source events, refuse bad ones to the dead-letter topic, route the rest.

A customer's events belong to the partition that owns the customer, so the
directory, the decision and the customer's later events stay together. One
keyed by customer id with a CRC-32 partitioner (forewarn's own tools,
librdkafka's ``consistent``) is already there: the decide agent reads it where
it lands. Any other is handed on through ``forewarn-events`` to its owner's
partition. An outage concerns everyone: the ``ingest`` agent hands it to every
partition.
"""

from __future__ import annotations

import orjson

from streams.agents.sending import Sends
from streams.app import app, deadletter_topic, events_topic, outages_source, settings
from streams.core.directory import owner_partition
from streams.errors import EventError
from streams.events import deadletter_record, parse_event
from streams.metrics import EVENTS_CONSUMED, EVENTS_DEADLETTERED


def routes(event: dict, partitions: int) -> list[tuple[bytes, int]]:
    if event["type"].startswith("outage."):
        key = event["data"]["outage_id"].encode()
        return [(key, p) for p in range(partitions)]
    return [(event["customer_id"].encode(), owner_partition(event["customer_id"], partitions))]


@app.agent(outages_source, concurrency=1)
async def ingest(stream):
    sends = Sends(app)
    # One event at a time: faust's take_events stalled with events left in its buffer (bench/RESULTS.md).
    async for event in stream.events():
        parsed = await admit(sends, event)
        if parsed is not None:
            await hand_on(sends, parsed, event.value)
        await sends.end_batch()


async def admit(sends: Sends, event) -> dict | None:
    """The source event, validated; or None once it is on the dead-letter topic with the reason."""
    message = event.message
    EVENTS_CONSUMED.labels(message.topic).inc()
    try:
        return parse_event(event.value)
    except EventError as exc:
        EVENTS_DEADLETTERED.labels(message.topic).inc()
        record = deadletter_record(topic=message.topic, partition=message.partition,
                                   offset=message.offset, key=message.key,
                                   value=event.value, reason=str(exc))
        await sends.send(deadletter_topic, message.key, orjson.dumps(record))
        return None


def decided_where_it_lands(parsed: dict, message) -> bool:
    """A customer's event in its owner's partition of a topic co-partitioned with ``forewarn-events``."""
    if parsed["type"].startswith("outage."):
        return False
    return (app.consumer.topic_partitions(message.topic) == settings.partitions
            and owner_partition(parsed["customer_id"], settings.partitions) == message.partition)


async def hand_on(sends: Sends, parsed: dict, value: bytes) -> None:
    for key, partition in routes(parsed, settings.partitions):
        await sends.send(events_topic, key, value, partition)
