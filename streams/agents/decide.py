"""Hop 2: apply each routed event to the state and decide who hears what, and when.

The decision itself is ``streams.core.decider.Decider``, driven by a clock of
``streams.core.clock``: the same code the simulator runs. This module only
feeds it, fires its timers and produces its decisions. One agent reads
``forewarn-events``, ``forewarn-due`` and the dispatcher's ``optouts`` and
``fallbacks`` so that every change to a customer's state is made by one
coroutine, in order.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

import faust
import orjson

from streams import gc_tuning
from streams.agents.contain import Containment, Poison
from streams.agents.lag import observe_lag
from streams.agents.topics import Pipeline
from streams.core.clock import Clock, EventClock, WallClock
from streams.core.config import CoreConfig
from streams.core.decider import Decider, Decision, Notification
from streams.core.directory import CustomerDirectory, owner_partition
from streams.core.fanout_plan import plan_fanout
from streams.core.schedule import Due
from streams.kafka.catch_up import CatchUp, CatchUpWatch
from streams.kafka.fail_stop import FailStop
from streams.kafka.sends import ChangelogTable, Sends
from streams.metrics import (FANOUT_ESTIMATED_SECONDS, FANOUT_OVER_LIMIT, FANOUT_RECIPIENTS, NOTIFICATIONS,
                             PROCESSING_SECONDS, SUPPRESSED)
from streams.settings import Settings

log = logging.getLogger(__name__)
BATCH = 1_000  # events decided before their outcomes are awaited and the states logged
BATCH_WAIT = 0.01  # seconds a batch waits to fill: what a lone event waits at most


def clock_for(settings: Settings) -> Clock:
    if settings.clock == "event":
        return EventClock(timedelta(seconds=settings.event_lateness), settings.event_idle)
    return WallClock()


class Decide:
    """What the decide agent and its timer do; faust only hands it records and partitions."""

    def __init__(self, pipeline: Pipeline, decider: Decider, sends: Sends, clock: Clock, catch_up: CatchUp,
                 owned: Callable[[], set[int]], poison: Poison | None = None):
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.decider = decider
        self.sends = sends
        self.clock = clock
        self.catch_up = catch_up
        self.owned = owned  # the partitions of forewarn-events this worker has now
        self.containment = Containment("decide", sends, pipeline.deadletter, poison)
        self.due_containment = Containment("due", sends, pipeline.deadletter, poison)

    def owned_by(self, partitions: set[int]) -> Callable[[str], bool]:
        count = self.settings.partitions
        return lambda customer_id: owner_partition(customer_id, count) in partitions

    async def batch(self, events) -> None:
        # In batches, so that waiting for Kafka to acknowledge the notifications before the states that
        # record them are logged (``Sends.settle``) costs one round trip per batch, not per event.
        with gc_tuning.in_progress():  # no full collection in the middle of a fan-out
            for event in events:
                await self._contained(event).run(event, self.one)
                if not self.catch_up.open:
                    self.catch_up.processed(event.message.topic, event.message.partition, event.message.offset)
            await self.sends.settle()
        observe_lag("decide", events)

    def _contained(self, event) -> Containment:
        return self.due_containment if event.message.topic == self.settings.topics.due else self.containment

    async def one(self, event) -> None:
        started = time.perf_counter()
        payload = orjson.loads(event.value)
        partition = self.sends.partition = event.message.partition
        topic, topics = event.message.topic, self.settings.topics
        if topic == topics.due:
            kind = await self._due(Due(payload["at"], payload["customer_id"], payload["pending_id"],
                                       payload["version"]))
        elif topic == topics.optouts:
            self.decider.opt_out(payload["customer_id"], payload["channel"])
            kind = "optout"
        elif topic == topics.fallbacks:
            await self.emit(self.decider.fall_back(payload, self.clock.current()))
            kind = "fallback"
        else:
            await self._event(payload, partition)
            kind = payload["type"]
        PROCESSING_SECONDS.labels(kind).observe(time.perf_counter() - started)

    async def _due(self, due: Due) -> str:
        if not self.catch_up.open:
            # Fired before a rebalance, read after it: back to the index until the events are read.
            self.decider.hold(due)
            return "due-held"
        await self.emit(self.decider.fire(due, self.clock.due_now(due.moment)))
        return "due"

    async def _event(self, payload: dict, partition: int) -> None:
        tick = self.clock.tick(payload)
        if tick.fire_until is not None:
            await self.emit(self.decider.fire_due(tick.fire_until, self.owned_by({partition})))
        if payload["type"] == "outage.started":
            self.announce_fanout(payload, partition)
        await self.emit(self.decider.handle(payload, tick.now, partition=partition))

    async def fire_due(self, caught_up: Callable[[], Awaitable[bool]]) -> None:
        """Hand what is due to the decide agent through ``forewarn-due``; the timer writes no table."""
        if not self.catch_up.open and not await caught_up():
            return
        until = self.clock.timer_until()
        if until is None:
            return
        partitions = self.settings.partitions
        dues = self.decider.due.pop_due(until, self.owned_by(self.owned()))
        for index, due in enumerate(dues):
            record = {"customer_id": due.customer_id, "pending_id": due.pending_id, "version": due.version,
                      "at": due.at}
            try:
                await self.pipeline.due.send(key=due.customer_id.encode(), value=orjson.dumps(record),
                                             partition=owner_partition(due.customer_id, partitions))
            except Exception as exc:  # noqa: BLE001  the entries are still in the states: back to the index
                log.warning("handing due messages over failed (%s); they fire on a later tick", type(exc).__name__)
                for held in dues[index:]:
                    self.decider.hold(held)
                return

    def announce_fanout(self, payload: dict, partition: int) -> None:
        """Log and expose the plan of an outage fan-out before it starts; loudly when it will take too long."""
        plan = plan_fanout(self.decider, payload, partition)
        if plan is None:
            return
        settings = self.settings
        sms_rate, email_rate = settings.sms_rate / settings.partitions, settings.email_rate / settings.partitions
        seconds = plan.seconds(sms_rate, email_rate)
        labels = (plan.outage_id, str(partition))
        for channel in ("sms", "email"):
            FANOUT_RECIPIENTS.labels(*labels, channel).set(plan.recipients[channel])
        FANOUT_ESTIMATED_SECONDS.labels(*labels).set(seconds)
        log.info("%s", plan.describe(sms_rate, email_rate))
        if seconds > settings.fanout_limit:
            FANOUT_OVER_LIMIT.inc()
            log.warning("FAN-OUT TOO SLOW: outage %s on partition %d needs about %.0f s at this partition's share of "
                        "the provider rate, more than the %.0f s limit; raise the rate or narrow the rule",
                        plan.outage_id, partition, seconds, settings.fanout_limit)

    async def emit(self, decisions: Iterable[Decision]) -> None:
        sends, pipeline = self.sends, self.pipeline
        partition = sends.partition  # a customer's decisions stay in the customer's partition
        # Counted here and added to the metrics once: a labelled child's ``inc`` takes a lock, per message of a fan-out.
        notified: Counter[tuple[str, str]] = Counter()
        suppressed: Counter[tuple[str, str]] = Counter()
        try:
            for decision in decisions:
                if isinstance(decision, Notification):
                    notified[decision.rule, decision.channel] += 1
                    await sends.send(pipeline.notifications, decision.customer_id.encode(),
                                     orjson.dumps(decision.to_dict()), partition)
                else:
                    suppressed[decision.rule, decision.reason] += 1
                    await sends.send(pipeline.suppressed, (decision.customer_id or "").encode(),
                                     orjson.dumps(decision.to_dict()), partition)
                if sends.changes_due:
                    await sends.settle()
        finally:
            for (rule, channel), count in notified.items():
                NOTIFICATIONS.labels(rule, channel).inc(count)
            for (rule, reason), count in suppressed.items():
                SUPPRESSED.labels(rule, reason).inc(count)


def register(app: faust.App, pipeline: Pipeline, config: CoreConfig, catch_up: CatchUp,
             bootstrap: list[str], poison: Poison | None = None) -> Decide:
    settings = pipeline.settings
    sends = Sends.of_app(app)
    directory = CustomerDirectory(ChangelogTable(pipeline.customers, sends), settings.partitions)
    decider = Decider(config.rules, config.renderer, directory, ChangelogTable(pipeline.outages, sends),
                      ChangelogTable(pipeline.states, sends))

    def owned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topics.events}

    hop = Decide(pipeline, decider, sends, clock_for(settings), catch_up, owned, poison)
    stop = FailStop("decide")
    watch = CatchUpWatch(app, catch_up, bootstrap, settings.topics.events)

    @pipeline.customers.on_recover
    async def rebuild_area_index() -> None:
        directory.rebuild_index()

    @pipeline.states.on_recover
    async def rebuild_due_index() -> None:
        decider.rebuild_due_index(hop.owned_by(owned()))

    @app.on_partitions_revoked.connect
    async def hold_timers(sender, revoked, **kwargs) -> None:
        catch_up.reset()

    @app.timer(interval=1.0, name="fire_due")
    async def fire_due() -> None:
        await hop.fire_due(watch.caught_up)

    @app.agent(pipeline.decide_input, concurrency=1, name="decide")
    async def decide(stream):
        async for events in stream.take_events(BATCH, within=BATCH_WAIT):
            await stop.run(hop.batch, events)

    return hop
