"""Hop 2: apply each routed event to the state and decide who hears what, and when.

The decision itself is ``streams.core.decider.Decider``, told the time by
``streams.core.clock``: the same code the simulator runs. This module only
feeds it, fires its timers and produces its decisions. One agent reads
``forewarn-events``, ``forewarn-due`` and the dispatcher's ``optouts`` and
``fallbacks`` so that every change to a customer's state is made by one
coroutine, in order.

Each partition of ``forewarn-events`` carries ingest's watermark records
(``streams.agents.marks``) behind the events they cover. On the wall clock a
pending message fires once every input of its rule is read past its due time;
in event time the partition's events wait in a ``Timeline`` until every input
is read past them, and are decided in event-time order, as the simulator does.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import faust
from decimal import Decimal

import orjson

from streams import gc_tuning
from streams.agents import marks
from streams.agents.contain import Containment, Poison
from streams.agents.lag import observe_lag
from streams.agents.topics import Pipeline
from streams.core.clock import Step, Timeline, Watermarks, moves_clock, wall_now
from streams.core.cost import billed_units
from streams.core.config import CoreConfig
from streams.core.consent import PreferenceChange
from streams.core.decider import Decider, Decision, Notification
from streams.core.directory import CustomerDirectory, owner_partition
from streams.core.fanout_plan import plan_fanout
from streams.core.schedule import Due, DueIndex
from streams.kafka import faust_fixes
from streams.kafka.catch_up import CatchUp, CatchUpWatch
from streams.kafka.fail_stop import FailStop
from streams.kafka.sends import ChangelogTable, Sends
from streams.metrics import (FANOUT_ESTIMATED_COST, FANOUT_ESTIMATED_SECONDS, FANOUT_OVER_LIMIT, FANOUT_RECIPIENTS,
                             NOTIFICATIONS, PROCESSING_SECONDS, SUPPRESSED, ESTIMATED_COST)
from streams.settings import Settings

log = logging.getLogger(__name__)
BATCH = 1_000  # events decided before their outcomes are awaited and the states logged
BATCH_WAIT = 0.01  # seconds a batch waits to fill: what a lone event waits at most


@dataclass(frozen=True)
class Timing:
    """How the decide hop tells time (``FOREWARN_CLOCK``)."""

    event_time: bool = False
    lateness: timedelta = timedelta(0)
    now: Callable[[], datetime] = wall_now


def timing_for(settings: Settings) -> Timing:
    return Timing(settings.clock == "event", timedelta(seconds=settings.event_lateness))


class Decide:
    """What the decide agent and its timer do; faust only hands it records and partitions."""

    def __init__(self, pipeline: Pipeline, decider: Decider, sends: Sends, timing: Timing, catch_up: CatchUp,
                 owned: Callable[[], set[int]], poison: Poison | None = None):
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.decider = decider
        self.sends = sends
        self.timing = timing
        self.catch_up = catch_up
        self.owned = owned  # the partitions of forewarn-events this worker has now
        self.containment = Containment("decide", sends, pipeline.deadletter, poison)
        self.due_containment = Containment("due", sends, pipeline.deadletter, poison)
        topics = self.settings.topics
        self.clock_topics = (topics.orders, topics.carts, topics.outages, topics.support)
        self.rule_inputs = {rule.id: tuple({topics.for_event_type(t) for t in (*rule.events, *(c for c, _ in rule.cancel_on))}
                                           & set(self.clock_topics)) for rule in decider.rules.rules}
        self.watermarks: dict[int, Watermarks] = {}  # per partition of forewarn-events
        self.timelines: dict[int, Timeline] = {}  # event time: what each partition holds back

    def owned_by(self, partitions: set[int]) -> Callable[[str], bool]:
        count = self.settings.partitions
        return lambda customer_id: owner_partition(customer_id, count) in partitions

    def timeline(self, partition: int) -> Timeline:
        timeline = self.timelines.get(partition)
        if timeline is None:
            timeline = self.timelines[partition] = Timeline(self.marks(partition), self.clock_topics,
                                                            self.timing.lateness)
        return timeline

    def marks(self, partition: int) -> Watermarks:
        return self.watermarks.setdefault(partition, Watermarks())

    def forget(self) -> None:
        """Partitions moved: what was held is read again from the commits, the watermarks are learnt again."""
        for timeline in self.timelines.values():
            timeline.drop()
        self.timelines.clear()
        self.watermarks.clear()
        faust_fixes.holds.drop()

    async def batch(self, events) -> None:
        # In batches, so that waiting for Kafka to acknowledge the notifications before the states that
        # record them are logged (``Sends.settle``) costs one round trip per batch, not per event.
        with gc_tuning.in_progress():  # no full collection in the middle of a fan-out
            touched: set[int] = set()
            for event in events:
                await self._contained(event).run(event, self.one)
                touched.add(event.message.partition)
                if not self.catch_up.open:
                    self.catch_up.processed(event.message.topic, event.message.partition, event.message.offset)
            if self.timing.event_time:
                for partition in sorted(touched):
                    await self.decide_held(partition, self.timeline(partition).release())
            await self.sends.settle()
        observe_lag("decide", events)

    def _contained(self, event) -> Containment:
        return self.due_containment if event.message.topic == self.settings.topics.due else self.containment

    async def one(self, event) -> None:
        started = time.perf_counter()
        message = event.message
        if message.key == marks.KEY and message.topic == self.settings.topics.events:
            self._watermark(message.partition, event.value)
            return
        payload = orjson.loads(event.value)
        partition = self.sends.partition = message.partition
        topic, topics = message.topic, self.settings.topics
        if topic == topics.due:
            kind = await self._due(payload, partition)
        elif topic == topics.consent:
            self.decider.prefer(PreferenceChange.of(payload, partition))
            kind = "consent"
        elif topic == topics.fallbacks:
            await self.emit(self.decider.fall_back(payload, self.now(partition)))
            kind = "fallback"
        elif self.timing.event_time and moves_clock(payload):
            if faust_fixes.holds.hold((topic, partition), message.offset):
                self.timeline(partition).add(payload, event)
            return
        else:
            await self._event(payload, partition, self.now(partition))
            kind = payload["type"]
        PROCESSING_SECONDS.labels(kind).observe(time.perf_counter() - started)

    def now(self, partition: int) -> datetime:
        return self.timeline(partition).now() if self.timing.event_time else self.timing.now()

    def _watermark(self, partition: int, value: bytes) -> None:
        times, partitions = marks.decode(value)
        watermarks = self.marks(partition)
        for topic, count in partitions.items():
            watermarks.expect(topic, count)
        for source, moment in times.items():
            if moment is None:
                watermarks.at_end(source)
            else:
                watermarks.read(source, moment)

    async def _due(self, payload: dict, partition: int) -> str:
        due = Due(payload["at"], payload["customer_id"], payload["pending_id"], payload["version"])
        if not self.catch_up.open:
            # Fired before a rebalance, read after it: back to the index until the events are read.
            self.decider.hold(due)
            return "due-held"
        await self.emit(self.decider.fire(due, due.moment if self.timing.event_time else self.timing.now()))
        return "due"

    async def decide_held(self, partition: int, steps: Iterable[Step]) -> None:
        """Event time: what the timeline hands on, in order, each after what fell due before it."""
        for step in steps:
            self.sends.partition = partition
            await self.emit(self.decider.fire_due(step.until, {partition}))
            if step.event is not None:
                await self.containment.run(step.ref, lambda _, step=step: self._event(step.event, partition,
                                                                                       step.until))
                message = step.ref.message
                faust_fixes.holds.release((message.topic, partition), message.offset)

    async def _event(self, payload: dict, partition: int, now: datetime) -> None:
        self.sends.partition = partition
        if payload["type"] == "outage.started":
            self.announce_fanout(payload, partition)
        await self.emit(self.decider.handle(payload, now, partition=partition))

    async def fire_due(self, caught_up: Callable[[], Awaitable[bool]]) -> None:
        """The 1 s timer: hand what is due to the decide agent through ``forewarn-due``; it writes no table."""
        if self.timing.event_time:
            return  # pending messages fire as the timelines pass their due times
        if not self.catch_up.open and not await caught_up():
            return
        owned = self.owned()
        limits = self.due_limits(owned)
        dues = self.decider.due.pop_due(limits, owned)
        records = [(due, {"customer_id": due.customer_id, "pending_id": due.pending_id, "version": due.version,
                          "at": due.at}) for due in dues]
        try:
            for index, (due, record) in enumerate(records):
                await self._send_due(due.customer_id, record)
        except Exception as exc:  # noqa: BLE001  the entries are still in the states: back to the index
            log.warning("handing due messages over failed (%s); they fire on a later tick", type(exc).__name__)
            for held, _ in records[index:]:
                self.decider.hold(held)

    def due_limits(self, owned: set[int]) -> Callable[[str], datetime | None]:
        """Per rule, up to when its pending messages may fire: now, or the least watermark of its inputs.

        The least over all partitions of each input topic: which one holds a customer's events is
        the producers' choice, unknown here. None: an input not heard of yet.
        """
        now = self.timing.now()
        limits: dict[str, datetime | None] = {}
        for rule, inputs in self.rule_inputs.items():
            floors = [self.marks(partition).floor(inputs) for partition in owned]
            limits[rule] = min(now, *floors) if floors and None not in floors else None
        return lambda rule: limits.get(rule, now)  # a rule removed since: its entries fire, and come to nothing

    async def _send_due(self, customer_id: str, record: dict) -> None:
        await self.pipeline.due.send(key=customer_id.encode(), value=orjson.dumps(record),
                                     partition=owner_partition(customer_id, self.settings.partitions))

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
        if plan.total_cost is not None:  # no gauge at all when defaults.cost is unset: zero would read as free
            FANOUT_ESTIMATED_COST.labels(*labels).set(float(plan.total_cost))
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
        prices = self.decider.rules.cost
        # Billed units per (rule, channel, unit price), priced once per batch: a fan-out is 100,000 messages.
        units: Counter[tuple[str, str, Decimal]] = Counter()
        try:
            for decision in decisions:
                if isinstance(decision, Notification):
                    notified[decision.rule, decision.channel] += 1
                    if prices is not None:
                        units[decision.rule, decision.channel, prices.unit(decision.channel, decision.to)] += \
                            billed_units(decision.channel, decision.segments)
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
            for (rule, channel, price), count in units.items():
                ESTIMATED_COST.labels(rule, channel).inc(float(price * count))
            for (rule, reason), count in suppressed.items():
                SUPPRESSED.labels(rule, reason).inc(count)


def register(app: faust.App, pipeline: Pipeline, config: CoreConfig, catch_up: CatchUp,
             bootstrap: list[str], poison: Poison | None = None) -> Decide:
    settings = pipeline.settings
    sends = Sends.of_app(app)
    directory = CustomerDirectory(ChangelogTable(pipeline.customers, sends), settings.partitions)
    decider = Decider(config.rules, config.renderer, directory, ChangelogTable(pipeline.outages, sends),
                      ChangelogTable(pipeline.states, sends),
                      DueIndex(lambda customer_id: owner_partition(customer_id, settings.partitions)),
                      ChangelogTable(pipeline.preferences, sends), config.links)

    def owned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topics.events}

    hop = Decide(pipeline, decider, sends, timing_for(settings), catch_up, owned, poison)
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
        hop.forget()

    @app.timer(interval=1.0, name="fire_due")
    async def fire_due() -> None:
        await hop.fire_due(watch.caught_up)

    @app.agent(pipeline.decide_input, concurrency=1, name="decide")
    async def decide(stream):
        async for events in faust_fixes.ordered_batches(stream, BATCH, BATCH_WAIT):
            await stop.run(hop.batch, events)

    return hop
