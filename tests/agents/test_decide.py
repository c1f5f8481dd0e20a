"""The decide hop with fakes: what it produces where, event-time firing, held due records, opt-outs, the timer."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.agents.contain import Poison
from streams.agents import marks
from streams.agents.decide import Decide, Timing
from streams.core.clock import event_time, moves_clock
from streams.core.config import load_config
from streams.channels.courier import optout_record
from streams.core.decider import Decider
from streams.core.directory import CustomerDirectory, owner_partition
from streams.core.schedule import DueIndex
from streams.kafka.catch_up import CatchUp
from streams.kafka.sends import ChangelogTable, Sends
from streams.settings import ROOT, Settings
from streams.tools.customer_files import upsert_event
from tests.fakes import FakeProducer, Offsets, fake_pipeline, shipped_rules_without

CUSTOMERS = [orjson.loads(line) for line in (ROOT / "config" / "demo" / "customers.jsonl").read_bytes().splitlines()]
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)  # 13:00 in Amsterdam: no quiet hours


@pytest.fixture(scope="module")
def config():
    # With the tests' unsubscribe secret; less the parcel-not-moving rule every shipment also starts.
    return load_config(replace(Settings.from_env(), rules_file=shipped_rules_without("order-not-moving")))


class Hop:
    """A Decide over fakes, and what it produced."""

    def __init__(self, config, timing=None, catch_up=None, owned=None, poison=None):
        self.pipeline = fake_pipeline()
        self.producer = FakeProducer(auto_ack=True)
        sends = Sends(lambda: self.producer)
        directory = CustomerDirectory(ChangelogTable(self.pipeline.customers, sends), self.pipeline.settings.partitions)
        partitions = self.pipeline.settings.partitions
        self.decider = Decider(config.rules, config.renderer, directory, ChangelogTable(self.pipeline.outages, sends),
                               ChangelogTable(self.pipeline.states, sends),
                               DueIndex(lambda customer_id: owner_partition(customer_id, partitions)),
                               ChangelogTable(self.pipeline.preferences, sends), config.links)
        self.timing = timing or Timing(event_time=True)
        self.hop = Decide(self.pipeline, self.decider, sends, self.timing, catch_up or CatchUp([]),
                          owned or (lambda: set(range(self.pipeline.settings.partitions))), poison)
        self.offsets = Offsets()
        self.topics = self.pipeline.settings.topics
        self.loop = asyncio.new_event_loop()  # one loop for the hop's life: its futures belong to it

    def run(self, coroutine) -> None:
        self.loop.run_until_complete(coroutine)

    def feed(self, topic: str, *payloads: dict) -> None:
        """One batch, as the agent takes it; on ``forewarn-events`` followed by watermarks, as ingest sends them.

        The watermark is a second past the batch's latest event: every input read past the batch.
        """
        events = self.events(*payloads, topic=topic)
        moments = [event_time(p) for p in payloads if "occurred_at" in p and moves_clock(p)]
        if topic == self.topics.events and moments:
            events += self.watermark(max(moments) + timedelta(seconds=1))
        self.run(self.hop.batch(events))

    def watermark(self, moment: datetime) -> list:
        clock_topics = ("orders", "carts", "outages", "support")
        value = marks.encode({(topic, 0): moment for topic in clock_topics}, {topic: 1 for topic in clock_topics})
        return [self.offsets.event(self.topics.events, partition, value, marks.KEY)
                for partition in range(self.pipeline.settings.partitions)]

    def events(self, *payloads: dict, topic: str | None = None) -> list:
        events = []
        for payload in payloads:
            customer = payload.get("customer_id", "")
            partition = owner_partition(customer, self.pipeline.settings.partitions) if customer else 0
            events.append(self.offsets.event(topic or self.topics.events, partition, orjson.dumps(payload),
                                             customer.encode()))
        return events

    def on(self, topic: str) -> list[dict]:
        return [record.json() for record in self.producer.on(topic)]

    def partitions_on(self, topic: str) -> list[int]:
        return [record.partition for record in self.producer.on(topic)]


def customer(customer_id: str) -> dict:
    record = next(c for c in CUSTOMERS if c["customer_id"] == customer_id)
    return upsert_event(record, T0 - timedelta(days=1))


def shipped(customer_id: str, at: datetime = T0) -> dict:
    return {"id": f"ship-{customer_id}", "type": "order.shipped", "occurred_at": at.isoformat(),
            "customer_id": customer_id,
            "data": {"order_id": "ORD-1", "carrier": "PostNL", "tracking_url": "https://tracking.example.nl/1",
                     "eta": (at + timedelta(days=1)).isoformat()}}


def cart(customer_id: str, at: datetime) -> dict:
    return {"id": f"cart-{customer_id}-{at.timestamp():.0f}", "type": "cart.updated", "occurred_at": at.isoformat(),
            "customer_id": customer_id,
            "data": {"cart_id": f"CART-{customer_id}", "items": [{"sku": "A1", "name": "Router", "qty": 1,
                                                                  "unit_price": 49.95}],
                     "total": 49.95, "currency": "EUR", "checkout_url": "https://shop.example.nl/c/1"}}


def test_a_decided_notification_goes_to_notifications_in_the_customers_partition(config):
    hop = Hop(config)
    hop.feed(hop.topics.events, customer("C1012"), shipped("C1012"))
    [sent] = hop.on(hop.topics.notifications)
    assert (sent["rule"], sent["customer_id"], sent["channel"]) == ("order-shipped", "C1012", "email")
    assert hop.partitions_on(hop.topics.notifications) == [owner_partition("C1012", 4)]
    # The customer's state is logged to the changelog, after the notification it records.
    topics = hop.producer.topics()
    assert topics.index("forewarn-states-changelog") > topics.index(hop.topics.notifications)


def test_an_event_for_an_unknown_customer_is_a_suppression_with_its_reason(config):
    hop = Hop(config)
    hop.feed(hop.topics.events, shipped("C9999"))
    assert hop.on(hop.topics.notifications) == []
    assert [(s["customer_id"], s["reason"]) for s in hop.on(hop.topics.suppressed)] == [("C9999", "unknown_customer")]


def test_in_event_time_a_later_event_first_fires_what_fell_due_before_it(config):
    hop = Hop(config)
    hop.feed(hop.topics.events, customer("C1012"), cart("C1012", T0))
    assert hop.on(hop.topics.notifications) == []  # the reminder waits an hour
    hop.feed(hop.topics.events, shipped("C1012", T0 + timedelta(hours=2)))
    assert [n["rule"] for n in hop.on(hop.topics.notifications)] == ["cart-reminder", "order-shipped"]


def test_a_due_record_read_before_the_catch_up_is_held_and_fires_once_it_is_open(config):
    catch_up = CatchUp([["orders"]])
    hop = Hop(config, Timing(now=lambda: T0 + timedelta(hours=2)), catch_up=catch_up)
    hop.feed(hop.topics.events, customer("C1012"), cart("C1012", T0))
    [due] = hop.decider.due.pop_due(T0 + timedelta(hours=2))
    record = {"customer_id": due.customer_id, "pending_id": due.pending_id, "version": due.version, "at": due.at}
    hop.feed(hop.topics.due, record)
    assert hop.on(hop.topics.notifications) == []
    assert len(hop.decider.due) == 1  # back in the index
    catch_up.targets({("orders", 0): 0})
    assert catch_up.advance({})
    hop.feed(hop.topics.due, record)
    assert [n["rule"] for n in hop.on(hop.topics.notifications)] == ["cart-reminder"]


def test_an_opt_out_withdraws_the_channels_consent(config):
    hop = Hop(config)
    hop.feed(hop.topics.events, customer("C1012"))
    hop.feed(hop.topics.consent, optout_record("C1012", "email", "SendGrid unsubscribe"))
    hop.feed(hop.topics.events, shipped("C1012"))
    assert hop.on(hop.topics.notifications) == []
    assert [s["reason"] for s in hop.on(hop.topics.suppressed)] == ["opted_out"]
    # The preferences table logs the change: the compacted preferences topic has it, keyed by customer.
    assert hop.decider.preferences.withheld("C1012", "email", "service", "order-shipped") == "opted_out"


def test_the_timer_sends_due_records_only_for_owned_partitions_and_only_once_caught_up(config):
    later = T0 + timedelta(hours=2)
    mine = owner_partition("C1012", 4)

    async def no() -> bool:
        return False

    async def yes() -> bool:
        return True

    for owned, catch_up, caught_up, expected in [({mine}, CatchUp([]), no, 1),
                                                ({(mine + 1) % 4}, CatchUp([]), no, 0),
                                                ({mine}, CatchUp([["orders"]]), no, 0),
                                                ({mine}, CatchUp([["orders"]]), yes, 1)]:
        hop = Hop(config, Timing(now=lambda: later), catch_up=catch_up, owned=lambda owned=owned: owned)
        hop.feed(hop.topics.events, customer("C1012"), cart("C1012", T0))
        hop.run(hop.hop.batch(hop.watermark(later)))  # every input read to its end
        hop.run(hop.hop.fire_due(caught_up))
        sent = hop.pipeline.due.sent
        assert len(sent) == expected, (owned, catch_up.stages)
        if sent:
            assert sent[0]["partition"] == mine and orjson.loads(sent[0]["value"])["customer_id"] == "C1012"


def test_on_the_wall_clock_a_due_message_waits_until_every_input_of_its_rule_is_read_past_it(config):
    later = T0 + timedelta(hours=2)
    hop = Hop(config, Timing(now=lambda: later))
    hop.feed(hop.topics.events, customer("C1012"), cart("C1012", T0))

    def fired_after(times: dict, partitions: dict) -> int:
        hop.run(hop.hop.batch([hop.offsets.event(hop.topics.events, p, marks.encode(times, partitions), marks.KEY)
                               for p in range(4)]))
        hop.run(hop.hop.fire_due(caught_up=None))
        return len(hop.pipeline.due.sent)

    assert fired_after({}, {}) == 0  # the carts were read a second past the cart only: a checkout may follow
    assert fired_after({("carts", 0): later}, {"carts": 2, "orders": 1}) == 0  # carts partition 1: not heard of
    assert fired_after({("carts", 1): later}, {}) == 0  # orders (an order placed cancels it) read up to T0 only
    assert fired_after({("orders", 0): T0 + timedelta(minutes=59)}, {}) == 0  # not past the due time yet
    assert fired_after({("orders", 0): later}, {}) == 1  # outages lag still: no input of this rule


DEMO_EVENTS = [orjson.loads(line) for line in (ROOT / "config" / "demo" / "events.jsonl").read_bytes().splitlines()]
OUTAGE = next(e for e in DEMO_EVENTS if e["type"] == "outage.started")


OUTAGE_AT = datetime.fromisoformat(OUTAGE["occurred_at"])


def fan_out(config, *, poison=None, before=(), after=(), hop=None):
    """Every demo customer known, then an outage start with ``before``/``after`` events around it in one
    batch, and an event an hour later: in event time the outage notices (held 10 minutes) fire before it."""
    hop = hop or Hop(config, poison=poison)
    hop.feed("customers", *(upsert_event(c, OUTAGE_AT - timedelta(days=1)) for c in CUSTOMERS))
    partitions = hop.pipeline.settings.partitions
    outage = [hop.offsets.event(hop.topics.events, p, orjson.dumps(OUTAGE)) for p in range(partitions)]
    hop.run(hop.hop.batch([*hop.events(*before), *outage, *hop.events(*after)]))
    hop.feed(hop.topics.events, shipped("C1003", OUTAGE_AT + timedelta(hours=1)))
    return hop


def outage_notices(hop) -> set[tuple[str, str]]:
    return {(n["customer_id"], n["channel"]) for n in hop.on(hop.topics.notifications) if n["rule"] != "order-shipped"}


def test_a_poisoned_event_in_the_middle_of_a_fan_out_is_dead_lettered_and_everything_else_is_decided(config):
    told = outage_notices(fan_out(config))
    assert len(told) > 1
    poisoned = {**shipped("C1001", OUTAGE_AT), "id": "ship-POISON"}
    hop = fan_out(config, poison=Poison("decide:POISON"), before=[poisoned], after=[shipped("C1002", OUTAGE_AT)])
    assert outage_notices(hop) == told
    shipped_to = [n["customer_id"] for n in hop.on(hop.topics.notifications) if n["rule"] == "order-shipped"]
    assert shipped_to == ["C1002"]  # C1003 has no consent for it
    [dead] = hop.on(hop.topics.deadletter)
    assert (dead["hop"], dead["topic"]) == ("decide", hop.topics.events)
    assert dead["reason"].startswith("decide: InjectedFault") and b"ship-POISON" in base64.b64decode(dead["value_b64"])


def test_a_decision_that_fails_for_one_customer_is_an_internal_error_and_the_rest_of_the_audience_is_told(config):
    told = {customer for customer, _ in outage_notices(fan_out(config))}
    victim = sorted(told)[0]
    hop = Hop(config)
    render = hop.decider._render

    def failing(channel, locale, template, event, customer, outage_key, *rest):
        if customer["id"] == victim:
            raise OverflowError("date value out of range")
        return render(channel, locale, template, event, customer, outage_key, *rest)

    hop.decider._render = failing
    fan_out(config, hop=hop)
    assert {customer for customer, _ in outage_notices(hop)} == told - {victim}
    [failed] = [s for s in hop.on(hop.topics.suppressed) if s["reason"] == "internal_error"]
    assert failed["customer_id"] == victim and failed["detail"].startswith("OverflowError")
    assert hop.on(hop.topics.deadletter) == []
