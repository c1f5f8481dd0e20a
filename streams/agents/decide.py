"""Hop 2: apply each routed event to the state and decide who hears what, and when.

The decision itself is ``streams.core.decider.Decider``, the same code the
simulator runs; this module only feeds it, fires its timers and produces its
outcomes. One agent reads ``forewarn-events``, ``forewarn-due`` and the dispatcher's
``optouts`` and ``fallbacks`` so that every change to a customer's state is
made by one coroutine, in order.

Clock: ``FOREWARN_CLOCK=wall`` (production) decides on wall-clock time and a
timer fires pending messages. ``event`` (replays, the demo, tests) decides on
the events' own time, like the simulator: the time is the latest event time
seen, and before each event what fell due more than ``FOREWARN_EVENT_LATENESS``
seconds ago is decided, so that events arriving slightly out of order across
topics are still taken into account. When no event has come for
``FOREWARN_EVENT_IDLE`` seconds the replay is over: everything still pending is
decided at its own due time, as the simulator does after its last event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson

from streams import gc_tuning
from streams.kafka import faust_fixes as consumer
from streams.kafka.sends import ChangelogTable, Sends
from streams.worker import (BOOTSTRAP, app, catch_up, customers_table, decide_input, due_topic, notifications_topic, outages_table,
                         settings, states_table, suppressed_topic)
from streams.core.config import load_config
from streams.core.decider import Decider, Notification, event_time
from streams.core.directory import CustomerDirectory, owner_partition
from streams.core.schedule import Due
from streams.core.fanout_plan import plan_fanout
from streams.metrics import (FANOUT_ESTIMATED_SECONDS, FANOUT_OVER_LIMIT, FANOUT_RECIPIENTS, NOTIFICATIONS,
                             PROCESSING_SECONDS, SUPPRESSED)

log = logging.getLogger(__name__)
config = load_config(settings)
sends = Sends(app)
directory = CustomerDirectory(ChangelogTable(customers_table, sends), settings.partitions)
decider = Decider(config.rules, config.renderer, directory, ChangelogTable(outages_table, sends),
                  ChangelogTable(states_table, sends))
clock = {"watermark": None, "last_event": time.monotonic()}
BATCH = 1_000  # events decided before their outcomes are awaited and the states logged
BATCH_WAIT = 0.01  # seconds a batch waits to fill: what a lone event waits at most


def owned_partitions() -> set[int]:
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topics.events}


def owned_by(partitions: set[int]):
    return lambda customer_id: owner_partition(customer_id, settings.partitions) in partitions


@customers_table.on_recover
async def rebuild_area_index() -> None:
    directory.rebuild_index()


@states_table.on_recover
async def rebuild_due_index() -> None:
    decider.rebuild_due_index(owned_by(owned_partitions()))


@app.on_partitions_revoked.connect
async def hold_timers(sender, revoked, **kwargs) -> None:
    catch_up.reset()


async def caught_up() -> bool:
    """Whether ingest and decide have read what their partitions held since the last rebalance."""
    if app.rebalancing or not app.consumer.assignment():
        return False
    topics = catch_up.wanted()
    if topics:
        generation = catch_up.generation
        partitions = [tp for tp in app.consumer.assignment() if tp.topic in topics]
        if settings.topics.events in topics:
            await app.producer.flush()  # what ingest routed is on the broker, inside the end offsets
        try:
            ends = await asyncio.get_running_loop().run_in_executor(None, read_ends, partitions)
        except Exception as exc:  # noqa: BLE001  broker trouble: the timer asks again in a second
            log.warning("reading end offsets to catch up with failed: %r", exc)
            return False
        if catch_up.generation != generation:
            return False
        catch_up.targets(ends)
    committed = dict(consumer.start_offsets)
    for tp, offset in app.consumer._committed_offset.items():
        committed[(tp.topic, tp.partition)] = max(offset or 0, committed.get((tp.topic, tp.partition), 0))
    if catch_up.advance(committed):
        log.info("caught up with the partitions' events: timers fire")
        return True
    return False


def read_ends(partitions) -> dict[tuple[str, int], int]:
    from kafka import TopicPartition

    from streams.kafka.admin import read_end_offsets

    if not partitions:
        return {}
    ends = read_end_offsets(BOOTSTRAP, [TopicPartition(tp.topic, tp.partition) for tp in partitions])
    return {(tp.topic, tp.partition): end for tp, end in ends.items()}


@app.timer(interval=1.0)
async def fire_due() -> None:
    """Hand what is due to the decide agent through ``forewarn-due``; this timer writes no table."""
    if settings.clock == "wall":
        if not catch_up.open and not await caught_up():
            return
        until = datetime.now(timezone.utc)
    elif time.monotonic() - clock["last_event"] >= settings.event_idle:
        until = datetime.max.replace(tzinfo=timezone.utc)  # the replay is over: time runs on
    else:
        return
    for due in decider.due.pop_due(until, owned_by(owned_partitions())):
        record = {"customer_id": due.customer_id, "pending_id": due.pending_id, "version": due.version, "at": due.at}
        await due_topic.send(key=due.customer_id.encode(), value=orjson.dumps(record),
                             partition=owner_partition(due.customer_id, settings.partitions))


def announce_fanout(payload: dict, partition: int) -> None:
    """Log and expose the plan of an outage fan-out before it starts; loudly when it will take too long."""
    plan = plan_fanout(decider, payload, partition)
    if plan is None:
        return
    sms_rate, email_rate = settings.sms_rate / settings.partitions, settings.email_rate / settings.partitions
    seconds = plan.seconds(sms_rate, email_rate)
    labels = (plan.outage_id, str(partition))
    for channel in ("sms", "email"):
        FANOUT_RECIPIENTS.labels(*labels, channel).set(plan.recipients[channel])
    FANOUT_ESTIMATED_SECONDS.labels(*labels).set(seconds)
    log.info("%s", plan.describe(sms_rate, email_rate))
    if seconds > settings.fanout_limit:
        FANOUT_OVER_LIMIT.inc()
        log.warning("FAN-OUT TOO SLOW: outage %s on partition %d needs about %.0f s at this partition's share of the "
                    "provider rate, more than the %.0f s limit; raise the rate or narrow the rule",
                    plan.outage_id, partition, seconds, settings.fanout_limit)


async def emit(outcomes) -> None:
    partition = sends.partition  # a customer's outcomes stay in the customer's partition
    # Counted here and added to the metrics once: a labelled child's ``inc`` takes a lock, per message of a fan-out.
    notified: Counter[tuple[str, str]] = Counter()
    suppressed: Counter[tuple[str, str]] = Counter()
    try:
        for outcome in outcomes:
            if isinstance(outcome, Notification):
                notified[outcome.rule, outcome.channel] += 1
                await sends.send(notifications_topic, outcome.customer_id.encode(), orjson.dumps(outcome.to_dict()),
                                 partition)
            else:
                suppressed[outcome.rule, outcome.reason] += 1
                await sends.send(suppressed_topic, (outcome.customer_id or "").encode(),
                                 orjson.dumps(outcome.to_dict()), partition)
            if sends.changes_due:
                await sends.settle()
    finally:
        for (rule, channel), count in notified.items():
            NOTIFICATIONS.labels(rule, channel).inc(count)
        for (rule, reason), count in suppressed.items():
            SUPPRESSED.labels(rule, reason).inc(count)


@app.agent(decide_input, concurrency=1)
async def decide(stream):
    # Events are taken in batches so that waiting for Kafka to acknowledge the notifications before the
    # states that record them are logged (``Sends.settle``) costs one round trip per batch, not per event.
    async for events in stream.take_events(BATCH, within=BATCH_WAIT):
        with gc_tuning.in_progress():  # no full collection in the middle of a fan-out
            for event in events:
                await decide_one(event)
                if not catch_up.open:
                    catch_up.processed(event.message.topic, event.message.partition, event.message.offset)
            await sends.settle()


async def decide_one(event) -> None:
    started = time.perf_counter()
    payload = orjson.loads(event.value)
    partition = sends.partition = event.message.partition
    topic = event.message.topic
    if topic == settings.topics.due:
        due = Due(payload["at"], payload["customer_id"], payload["pending_id"], payload["version"])
        if not catch_up.open:
            # Fired before a rebalance, read after it: back to the index until the events are read.
            decider.hold(due)
            kind = "due-held"
        else:
            now = due.moment if settings.clock == "event" else datetime.now(timezone.utc)
            await emit(decider.fire(due, now))
            kind = "due"
    elif topic == settings.topics.optouts:
        decider.opt_out(payload["customer_id"], payload["channel"])
        kind = "optout"
    elif topic == settings.topics.fallbacks:
        now = clock["watermark"] if settings.clock == "event" and clock["watermark"] else datetime.now(timezone.utc)
        await emit(decider.fall_back(payload, now))
        kind = "fallback"
    else:
        if settings.clock == "event":
            clock["last_event"] = time.monotonic()
            if payload["type"].startswith("customer."):
                # A customer file carries the time it was loaded, not the story's time: moving the clock,
                # it would fire pending messages before the events that cancel them are read.
                now = clock["watermark"] or event_time(payload)
            else:
                now = max(clock["watermark"] or event_time(payload), event_time(payload))
                clock["watermark"] = now
                late = now - timedelta(seconds=settings.event_lateness)
                await emit(decider.fire_due(late, owned_by({partition})))
        else:
            now = datetime.now(timezone.utc)
        if payload["type"] == "outage.started":
            announce_fanout(payload, partition)
        await emit(decider.handle(payload, now, partition=partition))
        kind = payload["type"]
    PROCESSING_SECONDS.labels(kind).observe(time.perf_counter() - started)
