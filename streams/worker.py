"""The faust app: topics, tables and agents. ``faust -A streams.worker worker`` works too.

Data path: source topics -> ``ingest`` (validate, dead-letter, route by
customer) -> ``forewarn-events`` -> ``decide`` (rules, policy, render) ->
``notifications`` / ``suppressed`` -> ``dispatch`` (channel) -> ``deliveries``.
Pending messages (waits, deferrals) come back to ``decide`` through
``forewarn-due`` when they fall due; see ``streams.core.schedule``.

Settings that hold up: every agent at concurrency 1 (a higher one can commit
past an unprocessed message, faust issue 606); at-least-once; tables in memory
for the demo and tests, RocksDB (``FOREWARN_STORE=rocksdb://``) in production.
"""

from __future__ import annotations

import logging

import faust

from streams import gc_tuning, metrics, privacy
from streams.kafka import faust_fixes as consumer
from streams.kafka.catch_up import CatchUp
from streams.settings import Settings

settings = Settings.from_env()
BOOTSTRAP = (settings.bootstrap_servers or "localhost:9092").split(",")
consumer.install(fetch_max_wait_ms=settings.fetch_max_wait_ms, bootstrap=BOOTSTRAP)

app = faust.App(
    settings.app_id,
    broker=[f"kafka://{host}" for host in BOOTSTRAP],
    store=settings.store,
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    processing_guarantee="at_least_once",
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=max(1.0, settings.session_timeout / 4),
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    # A fan-out sends thousands of small messages: batch them (faust's default lingers 0 ms).
    producer_linger_ms=5 if settings.producer_batch_bytes > 1 else 0,
    producer_max_batch_size=settings.producer_batch_bytes,
    producer_compression_type=settings.compression,
    web_enabled=False,
    key_serializer="json",  # table keys come back from the changelog as the str they were
    value_serializer="json",
)


@app.timer(interval=30.0)
async def settle_long_lived_objects() -> None:
    gc_tuning.settle_when_idle()


def raw_topic(name: str) -> faust.TopicT:
    return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)


source_topics = app.topic(*settings.topics.source(), key_serializer="raw", value_serializer="raw")
events_topic = raw_topic(settings.topics.events)
due_topic = raw_topic(settings.topics.due)
# Everything that changes a customer's state, all co-partitioned by customer: one agent applies it in order.
decide_input = app.topic(settings.topics.events, settings.topics.due, settings.topics.optouts, settings.topics.fallbacks,
                         key_serializer="raw", value_serializer="raw")
notifications_topic = raw_topic(settings.topics.notifications)
suppressed_topic = raw_topic(settings.topics.suppressed)
deliveries_topic = raw_topic(settings.topics.deliveries)
deadletter_topic = raw_topic(settings.topics.deadletter)

customers_table = app.Table("customers", partitions=settings.partitions, value_type=bytes)  # compact JSON
outages_table = app.Table("outages", partitions=settings.partitions)
states_table = app.Table("states", partitions=settings.partitions)
# What the dispatcher has sent, by notification id (streams.channels.ledger).
dispatched_table = app.Table("dispatched", partitions=settings.partitions, value_type=bytes)
# Live timers wait until ingest, then decide, have read what their partitions held (streams.core.schedule);
# in event time the events themselves move the clock, and it is always open.
catch_up = CatchUp([list(settings.topics.source()), [settings.topics.events]] if settings.clock == "wall" else [])


@app.task
async def observe() -> None:
    """Mask customer data in every log handler faust has set up, and serve metrics."""
    # Per-message debug records cost a tenth of a fan-out's time even when no handler prints them.
    level = max(logging.INFO, logging.getLevelName(settings.log_level.upper()))
    for name in ("", "aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(level)
    # In the worker kafka-python only serves the end-offset check (true_ends), which logs its own
    # failures; its transport logs a traceback for every dropped connection it then retries.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    privacy.install()
    metrics.serve(settings.metrics_port, settings.metrics_address)


from streams.agents import decide, ingest  # noqa: E402,F401  registers the agents

if settings.dispatch:
    from streams.agents import dispatch  # noqa: E402,F401
