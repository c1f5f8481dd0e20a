"""Containment: an unexpected exception while handling one record never stops a hop.

The record goes to ``deadletter`` with the hop, the exception and its original
bytes, and the hop goes on with the next record. The dead letter is on Kafka
(acknowledged, retried until it is) before the handler returns, so the
record's offset is never committed without it.

What cannot be pinned on one record (the producer failing a whole batch)
stops the worker instead (``streams.kafka.fail_stop``): it starts again from
the committed offsets, which never pass the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from streams.core.events import deadletter_record
from streams.kafka.sends import Sends
from streams.metrics import HOP_FAILURES

log = logging.getLogger(__name__)


class InjectedFault(Exception):
    """Raised by ``Poison`` in the hop it names: how the fault tests make a hop fail on purpose."""


class Poison:
    """A test-only fault hook: records of a hop whose bytes contain its marker fail as if a bug hit them.

    Off unless ``FOREWARN_TEST_POISON`` is set: ``hop:marker``, several separated by commas.
    """

    def __init__(self, spec: str | None):
        self.markers: dict[str, bytes] = {}
        for part in filter(None, (spec or "").split(",")):
            hop, _, marker = part.partition(":")
            if marker:
                self.markers[hop.strip()] = marker.encode()

    def check(self, hop: str, value: bytes | None) -> None:
        marker = self.markers.get(hop)
        if marker and value is not None and marker in value:
            raise InjectedFault(f"poisoned record in {hop}")


class Containment:
    """Runs one hop's handler per record; a failure becomes a dead letter, never a crash or a gap."""

    def __init__(self, hop: str, sends: Sends, deadletter_topic: Any, poison: Poison | None = None):
        self.hop = hop
        self.sends = sends
        self.deadletter_topic = deadletter_topic
        self.poison = poison or Poison(None)

    async def run(self, event, handler: Callable[[Any], Awaitable[None]]) -> bool:
        """``handler(event)``; False when it failed and the event was dead-lettered instead."""
        try:
            self.poison.check(self.hop, event.value)
            await handler(event)
        except Exception as exc:  # noqa: BLE001  whatever it was, it ends as a record, and the hop goes on
            message = event.message
            HOP_FAILURES.labels(self.hop).inc()
            log.error("%s: record %s/%d/%d went to the dead-letter topic: %s", self.hop, message.topic,
                      message.partition, message.offset, type(exc).__name__)
            await self.dead(event, f"{self.hop}: {type(exc).__name__}: {exc}")
            return False
        return True

    async def dead(self, event, reason: str) -> None:
        """Put ``event`` on the dead-letter topic, naming this hop, and wait until Kafka has it."""
        message = event.message
        record = deadletter_record(topic=message.topic, partition=message.partition, offset=message.offset,
                                   key=message.key, value=event.value, reason=reason, hop=self.hop)
        await self.sends.send_acknowledged(self.deadletter_topic, message.key, orjson.dumps(record))
