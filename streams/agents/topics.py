"""The app's topics and tables, declared once by ``streams.worker.build_app``.

Everything the worker reads or writes is raw bytes: the hops parse and
serialise themselves (orjson), which is cheaper than faust's codecs and keeps
the dead-letter records byte-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.kafka.sends import changelog_named
from streams.settings import Settings


@dataclass(frozen=True)
class Pipeline:
    """Topics and tables of one app, by the hop that reads them."""

    settings: Settings
    sources: faust.TopicT
    events: faust.TopicT
    due: faust.TopicT
    decide_input: faust.TopicT  # everything that changes a customer's state, co-partitioned by customer
    notifications: faust.TopicT
    suppressed: faust.TopicT
    deliveries: faust.TopicT
    deadletter: faust.TopicT
    retry: faust.TopicT
    consent: faust.TopicT
    fallbacks: faust.TopicT
    customers: faust.Table  # compact JSON per customer (streams.core.directory)
    outages: faust.Table
    states: faust.Table
    dispatched: faust.Table  # what the dispatcher has sent, by notification id (streams.channels.ledger)
    preferences: faust.Table  # per customer (streams.core.consent); its changelog is the ``preferences`` topic


def declare(app: faust.App, settings: Settings) -> Pipeline:
    names, partitions = settings.topics, settings.partitions

    def raw(*topics: str, **options) -> faust.TopicT:
        return app.topic(*topics, key_serializer="raw", value_serializer="raw", **options)

    def one(name: str) -> faust.TopicT:
        return raw(name, partitions=partitions)

    return Pipeline(
        settings=settings,
        sources=raw(*names.source()),
        events=one(names.events),
        due=one(names.due),
        decide_input=raw(names.events, names.due, names.consent, names.fallbacks),
        notifications=one(names.notifications),
        suppressed=one(names.suppressed),
        deliveries=one(names.deliveries),
        deadletter=one(names.deadletter),
        retry=one(names.retry),
        consent=one(names.consent),
        fallbacks=one(names.fallbacks),
        customers=app.Table("customers", partitions=partitions, value_type=bytes),
        outages=app.Table("outages", partitions=partitions),
        states=app.Table("states", partitions=partitions, value_type=bytes),  # msgpack (streams.core.state)
        dispatched=app.Table("dispatched", partitions=partitions, value_type=bytes),
        preferences=changelog_named(app.Table("preferences", partitions=partitions, value_type=bytes),
                                    names.preferences),
    )
