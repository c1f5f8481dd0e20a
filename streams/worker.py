"""The faust app: ``build_app(settings)`` makes it, its topics, tables and agents. Importing does nothing.

Data path: source topics -> ``ingest`` (validate, dead-letter, route by
customer) -> ``forewarn-events`` -> ``decide`` (rules, restraint, render) ->
``notifications`` / ``suppressed`` -> ``dispatch`` (channel) -> ``deliveries``.
Pending messages (waits, deferrals) come back to ``decide`` through
``forewarn-due`` when they fall due; see ``streams.core.schedule``.

Settings that hold up: every agent at concurrency 1 (a higher one can commit
past an unprocessed message, faust issue 606); at-least-once; tables in memory
for the demo and tests, RocksDB (``FOREWARN_STORE=rocksdb://``) in production.

``faust -A streams.worker worker`` works too: the module's ``app`` attribute is
made from the environment, once, when it is first asked for.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from functools import lru_cache

import faust

from streams import gc_tuning, metrics, privacy
from streams.agents import decide, dispatch, ingest
from streams.agents.contain import Poison
from streams.agents.topics import Pipeline, declare
from streams.core.config import CoreConfig, load_config
from streams.kafka import faust_fixes
from streams.kafka.catch_up import CatchUp
from streams.kafka.security import broker_credentials
from streams.settings import Settings


log = logging.getLogger(__name__)


def build_app(settings: Settings, config: CoreConfig | None = None) -> faust.App:
    """The worker's app for ``settings``; ``config`` (rules, templates, schemas) is loaded if not given."""
    bootstrap = bootstrap_list(settings)
    faust_fixes.install(fetch_max_wait_ms=settings.fetch_max_wait_ms, bootstrap=bootstrap)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in bootstrap],
        broker_credentials=broker_credentials(settings.kafka_security),
        store=settings.store,
        datadir=settings.data_dir,
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
        logging_config=privacy.logging_config(),  # masked, and no raw records, from the worker's first line
        key_serializer="json",  # table keys come back from the changelog as the str they were
        value_serializer="json",
    )
    pipeline = declare(app, settings)
    _observe(app, settings)
    # Live timers wait until ingest, then decide, have read what their partitions held; in event time
    # the events themselves move the clock, and the catch-up is open from the start.
    catch_up = CatchUp([list(settings.topics.source()), [settings.topics.events]] if settings.clock == "wall" else [])
    poison = Poison(settings.test_poison)
    ingest.register(app, pipeline, catch_up, bootstrap, poison)
    decide.register(app, pipeline, config or load_config(settings), catch_up, bootstrap, poison)
    if settings.dispatch:
        dispatch.register(app, pipeline, poison)
    return app


def log_tasks() -> None:
    """``kill -USR1 <worker>``: where every task of the worker waits now, in its log (for a worker that hangs)."""
    for task in asyncio.all_tasks():
        log.warning("task %s: %s", task.get_name(), " -> ".join(_awaiting(task.get_coro())) or "running")


def _awaiting(awaitable) -> list[str]:
    """The chain of coroutines and generators ``awaitable`` waits through, outermost first."""
    chain = []
    while awaitable is not None and len(chain) < 30:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None) \
            or getattr(awaitable, "ag_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None) \
            or getattr(awaitable, "ag_await", None)
    return chain


def bootstrap_list(settings: Settings) -> list[str]:
    return (settings.bootstrap_servers or "localhost:9092").split(",")


def _observe(app: faust.App, settings: Settings) -> None:
    @app.task
    async def observe() -> None:
        """Mask customer data in every log handler faust has set up, and serve metrics."""
        # Per-message debug records cost a tenth of a fan-out's time even when no handler prints them.
        level = max(logging.INFO, logging.getLevelName(settings.log_level.upper()))
        for name in ("", "aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(level)
        privacy.install()
        metrics.serve(settings.metrics_port, settings.metrics_address)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_tasks)

    @app.timer(interval=5.0)
    async def read_stalled_partitions_again() -> None:
        await faust_fixes.read_stalled_again(app, bootstrap_list(settings))

    @app.timer(interval=30.0)
    async def settle_long_lived_objects() -> None:
        gc_tuning.settle_when_idle()


@lru_cache(maxsize=1)
def _app_from_environment() -> faust.App:
    return build_app(Settings.from_env())


def __getattr__(name: str):
    if name == "app":  # ``faust -A streams.worker``: the one app made from the environment
        return _app_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Pipeline", "bootstrap_list", "build_app"]
