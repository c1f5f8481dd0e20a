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

What the courier decides (``streams.channels.courier.Courier``) lands here:
``deliveries`` always; ``consent`` and ``fallbacks`` keyed and partitioned by
customer, as the decide agent places a customer; a notification whose retry
budget ran out goes to ``notifications.retry`` (in the notification's own
partition) and is tried once more after ``FOREWARN_RETRY_DELAY`` by
``redispatch``, parked again while it keeps failing, for up to a day
(``Dispatch.park_for``); after that it goes to ``deadletter``. An unexpected
failure on one record goes to ``deadletter`` too (``streams.agents.contain``).
Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any

import faust
import orjson

from streams.agents.contain import Containment, Poison
from streams.agents.topics import Pipeline
from streams.channels.courier import Courier, DeliveryOutcome
from streams.channels.ledger import DONE, SENDING, Mark, SendLedger
from streams.channels.registry import channels_for
from streams.core.directory import owner_partition
from streams.kafka import faust_fixes
from streams.kafka.fail_stop import FailStop
from streams.kafka.sends import ChangelogTable, Sends
from streams.core.consent import SERVICE, PreferenceBook
from streams.core.outcomes import Suppression
from streams.metrics import DELIVERIES, NOT_SENT_AGAIN, SUPPRESSED

log = logging.getLogger(__name__)
# How long a window waits to fill: short, a lone notification should not wait for company.
WINDOW_WAIT = 0.05
IN_FLIGHT = "in flight when a dispatcher stopped"


def parse(event, channels) -> dict[str, Any] | None:
    try:
        notification = orjson.loads(event.value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(notification, dict) or notification.get("channel") not in channels:
        return None
    return notification if all(notification.get(k) for k in ("id", "to", "customer_id", "rule")) else None


def watch_offsets(seen: dict[int, int], event) -> None:
    """Warn when the consumer hands over an offset past the next one: the ones between were never seen here."""
    partition, offset = event.message.partition, event.message.offset
    last = seen.get(partition)
    if last is not None and offset > last + 1:
        log.warning("notifications partition %d: offsets %d to %d never reached the dispatcher",
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


Settled = Callable[[Item, DeliveryOutcome], Awaitable[None]]


class GuardedSends:
    """One agent's sends through the ledger: mark, send, record, mark done."""

    def __init__(self, pipeline: Pipeline, courier: Courier, sends: Sends):
        self.pipeline = pipeline
        self.courier = courier
        self.sends = sends
        self.ledger = SendLedger(ChangelogTable(pipeline.dispatched, sends),
                                 retention=pipeline.settings.sent_retention)

    def sent_before(self, notification: dict[str, Any], mark: Mark | None, *, parked_counts: bool = True) -> bool:
        """This id was sent already (or parked, and the retry round owns it): count it and let it be."""
        if mark is None or mark.state != DONE or (mark.parked and not parked_counts):
            return False
        NOT_SENT_AGAIN.labels(notification["channel"]).inc()
        log.debug("notification %s was sent before (%s); not sent again", notification["id"], mark.status)
        return True

    async def window(self, items: list[Item], settled: Settled) -> None:
        """Send ``items``; ``settled`` is called for each outcome before its mark says done."""
        unsure = self._mark_sending(items)
        await self.sends.flush()  # every mark on Kafka before the first request goes out
        outcomes = await self.courier.deliver_all([item.notification for item in items], unsure)
        for item, outcome in zip(items, outcomes):
            await self._record(outcome)
            await settled(item, outcome)
        await self.sends.flush()  # the outcomes on Kafka before the marks say done
        for item, outcome in zip(items, outcomes):
            self.sends.partition = item.partition
            self.ledger.done(item.notification["id"], item.partition, outcome.delivery["status"])
        for key, partition in self.ledger.expired():
            self.sends.partition = partition
            self.ledger.forget(key)
        await self.sends.flush()  # before take_events acks the window

    def _mark_sending(self, items: list[Item]) -> dict[str, tuple[datetime | None, str]]:
        """Mark each item ``sending``; the ones whose outcome is not known yet, with since when."""
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
        return unsure

    async def _record(self, outcome: DeliveryOutcome) -> None:
        notification, pipeline = outcome.notification, self.pipeline
        DELIVERIES.labels(outcome.delivery["channel"], outcome.delivery["provider"], outcome.delivery["status"]).inc()
        await self.sends.send(pipeline.deliveries, notification["id"].encode(), orjson.dumps(outcome.delivery))
        for topic, extra in ((pipeline.consent, outcome.optout), (pipeline.fallbacks, outcome.fallback)):
            if extra is not None:
                await self.sends.send(topic, extra["customer_id"].encode(), orjson.dumps(extra),
                                      partition=owner_partition(extra["customer_id"], pipeline.settings.partitions))


class Dispatch:
    """The dispatch agent's window (``notifications``) and the retry round's (``notifications.retry``).

    A notification whose channel keeps failing (a provider down, a full outbox
    disk) is parked and tried again every ``FOREWARN_RETRY_DELAY`` for
    ``park_for`` seconds after its first attempt; only then is it a dead letter.
    """

    park_for: float = 86_400.0

    def __init__(self, pipeline: Pipeline, courier: Courier, first: GuardedSends, retry: GuardedSends,
                 owned_notifications: Callable[[], int], poison: Poison | None = None,
                 preferences: PreferenceBook | None = None):
        self.pipeline = pipeline
        self.preferences = preferences or PreferenceBook()  # written by the decide hop, read here just before sending
        self.settings = pipeline.settings
        self.courier = courier
        self.first = first
        self.retry = retry
        self.containment = Containment("dispatch", first.sends, pipeline.deadletter, poison)
        self.retry_containment = Containment("redispatch", retry.sends, pipeline.deadletter, poison)
        self.owned_notifications = owned_notifications
        self._seen: dict[int, int] = {}

    def owned_share(self) -> None:
        """Pace with the share of the account's rate that our partitions of ``notifications`` stand for."""
        self.courier.set_share(self.owned_notifications(), self.settings.partitions)

    async def window(self, events) -> None:
        self.owned_share()
        items: list[Item] = []
        taken: set[str] = set()
        for event in events:
            watch_offsets(self._seen, event)
            await self.containment.run(event, partial(self._take, items=items, taken=taken))
        await self.first.window(items, self._park)

    async def _take(self, event, items: list[Item], taken: set[str]) -> None:
        guarded = self.first
        notification = parse(event, self.courier.channels)
        if notification is None:
            await self.containment.dead(event, "not a notification (JSON object with id, channel, to, customer_id, "
                                                "rule)")
        elif notification["id"] not in taken and not await self._withheld(guarded.sends, event, notification):
            mark = guarded.ledger.get(notification["id"])
            if not guarded.sent_before(notification, mark):
                taken.add(notification["id"])
                items.append(Item(event.message.partition, notification, event, mark))

    async def _withheld(self, sends: Sends, event, notification: dict[str, Any]) -> bool:
        """The customer opted out since the message was decided: it goes to ``suppressed``, not out."""
        reason = self.preferences.withheld(notification["customer_id"], notification["channel"],
                                           notification.get("category") or SERVICE, notification["rule"])
        if reason is None:
            return False
        now = datetime.now(timezone.utc).isoformat()
        suppression = Suppression(notification["rule"], notification["customer_id"], reason,
                                  (notification.get("event_ids") or [notification["id"]])[-1], now,
                                  channel=notification["channel"], key=notification.get("key"),
                                  detail=f"withheld at dispatch: notification {notification['id']}")
        SUPPRESSED.labels(notification["rule"], reason).inc()
        await sends.send(self.pipeline.suppressed, notification["customer_id"].encode(),
                         orjson.dumps(suppression.to_dict()), partition=event.message.partition)
        return True

    async def _park(self, item: Item, outcome: DeliveryOutcome) -> None:
        if outcome.parked:
            await self._park_on(self.first.sends, item, outcome)

    async def _park_on(self, sends: Sends, item: Item, outcome: DeliveryOutcome) -> None:
        now = time.time()
        parked = {"notification": outcome.notification, "reason": outcome.parked,
                  "unknown": outcome.unknown, "since": outcome.since,
                  "parked_at": datetime.fromtimestamp(now, timezone.utc).isoformat(),
                  "retry_at": now + self.settings.retry_delay}
        await sends.send(self.pipeline.retry, outcome.notification["id"].encode(), orjson.dumps(parked),
                         partition=item.partition)

    async def retry_window(self, events) -> None:
        """One more round for parked notifications, ``FOREWARN_RETRY_DELAY`` after parking; then deadletter."""
        self.owned_share()
        items, retry_at = await self._parked_items(events)
        # Records arrive in parking order, so waiting for the last one's time waits for them all.
        wait = max(retry_at, default=0) - time.time()
        if wait > 0:
            await asyncio.sleep(min(wait, self.settings.retry_delay))
        # Preferences as they are now, after the wait: an opt-out while parked holds.
        items = [item for item in items if not await self._withheld(self.retry.sends, item.event, item.notification)]
        await self.retry.window(items, self._give_up)

    async def _parked_items(self, events) -> tuple[list[Item], list[float]]:
        items: list[Item] = []
        retry_at: list[float] = []
        taken: set[str] = set()
        for event in events:
            await self.retry_containment.run(event, partial(self._take_parked, items=items, retry_at=retry_at,
                                                            taken=taken))
        return items, retry_at

    async def _take_parked(self, event, items: list[Item], retry_at: list[float], taken: set[str]) -> None:
        guarded = self.retry
        try:
            entry = orjson.loads(event.value)
            notification = entry["notification"]
            notification_id = notification["id"]
            since = datetime.fromisoformat(entry["since"]) if entry.get("since") else None
            moment = float(entry.get("retry_at", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            await self.retry_containment.dead(event, "not a parked notification")
            return
        if notification_id in taken:
            return
        mark = guarded.ledger.get(notification_id)
        if guarded.sent_before(notification, mark, parked_counts=False):
            return
        taken.add(notification_id)
        retry_at.append(moment)
        items.append(Item(event.message.partition, notification, event, mark, since, entry.get("unknown")))

    async def _give_up(self, item: Item, outcome: DeliveryOutcome) -> None:
        """Still failing: parked again while the first attempt is younger than ``park_for``, then a dead letter."""
        if not outcome.parked:
            return
        first = datetime.fromisoformat(outcome.since) if outcome.since else datetime.now(timezone.utc)
        waited = (datetime.now(timezone.utc) - first).total_seconds()
        if waited < self.park_for:
            await self._park_on(self.retry.sends, item, outcome)
        else:
            await self.retry_containment.dead(item.event, f"undeliverable for {waited:.0f} s: {outcome.parked}")


def register(app: faust.App, pipeline: Pipeline, poison: Poison | None = None) -> Dispatch:
    settings = pipeline.settings
    courier = Courier(channels_for(settings), attempts=settings.dispatch_attempts)

    def owned_notifications() -> int:
        return sum(1 for tp in app.consumer.assignment() if tp.topic == settings.topics.notifications)

    first, retry = GuardedSends(pipeline, courier, Sends.of_app(app)), GuardedSends(pipeline, courier, Sends.of_app(app))
    hop = Dispatch(pipeline, courier, first, retry, owned_notifications, poison,
                   PreferenceBook(ChangelogTable(pipeline.preferences, first.sends)))
    stop, stop_retry = FailStop("dispatch"), FailStop("redispatch")

    @app.agent(pipeline.notifications, concurrency=1, name="dispatch")
    async def dispatch(stream):
        async for events in faust_fixes.ordered_batches(stream, settings.dispatch_window, WINDOW_WAIT):
            await stop.run(hop.window, events)

    @app.agent(pipeline.retry, concurrency=1, name="redispatch")
    async def redispatch(stream):
        async for events in faust_fixes.ordered_batches(stream, settings.dispatch_window, WINDOW_WAIT):
            await stop_retry.run(hop.retry_window, events)

    return hop
