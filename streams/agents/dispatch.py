"""Hop 3: hand each notification to its channel and record the outcome on ``deliveries``.

A transient failure is retried with capped exponential backoff; after the
retry budget the notification is parked on the dead-letter topic with the
reason, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timezone
from typing import Any

import orjson

from streams.agents.sending import Sends
from streams.app import app, deadletter_topic, deliveries_topic, notifications_topic, settings
from streams.channels.registry import channels_from_env
from streams.errors import ChannelRejected, ChannelUnavailable
from streams.events import deadletter_record
from streams.metrics import DELIVERIES

log = logging.getLogger(__name__)
channels = channels_from_env(settings)
RETRIES = 5
BACKOFF_CAP = 30.0


def delivery(notification: dict[str, Any], status: str, provider: str, *, attempts: int,
             provider_message_id: str | None = None, error: str | None = None) -> dict[str, Any]:
    return {"notification_id": notification["id"], "channel": notification["channel"], "status": status,
            "at": datetime.now(timezone.utc).isoformat(), "provider": provider,
            "provider_message_id": provider_message_id, "error": error, "attempts": attempts}


async def deliver(notification: dict[str, Any]) -> dict[str, Any]:
    channel = channels[notification["channel"]]
    for attempt in range(1, RETRIES + 1):
        try:
            handover = await channel.send(notification)
        except ChannelRejected as exc:
            return delivery(notification, "failed", channel.provider, attempts=attempt, error=str(exc))
        except ChannelUnavailable as exc:
            if attempt == RETRIES:
                return delivery(notification, "parked", channel.provider, attempts=attempt, error=str(exc))
            delay = exc.retry_after or min(BACKOFF_CAP, 2 ** attempt) * random.uniform(0.5, 1.0)
            log.warning("channel %s unavailable (%s); retry %d in %.1f s", notification["channel"], exc, attempt, delay)
            await asyncio.sleep(delay)
        else:
            return delivery(notification, handover.status, handover.provider, attempts=attempt,
                            provider_message_id=handover.provider_message_id)
    raise AssertionError("unreachable: the last attempt returns")


@app.agent(notifications_topic, concurrency=1)
async def dispatch(stream):
    sends = Sends()
    async for event in stream.events():
        notification = orjson.loads(event.value)
        record = await deliver(notification)
        DELIVERIES.labels(record["channel"], record["provider"], record["status"]).inc()
        key = notification["id"].encode()
        if record["status"] == "parked":
            parked = deadletter_record(topic=event.message.topic, partition=event.message.partition,
                                       offset=event.message.offset, key=event.message.key, value=event.value,
                                       reason=f"parked after {RETRIES} attempts: {record['error']}")
            await sends.send(deadletter_topic, key, orjson.dumps(parked))
        await sends.send(deliveries_topic, key, orjson.dumps(record))
        await sends.flush()
