"""Watermark records: how far ingest has read each source partition, told to every decide partition.

Ingest writes one after each batch (and, every second, for the partitions it
has read to their end: on the wall clock with the time their end was checked,
in event time without a time once they have been quiet for
``FOREWARN_EVENT_IDLE``) into every partition of ``forewarn-events``, behind
the events it routed there. When decide reads it, it has read everything
ingest routed to that partition from those inputs up to that time; an input
without a time is read to its end and holds nothing back until its next
record. The key cannot be a customer's or an outage's id: those have no
control characters (``schemas/common.json``).
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from streams.core.clock import Input
from streams.kafka.admin import CONTROL_KEY_PREFIX

KEY = CONTROL_KEY_PREFIX + b"watermarks"


def encode(times: dict[Input, datetime | None], partitions: dict[str, int]) -> bytes:
    return orjson.dumps({"marks": [[topic, partition, None if moment is None else moment.timestamp()]
                                   for (topic, partition), moment in times.items()],
                         "partitions": partitions})


def decode(value: bytes) -> tuple[dict[Input, datetime | None], dict[str, int]]:
    """Each input's time; None: read to its end."""
    record = orjson.loads(value)
    times = {(topic, int(partition)): None if at is None else datetime.fromtimestamp(at, timezone.utc)
             for topic, partition, at in record["marks"]}
    return times, {topic: int(count) for topic, count in record["partitions"].items()}
