"""Did telling customers first spare them a call: the counting, the intervals, and support.contacted at the door."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.agents import marks
from streams.agents.ingest import Ingest
from streams.core.deflection import Contact, NotTold, Told, deflection, kind_of, wilson
from streams.core.directory import owner_partition
from streams.core.events import parse_event
from streams.errors import EventError
from streams.kafka.catch_up import CatchUp
from streams.kafka.sends import Sends
from streams.settings import ROOT, Settings, Topics
from tests.fakes import FakeProducer, Offsets, fake_pipeline

T0 = datetime(2026, 11, 25, 13, 0, tzinfo=timezone(timedelta(hours=1)))
DEMO = ROOT / "config" / "demo"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def told(customer: str, subject: str = "OUT-1", minutes: float = 0, rule: str = "outage-started") -> Told:
    return Told(rule, customer, subject, at(minutes))


def not_told(customer: str, subject: str = "OUT-1", minutes: float = 0, rule: str = "outage-started",
             reason: str = "cancelled") -> NotTold:
    return NotTold(rule, customer, subject, at(minutes), reason)


def call(customer: str, minutes: float, topic: str = "outage", subject: str | None = None) -> Contact:
    return Contact(customer, topic, subject, at(minutes))


def only(rows):
    assert len(rows) == 1
    return rows[0]


# --------------------------------------------------------------------------- Wilson score interval

@pytest.mark.parametrize("successes, n, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (score, no continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    # and the textbook halves and ends
    (5, 10, 0.2366, 0.7634),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
])
def test_the_wilson_interval_is_the_published_one(successes, n, low, high):
    found = wilson(successes, n)
    assert found == pytest.approx((low, high), abs=5e-5)


def test_the_wilson_interval_of_nothing_is_everything_and_its_ends_are_exact():
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 7)[0] == 0.0 and wilson(7, 7)[1] == 1.0
    with pytest.raises(ValueError):
        wilson(3, 2)


# --------------------------------------------------------------------------- counting

def test_shares_intervals_and_difference_per_rule():
    rows = deflection(
        [told("A"), told("B"), told("C"), told("D"), told("A", "ORD-1", rule="order-delayed")],
        [not_told("E"), not_told("F", reason="no_consent")],
        [call("A", 30), call("E", 20), call("F", 600)])
    delayed, started = rows
    assert [r.rule for r in rows] == ["order-delayed", "outage-started"]  # sorted by rule
    assert (started.told, started.told_called, started.not_told, started.not_told_called) == (4, 1, 2, 2)
    assert started.told_share == 0.25 and started.not_told_share == 1.0
    assert started.told_interval == wilson(1, 4) and started.not_told_interval == wilson(2, 2)
    assert started.difference == 0.75
    # A's outage call is not about the order: no id, and topic outage is not an order rule's
    assert (delayed.told, delayed.told_called, delayed.not_told) == (1, 0, 0)


def test_zero_counts_give_empty_shares_and_no_difference():
    row = only(deflection([], [not_told("E")], []))
    assert (row.told, row.told_called, row.not_told, row.not_told_called) == (0, 0, 1, 0)
    assert row.told_share == 0.0 and row.told_interval == (0.0, 1.0)
    assert row.not_told_share == 0.0 and row.not_told_interval == wilson(0, 1)
    assert math.isnan(row.difference)
    assert deflection([], [], [call("A", 1)]) == []


def test_a_customer_told_and_not_told_by_the_same_rule_about_the_same_thing_counts_once_as_told():
    # The SMS held back for want of consent, the email sent; a night deferral sent in the morning.
    row = only(deflection([told("A", minutes=10)], [not_told("A", reason="no_consent"),
                                                    not_told("A", minutes=5, reason="quiet_hours")],
                          [call("A", 2), call("A", 3)]))
    assert (row.told, row.told_called, row.not_told, row.not_told_called) == (1, 1, 0, 0)
    # another outage is another pair
    row = only(deflection([told("A", "OUT-1")], [not_told("A", "OUT-2")], []))
    assert (row.told, row.not_told) == (1, 1)


@pytest.mark.parametrize("contact, counts", [
    (call("A", 30, subject="OUT-1"), True),  # the same outage
    (call("A", 30, topic="other", subject="OUT-1"), True),  # the id decides, whatever the topic says
    (call("A", 30, subject="OUT-2"), False),  # another outage
    (call("A", 30), True),  # no id: the topic is the rule's kind
    (call("A", 30, topic="delivery"), False),  # no id, about something else
    (call("A", 30, topic="other"), False),
    (call("B", 30, subject="OUT-1"), False),  # someone else
])
def test_a_contact_counts_when_it_is_about_the_same_thing(contact, counts):
    row = only(deflection([told("A")], [], [contact]))
    assert row.told_called == int(counts)


@pytest.mark.parametrize("topic, counts", [("order", True), ("delivery", True), ("outage", False), ("other", False)])
def test_order_rules_count_order_and_delivery_contacts(topic, counts):
    row = only(deflection([told("A", "ORD-1", rule="order-delayed")], [], [call("A", 60, topic=topic)]))
    assert row.told_called == int(counts)
    assert only(deflection([told("A", "ORD-1", rule="order-delayed")], [],
                           [call("A", 60, topic=topic, subject="ORD-1")])).told_called == 1


@pytest.mark.parametrize("minutes, counts", [
    (-1, False),  # before the customer was affected: not something a message could spare
    (0, True),  # at that moment
    (3 * 24 * 60, True),  # the last moment of the window
    (3 * 24 * 60 + 1, False),
])
def test_a_contact_counts_from_the_first_time_the_customer_was_affected_to_the_end_of_the_window(minutes, counts):
    row = only(deflection([told("A", minutes=0)], [], [call("A", minutes)]))
    assert row.told_called == int(counts)


def test_the_window_starts_at_the_earliest_record_of_the_pair_and_is_a_parameter():
    # Deferred at 0, sent at 60: a call at 30 counts for the told pair.
    assert only(deflection([told("A", minutes=60)], [not_told("A", minutes=0, reason="quiet_hours")],
                           [call("A", 30)])).told_called == 1
    assert only(deflection([told("A")], [], [call("A", 90)], within=timedelta(hours=1))).told_called == 0
    assert only(deflection([told("A")], [], [call("A", 90)], within=timedelta(hours=2))).told_called == 1


def test_many_contacts_of_one_customer_count_once_and_kinds_can_be_given():
    row = only(deflection([told("A", rule="storing")], [], [call("A", 1), call("A", 2)]))
    assert row.told_called == 0 and kind_of("storing") is None and kind_of("outage-updated") == "outage"
    row = only(deflection([told("A", rule="storing")], [], [call("A", 1), call("A", 2)], kinds={"storing": "outage"}))
    assert (row.told, row.told_called) == (1, 1)


# --------------------------------------------------------------------------- support.contacted at the door

CONTACT = {"id": "sup-1", "type": "support.contacted", "occurred_at": "2026-11-25T17:41:00+01:00",
           "customer_id": "C1012", "data": {"channel": "phone", "topic": "outage", "outage_id": "OUT-20261125-02"}}


def test_support_contacts_are_events_of_their_own_topic():
    event = parse_event(orjson.dumps(CONTACT))
    assert event["data"]["topic"] == "outage"
    topics = Topics()
    assert topics.for_event_type("support.contacted") == "support" and "support" in topics.source()
    assert Topics.from_env({"FOREWARN_TOPIC_SUPPORT": "klantcontact"}).source()[-1] == "klantcontact"


@pytest.mark.parametrize("change, words", [
    ({"data": {"channel": "pigeon", "topic": "outage"}}, "data/channel"),
    ({"data": {"channel": "phone", "topic": "outage", "mood": "angry"}}, "data"),
    ({"data": {"channel": "phone"}}, "topic"),
    ({"data": {"channel": "phone", "topic": "order", "order_id": "ORD 1"}}, "data/order_id"),
    ({"customer_id": None}, "customer_id"),
])
def test_a_malformed_support_contact_is_refused(change, words):
    event = {k: v for k, v in {**CONTACT, **change}.items() if v is not None}
    with pytest.raises(EventError, match=words):
        parse_event(orjson.dumps(event))


def test_ingest_routes_a_support_contact_to_its_customer_and_dead_letters_a_malformed_one():
    pipeline, producer, offsets = fake_pipeline(Settings(clock="event")), FakeProducer(auto_ack=True), Offsets()
    hop = Ingest(pipeline, Sends(lambda: producer), CatchUp([]), partitions_of=lambda _: 3)
    good = orjson.dumps(CONTACT)
    bad = orjson.dumps({**CONTACT, "id": "sup-2", "data": {"channel": "telepathy", "topic": "outage"}})
    asyncio.run(hop.batch([offsets.event("support", 0, value, key=b"C1012") for value in (good, bad)]))
    topics = pipeline.settings.topics
    routed = [r for r in producer.on(topics.events) if r.key != marks.KEY]
    assert [(r.value, r.partition) for r in routed] == [(good, owner_partition("C1012", pipeline.settings.partitions))]
    dead = [r.json() for r in producer.on(topics.deadletter)]
    assert [(d["topic"], d["value_text"]) for d in dead] == [("support", bad.decode())]
    assert "data/channel" in dead[0]["reason"] and dead[0]["hop"] == "ingest"
    # Of the story's time, as orders are: behind them every partition learns how far the support topic is read.
    told = [marks.decode(r.value)[0] for r in producer.on(topics.events) if r.key == marks.KEY]
    assert told == [{("support", 0): datetime.fromisoformat(CONTACT["occurred_at"])}] * pipeline.settings.partitions


def test_no_rule_listens_to_support_contacts_the_simulator_decides_the_same_without_them(tmp_path):
    from streams.core.config import load_config
    from streams.tools.simulate import simulate

    lines = (DEMO / "events.jsonl").read_bytes().splitlines()
    assert any(b'"support.contacted"' in line for line in lines)
    without = tmp_path / "without.jsonl"
    without.write_bytes(b"".join(line + b"\n" for line in lines if b'"support.contacted"' not in line))
    config = load_config(Settings.from_env())
    with_them = simulate(config, DEMO / "customers.jsonl", DEMO / "events.jsonl", tmp_path / "a")
    simulate(config, DEMO / "customers.jsonl", without, tmp_path / "b")
    assert with_them.rejected == 0
    for name in ("notifications.jsonl", "suppressed.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_the_demo_report_counts_the_blip_customer_who_called_and_a_late_message_as_not_told():
    from streams.core.config import load_config
    from streams.tools.deflection import lines, report_from_simulation

    config = load_config(Settings.from_env())
    rows = {r.rule: r for r in report_from_simulation(config, DEMO / "customers.jsonl", DEMO / "events.jsonl")}
    started = rows["outage-started"]
    # six told about the long outage, C1003 chatted; three held back for the blip, C1012 called about it
    assert (started.told, started.told_called, started.not_told, started.not_told_called) == (6, 1, 3, 1)
    assert (rows["order-delayed"].told, rows["order-delayed"].told_called) == (2, 1)  # C1008 emailed about it
    assert "cart-reminder" not in rows
    table = lines(list(rows.values()))
    assert table[0].startswith("rule ") and "difference" in table[0]
    assert any(line.startswith("outage-started ") and line.endswith("+16.7 points") for line in table)
    assert any(line.startswith("outage-resolved ") and line.endswith("-") for line in table)  # nobody not told
    # Sent more than a minute after the outage began: late, so not told.
    late = {r.rule: r for r in report_from_simulation(config, DEMO / "customers.jsonl", DEMO / "events.jsonl",
                                                      late=timedelta(minutes=1))}["outage-started"]
    assert (late.told, late.not_told, late.not_told_called) == (0, 9, 2)
