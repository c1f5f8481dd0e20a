"""Fakes of what faust and aiokafka hand the hops: a producer, topics, tables, events. No broker.

``FakeProducer`` records every message and record batch it is given, in order,
and hands back futures that stay pending until the test resolves (or fails)
them, unless it was made with ``auto_ack=True``.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.agents.topics import Pipeline
from streams.settings import ROOT, Settings


@dataclass
class Record:
    """One message as it reached the producer: alone (``send``) or inside a record batch."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    via: str  # "send" or "batch"

    def json(self) -> Any:
        return orjson.loads(self.value)


@dataclass
class Shipment:
    """One call to the producer (``send`` or ``send_batch``) and the future it returned."""

    via: str
    topic: str
    partition: int | None
    records: list[Record]
    future: asyncio.Future


class FakeBatchBuilder:
    """aiokafka's ``BatchBuilder``: takes ``capacity`` messages, then answers ``append`` with None."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: list[tuple[bytes | None, bytes | None]] = []
        self.shipped = False

    def append(self, *, key, value, timestamp):
        if len(self.entries) >= self.capacity:
            return None
        self.entries.append((key, value))
        return object()  # aiokafka returns a metadata object

    def record_count(self) -> int:
        return len(self.entries)


class FakeProducer:
    """An aiokafka-like producer whose acknowledgements the test controls."""

    def __init__(self, *, batch_capacity: int = 1_000, auto_ack: bool = False):
        self.batch_capacity = batch_capacity
        self.auto_ack = auto_ack
        self.shipments: list[Shipment] = []
        self.builders: list[FakeBatchBuilder] = []

    # -- the producer's interface -------------------------------------------------------------

    async def send(self, topic: str, value, key=None, partition=None) -> asyncio.Future:
        return self._shipped("send", topic, partition, [Record(topic, partition, key, value, "send")])

    def create_batch(self) -> FakeBatchBuilder:
        builder = FakeBatchBuilder(self.batch_capacity)
        self.builders.append(builder)
        return builder

    async def send_batch(self, builder: FakeBatchBuilder, topic: str, partition: int) -> asyncio.Future:
        assert not builder.shipped, "a record batch was shipped twice"
        builder.shipped = True
        return self._shipped("send_batch", topic, partition,
                             [Record(topic, partition, k, v, "batch") for k, v in builder.entries])

    # -- for the test -------------------------------------------------------------------------

    @property
    def records(self) -> list[Record]:
        """Every message shipped, in the order it reached the producer."""
        return [record for shipment in self.shipments for record in shipment.records]

    def on(self, topic: str) -> list[Record]:
        return [record for record in self.records if record.topic == topic]

    def topics(self) -> list[str]:
        return [record.topic for record in self.records]

    def unacknowledged(self) -> list[Shipment]:
        return [shipment for shipment in self.shipments if not shipment.future.done()]

    def acknowledge(self, *indices: int) -> None:
        """Resolve the futures of these shipments (all pending ones when none is named)."""
        chosen = [self.shipments[i] for i in indices] if indices else self.unacknowledged()
        for shipment in chosen:
            shipment.future.set_result(None)

    def fail(self, index: int, exc: BaseException) -> None:
        self.shipments[index].future.set_exception(exc)

    def _shipped(self, via: str, topic: str, partition: int | None, records: list[Record]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            future.set_result(None)
        self.shipments.append(Shipment(via, topic, partition, records, future))
        return future


class FakeTopic:
    """A faust topic as the hops use it: its name, and (for ``forewarn-due``) an async ``send``."""

    def __init__(self, name: str):
        self.name = name
        self.sent: list[dict[str, Any]] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, *, key=None, value=None, partition=None) -> None:
        self.sent.append({"key": key, "value": value, "partition": partition})


class FakeTable:
    """A faust table as ``ChangelogTable`` reads it: the store's ``data`` dict, value type, changelog topic."""

    def __init__(self, name: str, value_type: type | None = None):
        self.data: dict[Any, Any] = {}
        self.value_type = value_type
        self.changelog_topic = FakeTopic(f"forewarn-{name}-changelog")


@dataclass(frozen=True)
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp: float = 0.0  # when the broker took the message (seconds); 0: not known


@dataclass(frozen=True)
class FakeEvent:
    """What ``take_events`` hands an agent: the raw value and where it was read."""

    value: bytes | None
    message: FakeMessage


@dataclass
class Offsets:
    """Hands out consecutive offsets per (topic, partition), as a consumer would see them."""

    next: dict[tuple[str, int], int] = field(default_factory=dict)

    def event(self, topic: str, partition: int, value: bytes | None, key: bytes | None = None,
              timestamp: float = 0.0) -> FakeEvent:
        offset = self.next.get((topic, partition), 0)
        self.next[(topic, partition)] = offset + 1
        return FakeEvent(value, FakeMessage(topic, partition, offset, key, timestamp))


def fake_pipeline(settings: Settings | None = None) -> Pipeline:
    """A ``Pipeline`` of fake topics and tables named as ``streams.agents.topics.declare`` names them."""
    settings = settings or Settings()
    names = settings.topics
    one = FakeTopic
    return Pipeline(
        settings=settings,
        sources=one(names.orders),
        events=one(names.events),
        due=one(names.due),
        decide_input=one(names.events),
        notifications=one(names.notifications),
        suppressed=one(names.suppressed),
        deliveries=one(names.deliveries),
        deadletter=one(names.deadletter),
        retry=one(names.retry),
        consent=one(names.consent),
        fallbacks=one(names.fallbacks),
        customers=FakeTable("customers", bytes),
        outages=FakeTable("outages"),
        states=FakeTable("states", bytes),
        dispatched=FakeTable("dispatched", bytes),
        preferences=FakeTable("preferences", bytes),
    )


CRM_TIME = "2026-01-01T00:00:00+00:00"  # before every event of the tests: any later statement wins


def preferences_of(customer: dict) -> "Preferences":
    """The preferences a customer record's CRM consents make, as the decide hop would make them."""
    from streams.core.consent import Preferences

    preferences = Preferences(customer["id"])
    preferences.from_crm(customer.get("consents", {}), CRM_TIME)
    return preferences


def upsert_event(customer: dict, at: str = CRM_TIME) -> dict:
    """The ``customer.upserted`` event that makes ``customer`` (a directory record) known."""
    data = {k: v for k, v in customer.items() if k != "id"}
    return {"id": f"u-{customer['id']}-{at}", "type": "customer.upserted", "occurred_at": at,
            "customer_id": customer["id"], "data": data}


def known(decider, *customers: dict, at: str = CRM_TIME) -> None:
    """Make ``customers`` known to ``decider`` the way a CRM upsert does (directory and consents)."""
    for customer in customers:
        list(decider.handle(upsert_event(customer, at), datetime.fromisoformat(at)))


def links_for_tests():
    from streams.core.unsubscribe import UnsubscribeLinks

    return UnsubscribeLinks("tests-only", "http://127.0.0.1:8088", "unsubscribe@example.nl", timedelta(days=90))


@lru_cache(maxsize=None)
def shipped_rules_without(*rule_ids: str) -> Path:
    """config/rules.yaml without the rules named: for tests of one mechanism that another shipped rule would
    also answer (order-not-moving answers every order.shipped that no scan follows)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    document = yaml.load((ROOT / "config" / "rules.yaml").read_text(encoding="utf-8"))
    document["rules"] = [rule for rule in document["rules"] if rule["id"] not in rule_ids]
    path = Path(tempfile.mkdtemp(prefix="forewarn-rules-")) / "rules.yaml"
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(document, out)
    return path

