"""``forewarn console``: the store caught up from the topics, kept up to date in a thread, and the pages."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from aiohttp import web

from streams.console.feed import Feed
from streams.console.store import ActivityStore, DeadLetterEntry
from streams.console.web import ConsoleApp, Redrive, require_token
from streams.core.config import load_config
from streams.core.events import Schemas, parse_event
from streams.errors import EventError
from streams.kafka.admin import producer
from streams.settings import Settings
from streams.stopping import until_stopped

INGEST_HOP = "ingest"


def open_store(settings: Settings) -> ActivityStore:
    return ActivityStore(settings.console_db, timedelta(days=settings.console_retention_days), settings.topics,
                         states_changelog=f"{settings.app_id}-states-changelog")  # faust's name for the table


def redrive_for(settings: Settings, bootstrap: str) -> Redrive:
    """Back to its own topic once it can succeed: an event refused by ingest must pass today's schemas."""
    schemas = Schemas(settings.schema_dir)

    def check(entry: DeadLetterEntry) -> str | None:
        if not entry.complete:
            return "only the start of the original was kept (it was too large); it cannot be sent back"
        if entry.hop in (None, INGEST_HOP) and entry.topic in settings.topics.source():
            try:
                parse_event(entry.original, schemas)
            except EventError as exc:
                return f"it would be refused again: {exc}"
        return None

    def send(entry: DeadLetterEntry) -> None:
        sender = producer(bootstrap)
        try:
            sender.send(entry.topic, key=entry.key, value=entry.original)
            sender.flush()
        finally:
            sender.close()

    return Redrive(check, send)


def serve(settings: Settings, bootstrap: str) -> None:
    """Catch up, then serve on FOREWARN_CONSOLE_HOST:FOREWARN_CONSOLE_PORT until SIGINT or SIGTERM."""
    require_token(settings)
    costs = load_config(settings).rules.cost
    store = open_store(settings)
    feed = Feed(store, bootstrap, settings)
    feed.catch_up()
    stop = threading.Event()
    follower = threading.Thread(target=feed.run, args=(stop,), name="console-feed", daemon=True)
    follower.start()
    app = ConsoleApp(store, settings, redrive_for(settings, bootstrap), costs).app()
    try:
        asyncio.run(_serve(app, settings))
    finally:
        stop.set()
        follower.join(timeout=5)
        store.close()


async def _serve(app: web.Application, settings: Settings) -> None:
    runner = web.AppRunner(app, access_log=None)  # the access log would hold customer ids and search terms
    await runner.setup()
    await web.TCPSite(runner, settings.console_host, settings.console_port).start()
    try:
        await until_stopped()
    finally:
        await runner.cleanup()
