"""Hop 3: hand each notification to its channel and record the outcome on ``deliveries``.

At-least-once in, at most one send out: the agent runs at concurrency 1 and
takes a window of up to ``FOREWARN_DISPATCH_WINDOW`` notifications at a time
(``take_events``). Each window goes through the send ledger
(``streams.channels.ledger``, kept in the ``dispatched`` table): a notification
already sent is not sent again; the others are marked ``sending`` and the marks
are on Kafka before the first request; the window is sent concurrently (paced by
the provider's token bucket, one recipient's messages in order); the outcomes
are produced and acknowledged; the marks become ``done``; only then does
``take_events`` ack the window, so no offset is committed past an unfinished
send. A notification found marked ``sending`` was in flight when a worker
stopped: the provider is asked whether it has it before it is sent.

The window is the bound on messages in flight: while it is busy, nothing more
is taken, and faust stops fetching once its buffer is full (backpressure).

What the courier decides (``streams.channels.courier``) lands here:
``deliveries`` always; ``optouts`` and ``fallbacks`` keyed and partitioned by
customer, as the decide agent places a customer; a notification whose retry
budget ran out goes to ``notifications.retry`` (in the notification's own
partition) and is tried once more after ``FOREWARN_RETRY_DELAY`` by
``redispatch``; after that it goes to ``deadletter``. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from streams.kafka.sends import ChangelogTable, Sends
from streams.worker import (app, deadletter_topic, deliveries_topic, dispatched_table, notifications_topic, raw_topic,
                         settings)
from streams.channels.courier import Courier, DeliveryOutcome
from streams.channels.ledger import DONE, SENDING, Mark, SendLedger
from streams.channels.registry import channels_from_env
from streams.core.directory import owner_partition
from streams.core.events import deadletter_record
from streams.metrics import DELIVERIES, NOT_SENT_AGAIN

log = logging.getLogger(__name__)
retry_topic = raw_topic(settings.topics.retry)
optouts_topic = raw_topic(settings.topics.optouts)
fallbacks_topic = raw_topic(settings.topics.fallbacks)

channels = channels_from_env(settings)
courier = Courier(channels, attempts=settings.dispatch_attempts)
# How long a window waits to fill: short, a lone notification should not wait for company.
WINDOW_WAIT = 0.05
IN_FLIGHT = "in flight when a courier stopped"


def owned_share() -> None:
    """Pace with the share of the account's rate that our partitions of ``notifications`` stand for."""
    owned = sum(1 for tp in app.consumer.assignment() if tp.topic == settings.topics.notifications)
    courier.set_share(owned, settings.partitions)


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


async def record(sends: Sends, outcome: DeliveryOutcome) -> None:
    notification = outcome.notification
    DELIVERIES.labels(outcome.delivery["channel"], outcome.delivery["provider"], outcome.delivery["status"]).inc()
    await sends.send(deliveries_topic, notification["id"].encode(), orjson.dumps(outcome.delivery))
    for topic, extra in ((optouts_topic, outcome.optout), (fallbacks_topic, outcome.fallback)):
        if extra is not None:
            await sends.send(topic, extra["customer_id"].encode(), orjson.dumps(extra),
                             partition=owner_partition(extra["customer_id"], settings.partitions))


def watch_offsets(seen: dict[int, int], event) -> None:
    """Warn when the consumer hands over an offset past the next one: the ones between were never seen here."""
    partition, offset = event.message.partition, event.message.offset
    last = seen.get(partition)
    if last is not None and offset > last + 1:
        log.warning("notifications partition %d: offsets %d to %d never reached the courier",
                    partition, last + 1, offset - 1)
    seen[partition] = offset


@dataclass
class Item:
    """A notification to send, from partition ``partition`` of its topic."""

    partition: int
    notification: dict[str, Any]
    event: Any
    mark: Mark | None  # what the ledger knew of it when it was taken
    since: datetime | None = None  # an earlier round's first attempt
    unknown: str | None = None  # an earlier round left the outcome unknown


class GuardedSends:
    """One agent's sends through the ledger: mark, send, record, mark done."""

    def __init__(self) -> None:
        self.sends = Sends(app)
        self.ledger = SendLedger(ChangelogTable(dispatched_table, self.sends), retention=settings.sent_retention)

    def sent_before(self, notification: dict[str, Any], mark: Mark | None, *, parked_counts: bool = True) -> bool:
        """This id was sent already (or parked, and the retry round owns it): count it and let it be."""
        if mark is None or mark.state != DONE or (mark.parked and not parked_counts):
            return False
        NOT_SENT_AGAIN.labels(notification["channel"]).inc()
        log.debug("notification %s was sent before (%s); not sent again", notification["id"], mark.status)
        return True

    async def window(self, items: list[Item], settled: Callable[[Item, DeliveryOutcome], Awaitable[None]]) -> None:
        """Send ``items``; ``settled`` is called for each outcome before its mark says done."""
        now, unsure = datetime.now(timezone.utc), {}
        for item in items:
            key, mark = item.notification["id"], item.mark
            if mark is not None and mark.state == SENDING:
                unsure[key] = (datetime.fromisoformat(mark.since), IN_FLIGHT)
                continue
            self.sends.partition = item.partition
            self.ledger.sending(key, item.partition, item.since or now)
            if item.unknown is not None:
                unsure[key] = (item.since, item.unknown)
        await self.sends.flush()  # every mark on Kafka before the first request goes out
        outcomes = await courier.deliver_all([item.notification for item in items], unsure)
        for item, outcome in zip(items, outcomes):
            await record(self.sends, outcome)
            await settled(item, outcome)
        await self.sends.flush()  # the outcomes on Kafka before the marks say done
        for item, outcome in zip(items, outcomes):
            self.sends.partition = item.partition
            self.ledger.done(item.notification["id"], item.partition, outcome.delivery["status"])
        for key, partition in self.ledger.expired():
            self.sends.partition = partition
            self.ledger.forget(key)
        await self.sends.flush()  # before take_events acks the window


@app.agent(notifications_topic, concurrency=1)
async def dispatch(stream):
    guarded = GuardedSends()

    async def settled(item: Item, outcome: DeliveryOutcome) -> None:
        if outcome.parked:
            now = time.time()
            parked = {"notification": outcome.notification, "reason": outcome.parked,
                      "unknown": outcome.unknown, "since": outcome.since,
                      "parked_at": datetime.fromtimestamp(now, timezone.utc).isoformat(),
                      "retry_at": now + settings.retry_delay}
            await guarded.sends.send(retry_topic, outcome.notification["id"].encode(), orjson.dumps(parked),
                                     partition=item.partition)

    seen: dict[int, int] = {}
    async for events in stream.take_events(settings.dispatch_window, within=WINDOW_WAIT):
        owned_share()
        items, taken = [], set()
        for event in events:
            watch_offsets(seen, event)
            notification = parse(event)
            if notification is None:
                await dead(guarded.sends, event,
                           "not a notification (JSON object with id, channel, to, customer_id, rule)")
            elif notification["id"] not in taken:
                mark = guarded.ledger.get(notification["id"])
                if not guarded.sent_before(notification, mark):
                    taken.add(notification["id"])
                    items.append(Item(event.message.partition, notification, event, mark))
        await guarded.window(items, settled)


@app.agent(retry_topic, concurrency=1)
async def redispatch(stream):
    """One more round for parked notifications, ``FOREWARN_RETRY_DELAY`` after parking; then deadletter."""
    guarded = GuardedSends()

    async def settled(item: Item, outcome: DeliveryOutcome) -> None:
        if outcome.parked:
            await dead(guarded.sends, item.event, f"undeliverable after two rounds: {outcome.parked}")

    async for events in stream.take_events(settings.dispatch_window, within=WINDOW_WAIT):
        owned_share()
        items, entries, taken = [], [], set()
        for event in events:
            try:
                entry = orjson.loads(event.value)
                notification = entry["notification"]
                notification_id = notification["id"]
                since = datetime.fromisoformat(entry["since"]) if entry.get("since") else None
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                await dead(guarded.sends, event, "not a parked notification")
                continue
            if notification_id in taken:
                continue
            mark = guarded.ledger.get(notification_id)
            if guarded.sent_before(notification, mark, parked_counts=False):
                continue
            taken.add(notification_id)
            entries.append(entry)
            items.append(Item(event.message.partition, notification, event, mark, since, entry.get("unknown")))
        # Records arrive in parking order, so waiting for the last one's time waits for them all.
        wait = max((entry.get("retry_at", 0) for entry in entries), default=0) - time.time()
        if wait > 0:
            await asyncio.sleep(min(wait, settings.retry_delay))
        await guarded.window(items, settled)
