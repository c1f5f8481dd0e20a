"""Hop 3: hand each notification to its channel and record the outcome on ``deliveries``.

At-least-once with concurrency: the agent runs at concurrency 1 and takes a
window of up to ``FOREWARN_DISPATCH_WINDOW`` notifications at a time
(``take_events``). The window is sent concurrently (paced by the provider's
token bucket, one recipient's messages in order), every outcome is produced
and acknowledged by Kafka, and only then does ``take_events`` ack the window's
events, so no offset is committed past an unfinished send. The window is the
bound on messages in flight: while it is busy, nothing more is taken
(backpressure).

What the dispatcher decides (``streams.channels.dispatcher``) lands here:
``deliveries`` always; ``optouts`` and ``fallbacks`` keyed and partitioned by
customer, as the decide agent places a customer; a notification whose retry
budget ran out goes to ``notifications.retry`` and is tried once more after
``FOREWARN_RETRY_DELAY`` by ``redispatch``; after that it goes to
``deadletter``. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from streams.agents.sending import Sends
from streams.app import (app, deadletter_topic, deliveries_topic, notifications_topic, raw_topic, settings)
from streams.channels.dispatcher import Dispatcher, Outcome
from streams.channels.registry import channels_from_env
from streams.core.directory import owner_partition
from streams.events import deadletter_record
from streams.metrics import DELIVERIES

log = logging.getLogger(__name__)
retry_topic = raw_topic(settings.topics.retry)
optouts_topic = raw_topic(settings.topics.optouts)
fallbacks_topic = raw_topic(settings.topics.fallbacks)

channels = channels_from_env(settings)
dispatcher = Dispatcher(channels, attempts=settings.dispatch_attempts)
# How long a window waits to fill: short, a lone notification should not wait for company.
WINDOW_WAIT = 0.05


def owned_share() -> None:
    """Pace with the share of the account's rate that our partitions of ``notifications`` stand for."""
    owned = sum(1 for tp in app.consumer.assignment() if tp.topic == settings.topics.notifications)
    dispatcher.set_share(owned, settings.partitions)


def parse(event) -> dict[str, Any] | None:
    try:
        notification = orjson.loads(event.value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(notification, dict) or notification.get("channel") not in channels:
        return None
    return notification if all(notification.get(k) for k in ("id", "to", "customer_id", "rule")) else None


async def dead(sends: Sends, event, reason: str) -> None:
    record = deadletter_record(topic=event.message.topic, partition=event.message.partition,
                               offset=event.message.offset, key=event.message.key, value=event.value, reason=reason)
    await sends.send(deadletter_topic, event.message.key, orjson.dumps(record))


async def record(sends: Sends, outcome: Outcome) -> None:
    notification = outcome.notification
    DELIVERIES.labels(outcome.delivery["channel"], outcome.delivery["provider"], outcome.delivery["status"]).inc()
    await sends.send(deliveries_topic, notification["id"].encode(), orjson.dumps(outcome.delivery))
    for topic, extra in ((optouts_topic, outcome.optout), (fallbacks_topic, outcome.fallback)):
        if extra is not None:
            await sends.send(topic, extra["customer_id"].encode(), orjson.dumps(extra),
                             partition=owner_partition(extra["customer_id"], settings.partitions))


@app.agent(notifications_topic, concurrency=1)
async def dispatch(stream):
    sends = Sends(app)
    async for events in stream.take_events(settings.dispatch_window, within=WINDOW_WAIT):
        owned_share()
        window, readable = [], []
        for event in events:
            notification = parse(event)
            if notification is None:
                await dead(sends, event, "not a notification (JSON object with id, channel, to, customer_id, rule)")
            else:
                window.append(notification)
                readable.append(event)
        for outcome in await dispatcher.deliver_all(window):
            await record(sends, outcome)
            if outcome.parked:
                now = time.time()
                parked = {"notification": outcome.notification, "reason": outcome.parked,
                          "unknown": outcome.unknown, "since": outcome.since,
                          "parked_at": datetime.fromtimestamp(now, timezone.utc).isoformat(),
                          "retry_at": now + settings.retry_delay}
                await sends.send(retry_topic, outcome.notification["id"].encode(), orjson.dumps(parked))
        await sends.flush()  # before take_events acks the window


@app.agent(retry_topic, concurrency=1)
async def redispatch(stream):
    """One more round for parked notifications, ``FOREWARN_RETRY_DELAY`` after parking; then deadletter."""
    sends = Sends(app)
    async for events in stream.take_events(settings.dispatch_window, within=WINDOW_WAIT):
        owned_share()
        parked = []
        for event in events:
            try:
                entry = orjson.loads(event.value)
                parked.append((event, entry, entry["notification"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                await dead(sends, event, "not a parked notification")
        # Records arrive in parking order, so waiting for the last one's time waits for them all.
        wait = max((entry.get("retry_at", 0) for _, entry, _ in parked), default=0) - time.time()
        if wait > 0:
            await asyncio.sleep(min(wait, settings.retry_delay))

        async def again(entry: dict[str, Any], notification: dict[str, Any]) -> Outcome:
            since = datetime.fromisoformat(entry["since"]) if entry.get("since") else None
            return await dispatcher.deliver(notification, since=since, unknown=entry.get("unknown"))

        outcomes = await asyncio.gather(*(again(entry, n) for _, entry, n in parked))
        for (event, entry, _), outcome in zip(parked, outcomes):
            await record(sends, outcome)
            if outcome.parked:
                await dead(sends, event, f"undeliverable after two rounds: {outcome.parked}")
        await sends.flush()
