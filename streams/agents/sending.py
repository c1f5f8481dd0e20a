"""Produce from an agent without waiting for each message, and without losing any.

faust flushes its producer before it commits consumer offsets, so a message
handed to the producer while its source message was processed is on the broker
before that source offset is committed: at-least-once holds without waiting
for each acknowledgement (which would cap an agent at one broker round trip
per event). What this class adds is a bound: with more than two ``batch``es unacknowledged
it waits for the oldest one, so a large fan-out cannot pile up unsent messages
in memory, and the producer still always has a batch in flight.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import faust


class Sends:
    batch: int = 2000

    def __init__(self) -> None:
        self._pending: deque[Any] = deque()

    async def send(self, topic: faust.TopicT, key: bytes | None, value: bytes,
                   partition: int | None = None) -> None:
        self._pending.append(await topic.send(key=key, value=value, partition=partition))
        if len(self._pending) >= 2 * self.batch:
            await asyncio.gather(*(self._pending.popleft() for _ in range(self.batch)))

    async def flush(self) -> None:
        pending, self._pending = self._pending, deque()
        if pending:
            await asyncio.gather(*pending)
