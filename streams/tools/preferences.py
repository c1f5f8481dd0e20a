"""For support staff: what a customer's preferences say, a statement on their behalf, and forgetting them.

``show`` reads the compacted ``preferences`` topic (the decide hop's record of
each customer); ``state`` and ``forget`` write to the topics the worker reads, so
the worker stays the one writer of preferences.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from streams.core.consent import CATEGORIES, CHANNELS, PreferenceChange, Preferences, Scope, Statement, decode
from streams.core.directory import owner_partition
from streams.kafka.admin import iter_topic, producer
from streams.settings import Settings


@dataclass(frozen=True)
class Shown:
    """A customer's preferences as read, and what they would hear per channel and category."""

    preferences: Preferences | None  # None: never recorded, or forgotten and compacted away
    hears: dict[tuple[str, str], str | None]  # (channel, category) -> None (hears it) or why not


def show(settings: Settings, bootstrap: str, customer_id: str, rule: str = "any") -> Shown:
    """The newest record for ``customer_id`` on the preferences topic."""
    key = orjson.dumps(customer_id)
    partition = owner_partition(customer_id, settings.partitions)
    raw: bytes | None = None
    for message in iter_topic(bootstrap, settings.topics.preferences, timeout=10.0):
        if message.key == key and message.partition == partition:
            raw = message.value
    preferences = decode(raw, customer_id) if raw else None
    shown = preferences or Preferences(customer_id)
    hears = {(channel, category): shown.withheld(channel, category, rule)
             for channel in CHANNELS for category in CATEGORIES}
    return Shown(preferences, hears)


def state(settings: Settings, bootstrap: str, customer_id: str, scope: Scope, allow: bool, source: str,
          note: str | None = None) -> PreferenceChange:
    """Say ``allow`` to ``scope`` for the customer, now, through ``source``; the worker records it."""
    statement = Statement(scope, allow, datetime.now(timezone.utc).isoformat(), source, note)
    change = PreferenceChange((statement,), customer_id=customer_id)
    # In the customer's own partition, where the decide hop that owns them reads it.
    _send(bootstrap, settings.topics.consent, customer_id, orjson.dumps(change.to_record()),
          owner_partition(customer_id, settings.partitions))
    return change


def forget(settings: Settings, bootstrap: str, customer_id: str, reason: str | None = None) -> None:
    """A ``customer.deleted`` for the worker, then a tombstone so that compaction drops the CRM's record too."""
    now = datetime.now(timezone.utc)
    event = {"id": f"forget-{customer_id}-{now.timestamp():.0f}", "type": "customer.deleted",
             "occurred_at": now.isoformat(), "customer_id": customer_id,
             "data": {"reason": reason} if reason else {}}
    topic = settings.topics.customers
    _send(bootstrap, topic, customer_id, orjson.dumps(event))
    _send(bootstrap, topic, customer_id, None)


def _send(bootstrap: str, topic: str, customer_id: str, value: bytes | None, partition: int | None = None) -> None:
    sender = producer(bootstrap)
    try:
        sender.send(topic, key=customer_id.encode(), value=value, partition=partition)
        sender.flush()
    finally:
        sender.close()
