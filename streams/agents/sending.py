"""Produce from an agent and know it landed before the source message is acked."""

from __future__ import annotations

import asyncio
from typing import Any

import faust


class Sends:
    """Collects send futures and waits for them in bounded batches.

    faust acks a source message once the agent asks for the next one; waiting
    here first is what makes the pipeline at-least-once rather than at-most-once.
    """

    batch: int = 500

    def __init__(self) -> None:
        self._pending: list[Any] = []

    async def send(self, topic: faust.TopicT, key: bytes | None, value: bytes,
                   partition: int | None = None) -> None:
        self._pending.append(await topic.send(key=key, value=value, partition=partition))
        if len(self._pending) >= self.batch:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
