"""The faust app: topics, tables and agents. ``faust -A streams.app worker`` works too.

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

import asyncio
import logging
import time

import faust
from aiokafka import codec as aiokafka_codec
from aiokafka.record import default_records as aiokafka_py_default_records
from aiokafka.record._crecords import default_records as aiokafka_default_records
from faust.transport.drivers import aiokafka as aiokafka_driver

from streams import collector, metrics, privacy
from streams.offsets import CommitGuard
from streams.settings import Settings

log = logging.getLogger(__name__)
settings = Settings.from_env()
BOOTSTRAP = (settings.bootstrap_servers or "localhost:9092").split(",")


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    # faust fixes the fetch long-poll at 1,500 ms. A broker that does not answer a waiting fetch when
    # data arrives on one of its partitions (Tansu, with more than one) then adds up to that to every
    # hop; a short poll bounds it, for a few idle fetches a second.
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = settings.fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
        return consumer

    async def seek_to_committed(self):
        # After table recovery faust seeks the stream partitions back to their committed offsets. aiokafka
        # skips a partition with nothing committed yet, so whatever was fetched for it during recovery (and
        # dropped, as recovery does) was never read again: the worker sat idle with a backlog.
        return await self.call_thread(self._seek_to_committed_or_start)

    async def _seek_to_committed_or_start(self):
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        never = [tp for tp, offset in committed.items() if not offset]
        if never:
            await consumer.seek_to_beginning(*never)  # consumer_auto_offset_reset="earliest"
            for tp in never:
                commit_guard.first_offsets[(tp.topic, tp.partition)] = await consumer.position(tp)
        return committed

    async def _highwaters(self, partitions):
        # Table recovery reads each changelog partition up to here. Tansu 0.6 answers ListOffsets with the
        # last batch's first offset + 1, so recovery would stop inside the last batch and lose its changes.
        reported = await super()._highwaters(partitions)
        return await true_ends(reported)


async def true_ends(reported):
    """Each partition's end offset, checked by reading its last batch: the real end on any broker.

    Read with kafka-python in a thread: a second aiokafka consumer on the worker's loop stalled the
    worker's own fetching after recovery now and then.
    """
    from kafka import KafkaConsumer, TopicPartition

    from streams.kafka_tools import API_VERSION, end_offsets

    if not any(end and end > 0 for end in reported.values()):
        return reported  # empty changelogs: nothing to check, no connection to make

    def read() -> dict:
        by_name = {TopicPartition(tp.topic, tp.partition): tp for tp in reported}
        for attempt in range(1, 4):
            try:
                consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, api_version=API_VERSION,
                                         enable_auto_commit=False)
                try:
                    return {by_name[tp]: end for tp, end in end_offsets(consumer, list(by_name)).items()}
                finally:
                    consumer.close()
            except Exception as exc:  # noqa: BLE001  any broker trouble: try again, then go on as faust would
                log.warning("checking changelog end offsets failed (attempt %d of 3): %r", attempt, exc)
                time.sleep(0.5 * attempt)
        return reported

    return await asyncio.get_running_loop().run_in_executor(None, read)


aiokafka_driver.Consumer._new_consumer_thread = (
    lambda self: _ConsumerThread(self, loop=self.loop, beacon=self.beacon))

commit_guard = CommitGuard()
_faust_new_offset = aiokafka_driver.Consumer._new_offset


def _new_offset_past_processed_only(self, tp):
    may_commit, reread_from = commit_guard.check((tp.topic, tp.partition), self._acked[tp],
                                                 self._committed_offset[tp], self._gap[tp].overlaps,
                                                 time.monotonic())
    if reread_from is not None:
        log.warning("%s partition %d: offset %d was never processed; reading the partition again from there",
                    tp.topic, tp.partition, reread_from)
        asyncio.ensure_future(self.seek(tp, reread_from))
    return _faust_new_offset(self, tp) if may_commit else None


aiokafka_driver.Consumer._new_offset = _new_offset_past_processed_only  # see streams.offsets


def _fast_lz4(payload) -> bytes:
    return aiokafka_codec.lz4_encode(payload, level=0)


# aiokafka compresses lz4 batches at level 9 (LZ4-HC): 2 ms per MB of notifications, a seventh of a
# fan-out's CPU. The fast level is ten times quicker for 7 % more bytes; any broker or consumer reads both.
aiokafka_default_records.lz4_encode = aiokafka_py_default_records.lz4_encode = _fast_lz4

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
    collector.settle_when_idle()


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
