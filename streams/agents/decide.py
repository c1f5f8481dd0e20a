"""Hop 2: apply each routed event to the directory and decide who hears what.

The decision itself is ``streams.core.decide.Decider``, the same code the
simulator runs; this module only feeds it and produces its outcomes.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson

from streams.agents.sending import Sends
from streams.app import app, customers_table, events_topic, notifications_topic, outages_table, settings, suppressed_topic
from streams.core.config import load_config
from streams.core.decide import Decider, Notification
from streams.core.directory import CustomerDirectory
from streams.metrics import NOTIFICATIONS, PROCESSING_SECONDS, SUPPRESSED

config = load_config(settings)
directory = CustomerDirectory(customers_table)
decider = Decider(config.rules, config.renderer, directory, outages_table)


@customers_table.on_recover
async def rebuild_area_index() -> None:
    directory.rebuild_index()


@app.agent(events_topic, concurrency=1)
async def decide(stream):
    sends = Sends()
    async for event in stream.events():
        started = time.perf_counter()
        payload = orjson.loads(event.value)
        outcomes = decider.handle(payload, datetime.now(timezone.utc),
                                  partition=event.message.partition, partitions=settings.partitions)
        for outcome in outcomes:
            if isinstance(outcome, Notification):
                NOTIFICATIONS.labels(outcome.rule, outcome.channel).inc()
                await sends.send(notifications_topic, outcome.customer_id.encode(), orjson.dumps(outcome.to_dict()))
            else:
                SUPPRESSED.labels(outcome.rule, outcome.reason).inc()
                await sends.send(suppressed_topic, (outcome.customer_id or "").encode(), orjson.dumps(outcome.to_dict()))
        await sends.flush()
        PROCESSING_SECONDS.labels(payload["type"]).observe(time.perf_counter() - started)
