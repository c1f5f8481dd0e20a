"""The activity store (``streams.console.store``) over hand-made records, in real SQLite files."""

from __future__ import annotations

import base64
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.console.store import ActivityStore, DeadLetterEntry, SearchHit, TopicRecord
from streams.settings import Topics

TOPICS = Topics()
UTC = timezone.utc
OUTAGE = "OUT-20261125-01"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass
class Records:
    """Records as the topics would hold them, each at the next offset of its topic partition."""

    made: list[TopicRecord] = field(default_factory=list)
    next: dict[tuple[str, int], int] = field(default_factory=dict)

    def put(self, topic: str, value: Any, partition: int = 0, key: str | None = None) -> TopicRecord:
        offset = self.next.get((topic, partition), 0)
        self.next[(topic, partition)] = offset + 1
        raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
        record = TopicRecord(topic, partition, offset, key.encode() if key else None, raw, 1_764_000_000_000)
        self.made.append(record)
        return record

    def event(self, event_id: str, event_type: str, occurred_at: str, data: dict, customer_id: str | None = None,
              partition: int = 0) -> TopicRecord:
        event = {"id": event_id, "type": event_type, "occurred_at": occurred_at, "data": data}
        if customer_id:
            event["customer_id"] = customer_id
        return self.put(TOPICS.events, event, partition, customer_id or data.get("outage_id"))

    def sent(self, notification_id: str, rule: str, channel: str, customer_id: str, to: str, body: str,
             created_at: str, event_id: str, key: str, tier: str = "premium", subject: str | None = None,
             segments: int | None = None) -> TopicRecord:
        message = {"id": notification_id, "rule": rule, "channel": channel, "customer_id": customer_id, "to": to,
                   "locale": "nl", "subject": subject, "body": body, "created_at": created_at,
                   "event_ids": [event_id], "tier": tier, "key": key, "priority": 100}
        if segments is not None:
            message.update(segments=segments, encoding="GSM-7")
        return self.put(TOPICS.notifications, message, key=customer_id)

    def held(self, rule: str, customer_id: str, reason: str, event_id: str, when: str, key: str | None = None,
             channel: str | None = None, detail: str | None = None) -> TopicRecord:
        held = {"rule": rule, "customer_id": customer_id, "reason": reason, "event_id": event_id, "at": when}
        held.update({name: value for name, value in (("key", key), ("channel", channel), ("detail", detail))
                     if value})
        return self.put(TOPICS.suppressed, held, key=customer_id)

    def delivery(self, notification_id: str, channel: str, status: str, when: str,
                 error: str | None = None) -> TopicRecord:
        return self.put(TOPICS.deliveries, {"notification_id": notification_id, "channel": channel,
                                            "status": status, "at": when, "provider": "twilio", "error": error})

    def dead(self, topic: str, partition: int, offset: int, value: bytes, reason: str, dead_at: str,
             hop: str = "ingest", key: bytes | None = b"C1", size: int | None = None) -> TopicRecord:
        dead = {"topic": topic, "partition": partition, "offset": offset, "reason": reason, "dead_at": dead_at,
                "hop": hop, "value_b64": base64.b64encode(value).decode(),
                "key_b64": base64.b64encode(key).decode() if key is not None else None}
        if size is not None:
            dead.update(value_bytes=size, value_sha256="0" * 64)
        return self.put(TOPICS.deadletter, dead)


def outage_day() -> Records:
    """C1 (premium) is told of an outage by SMS and email, hears the update and the all-clear; C2 (no consent) is
    held back; C3's SMS fails; C1's cart reminder is held back; C1 calls support about the outage."""
    r = Records()
    r.event("evt-c1", "customer.upserted", "2026-11-20T09:00:00+01:00",
            {"name": "Anna", "phone": "+31612345678", "email": "anna@example.nl"}, "C1")
    for partition in range(4):  # ingest hands an outage to every partition
        r.event("evt-s", "outage.started", "2026-11-25T13:02:00+01:00",
                {"outage_id": OUTAGE, "service": "internet", "areas": ["1012"], "expected_end":
                 "2026-11-25T18:00:00+01:00"}, partition=partition)
    r.sent("n-s-sms", "outage-started", "sms", "C1", "+31612345678", "Storing internet in uw buurt.",
           "2026-11-25T13:07:00+01:00", "evt-s", OUTAGE, segments=1)
    r.sent("n-s-mail", "outage-started", "email", "C1", "anna@example.nl", "Wij werken eraan.",
           "2026-11-25T13:07:00+01:00", "evt-s", OUTAGE, subject="Storing in uw buurt")
    r.sent("n-s-c3", "outage-started", "sms", "C3", "+31687654321", "Storing internet.",
           "2026-11-25T13:08:30+01:00", "evt-s", OUTAGE, tier="basic", segments=2)
    r.held("outage-started", "C2", "no_consent", "evt-s", "2026-11-25T13:07:00+01:00", channel="sms",
           detail="Customer has not consented to SMS.")
    r.delivery("n-s-sms", "sms", "sent", "2026-11-25T13:07:02+01:00")
    r.delivery("n-s-sms", "sms", "delivered", "2026-11-25T13:07:05+01:00")
    r.delivery("n-s-c3", "sms", "failed", "2026-11-25T13:08:40+01:00", error="30003 unreachable")
    r.event("evt-call", "support.contacted", "2026-11-25T13:30:00+01:00",
            {"channel": "phone", "topic": "outage", "outage_id": OUTAGE}, "C1")
    r.event("evt-u", "outage.updated", "2026-11-25T15:00:00+01:00",
            {"outage_id": OUTAGE, "expected_end": "2026-11-25T20:00:00+01:00"})
    r.sent("n-u", "outage-updated", "sms", "C1", "+31612345678", "Nieuwe verwachting: 20:00.",
           "2026-11-25T15:00:01+01:00", "evt-u", OUTAGE, segments=1)
    r.event("evt-cart", "cart.updated", "2026-11-25T16:00:00+01:00",
            {"cart_id": "CART-9", "items": [{"sku": "X"}], "total": 12.5, "currency": "EUR",
             "checkout_url": "https://shop.example/c/9"}, "C1")
    r.held("cart-reminder", "C1", "no_marketing_consent", "evt-cart", "2026-11-25T17:00:00+01:00", key="CART-9",
           channel="email", detail="no marketing consent for email")
    r.event("evt-o", "order.delayed", "2026-11-25T17:30:00+01:00",
            {"order_id": "ORD-2026-7", "old_eta": "2026-11-26", "new_eta": "2026-11-28", "reason": "weather"}, "C1")
    r.event("evt-r", "outage.resolved", "2026-11-25T19:10:00+01:00",
            {"outage_id": OUTAGE, "resolved_at": "2026-11-25T19:10:00+01:00"})
    r.sent("n-r", "outage-resolved", "sms", "C1", "+31612345678", "Opgelost.", "2026-11-25T19:10:02+01:00",
           "evt-r", OUTAGE, segments=1)
    return r


@pytest.fixture
def store(tmp_path: Path):
    opened = ActivityStore(tmp_path / "console.sqlite3", topics=TOPICS)
    yield opened
    opened.close()


@pytest.fixture
def day(store) -> Records:
    records = outage_day()
    store.add_many(records.made)
    return records


def test_a_customer_timeline_tells_what_was_sent_held_back_and_why_oldest_first(store, day):
    timeline = store.customer_timeline("C1")
    assert [(e.kind, e.event_type, e.rule, e.channel) for e in timeline] == [
        ("event", "customer.upserted", None, None),
        ("event", "outage.started", None, None),
        ("sent", "outage.started", "outage-started", "sms"),
        ("sent", "outage.started", "outage-started", "email"),
        ("delivery", None, "outage-started", "sms"),
        ("delivery", None, "outage-started", "sms"),
        ("contact", "support.contacted", None, "phone"),
        ("event", "outage.updated", None, None),
        ("sent", "outage.updated", "outage-updated", "sms"),
        ("event", "cart.updated", None, None),
        ("held", "cart.updated", "cart-reminder", "email"),
        ("event", "order.delayed", None, None),
        ("event", "outage.resolved", None, None),
        ("sent", "outage.resolved", "outage-resolved", "sms"),
    ]
    sms, email = timeline[2], timeline[3]
    assert sms.at == at("2026-11-25T13:07:00+01:00") and sms.at.tzinfo is not None
    assert (sms.text, sms.to, sms.status, sms.notification_id, sms.subject_id) == (
        "Storing internet in uw buurt.", "+31612345678", "delivered", "n-s-sms", OUTAGE)
    assert (email.text, email.to, email.status) == ("Storing in uw buurt: Wij werken eraan.", "anna@example.nl", None)
    held = timeline[10]
    assert (held.reason, held.detail, held.subject_id, held.text) == (
        "no_marketing_consent", "no marketing consent for email", "CART-9", None)
    contact = timeline[6]
    assert (contact.text, contact.detail, contact.subject_id) == ("support.contacted", "outage", OUTAGE)
    assert timeline[0].detail is None  # the CRM record's contact data is not kept
    assert timeline[1].detail == "service: internet, expected_end: 2026-11-25T18:00:00+01:00"
    assert timeline[11].subject_id == "ORD-2026-7"


def test_an_outage_customer_held_back_sees_the_outage_and_why(store, day):
    timeline = store.customer_timeline("C2")
    # Not told, so no update or all-clear for them; the outage's events still say how it went.
    assert [(e.kind, e.event_type) for e in timeline] == [("event", "outage.started"), ("held", "outage.started"),
                                                          ("event", "outage.updated"), ("event", "outage.resolved")]
    assert (timeline[1].reason, timeline[1].channel, timeline[1].subject_id) == ("no_consent", "sms", OUTAGE)
    assert store.customer_timeline("nobody") == []


def test_an_outage_story_from_start_to_all_clear(store, day):
    story = store.outage_story(OUTAGE)
    assert story is not None
    assert (story.started, story.resolved) == (at("2026-11-25T13:02:00+01:00"), at("2026-11-25T19:10:00+01:00"))
    assert [e.event_type for e in story.events] == ["outage.started", "support.contacted", "outage.updated",
                                                    "outage.resolved"]
    assert story.told == {("sms", "premium"): 1, ("email", "premium"): 1, ("sms", "basic"): 1}
    assert story.told_over_time == [(at("2026-11-25T13:07:00+01:00"), 2), (at("2026-11-25T13:08:00+01:00"), 3),
                                    (at("2026-11-25T15:00:00+01:00"), 4), (at("2026-11-25T19:10:00+01:00"), 5)]
    assert story.updates_sent == 1
    assert story.held_back == {"no_consent": 1}
    assert story.delivery_failures == 1
    assert store.outage_story("OUT-unknown") is None


def test_rule_days_count_sent_per_channel_held_back_per_reason_and_sms_segments(store, day):
    r = Records(next=dict(day.next))
    r.sent("n-next", "outage-started", "sms", "C4", "+31611111111", "x", "2026-11-26T00:30:00+01:00", "evt-s",
           OUTAGE, segments=3)  # 25 November in UTC
    r.sent("n-day2", "outage-started", "email", "C5", "c5@example.nl", "x", "2026-11-26T09:00:00+01:00", "evt-s",
           OUTAGE, subject="s")
    store.add_many(r.made)
    days = {(d.rule, d.day): d for d in store.rule_days()}
    nov25, nov26 = date(2026, 11, 25), date(2026, 11, 26)
    assert sorted(days) == [("cart-reminder", nov25), ("outage-resolved", nov25), ("outage-started", nov25),
                            ("outage-started", nov26), ("outage-updated", nov25)]
    started = days[("outage-started", nov25)]
    assert (started.sent, started.held, started.sms_segments) == ({"sms": 3, "email": 1}, {"no_consent": 1}, 6)
    assert days[("cart-reminder", nov25)].held == {"no_marketing_consent": 1}
    assert days[("cart-reminder", nov25)].sent == {}
    later = store.rule_days(since=at("2026-11-26T00:00:00+00:00"))
    assert [(d.rule, d.day, d.sent) for d in later] == [("outage-started", nov26, {"email": 1})]


def test_the_same_record_twice_is_one_row_and_offsets_say_where_to_resume(store, tmp_path):
    r = outage_day()
    assert store.add_many(r.made) == len(r.made) - 3  # the outage start came on four partitions
    assert store.add_many(r.made) == 0
    assert not store.add(r.made[5])
    again = Records(next=dict(r.next))
    again.put(TOPICS.notifications, orjson.loads(r.made[5].value))  # the same message at a later offset
    assert store.add_many(again.made) == 0
    assert len([e for e in store.customer_timeline("C1") if e.kind == "sent"]) == 4
    assert store.next_offsets() == {**r.next, (TOPICS.notifications, 0): r.next[(TOPICS.notifications, 0)] + 1}
    with sqlite3.connect(tmp_path / "console.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE event_id = 'evt-s'").fetchone() == (1,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_records_that_hold_nothing_to_keep_still_move_the_offsets(store):
    r = Records()
    r.put(TOPICS.events, {"marks": [["orders", 0, None]], "partitions": {"orders": 4}}, key="\x00watermarks")
    r.put(TOPICS.events, b"not json")
    r.put(TOPICS.notifications, None)
    r.put(TOPICS.deliveries, [1, 2])
    r.put("some-other-topic", {"id": "x"})
    assert store.add_many(r.made) == 0
    assert store.next_offsets() == r.next


def test_a_delivery_read_before_its_notification_still_joins(store):
    r = outage_day()
    deliveries = [record for record in r.made if record.topic == TOPICS.deliveries]
    rest = [record for record in r.made if record.topic != TOPICS.deliveries]
    assert store.add_many(deliveries) == 3
    assert [e.kind for e in store.customer_timeline("C1")] == []  # nothing says whose they are yet
    store.add_many(rest)
    sent = [e for e in store.customer_timeline("C1") if e.notification_id == "n-s-sms"]
    assert [(e.kind, e.status) for e in sent] == [("sent", "delivered"), ("delivery", "sent"),
                                                  ("delivery", "delivered")]
    assert store.outage_story(OUTAGE).delivery_failures == 1


def test_the_furthest_status_wins_over_a_later_callback(store):
    r = Records()
    r.sent("n1", "order-shipped", "email", "C9", "c9@example.nl", "b", "2026-11-25T10:00:00Z", "e1", "ORD-1",
           subject="s")
    r.delivery("n1", "email", "delivered", "2026-11-25T10:00:05Z")
    r.delivery("n1", "email", "sent", "2026-11-25T10:00:09Z")  # the provider's callbacks crossed
    store.add_many(r.made)
    assert store.customer_timeline("C9")[0].status == "delivered"


def test_prune_drops_rows_past_the_retention_by_their_own_time_and_keeps_the_offsets(tmp_path):
    store = ActivityStore(tmp_path / "s.sqlite3", retention=timedelta(days=1), topics=TOPICS)
    try:
        r = outage_day()
        r.dead("orders", 0, 7, b"{}", "schema", "2026-11-25T20:00:00+01:00")
        store.add_many(r.made)
        store.mark_redriven("orders", 0, 7, "Bea", at("2026-11-25T20:05:00+01:00"))
        # Everything up to 15:00 (UTC+1) is more than a day before this moment.
        assert store.prune(at("2026-11-26T15:00:30+01:00")) > 0
        kept = store.customer_timeline("C1")
        assert [(e.kind, e.event_type) for e in kept] == [
            ("event", "cart.updated"), ("held", "cart.updated"), ("event", "order.delayed"),
            ("event", "outage.resolved"), ("sent", "outage.resolved")]
        assert store.next_offsets() == r.next
        assert store.prune(at("2026-11-26T15:00:30+01:00")) == 0
        assert len(store.dead_letters()) == 1
        assert store.prune(at("2026-11-27T12:00:00+01:00")) > 0
        assert store.dead_letters() == [] and store.customer_timeline("C1") == []
        with pytest.raises(ValueError):
            store.prune(datetime(2026, 11, 30))
    finally:
        store.close()


def test_dead_letters_newest_first_with_who_redrove_them(store):
    r = Records()
    r.dead("orders", 0, 17, b'{"id": "e"}', "schema: customer_id is required", "2026-11-25T13:16:02+01:00")
    r.dead("notifications", 2, 40, b"\xff\xfe", "ValueError: boom", "2026-11-25T14:00:00+01:00", hop="dispatch",
           key=None)
    r.dead("carts", 1, 3, b"x" * 10, "too large", "2026-11-25T13:00:00+01:00", size=2_000_000)
    r.dead("orders", 0, 17, b'{"id": "e"}', "schema again", "2026-11-25T15:00:00+01:00")  # the same original
    assert store.add_many(r.made) == 3
    entries = store.dead_letters()
    assert [(e.topic, e.partition, e.offset) for e in entries] == [("notifications", 2, 40), ("orders", 0, 17),
                                                                   ("carts", 1, 3)]
    assert entries[1] == DeadLetterEntry("orders", 0, 17, "ingest", "schema: customer_id is required",
                                         at("2026-11-25T13:16:02+01:00"), b'{"id": "e"}', None, None, b"C1", True)
    assert (entries[0].original, entries[0].key, entries[0].hop) == (b"\xff\xfe", None, "dispatch")
    assert entries[2].complete is False
    assert [e.offset for e in store.dead_letters(limit=2)] == [40, 17]
    store.mark_redriven("orders", 0, 17, "Bea", at("2026-11-25T16:00:00+01:00"))
    redriven = store.dead_letter("orders", 0, 17)
    assert (redriven.redriven_by, redriven.redriven_at) == ("Bea", at("2026-11-25T16:00:00+01:00"))
    assert store.dead_letter("carts", 1, 3).redriven_by is None
    assert store.dead_letter("orders", 0, 18) is None


def test_search_by_customer_phone_email_order_and_outage(store, day):
    assert store.search("C1") == [SearchHit("customer", "C1", "C1", None)]
    assert store.search("C") == [SearchHit("customer", c, c, None) for c in ("C1", "C2", "C3")]
    phone = SearchHit("phone", "+31612345678", "C1", None)
    assert store.search("+31612345678") == [phone]
    assert store.search("06 1234 5678") == [phone]
    assert store.search("+316123") == [phone]
    assert store.search("Anna@Example.nl") == [SearchHit("email", "anna@example.nl", "C1", None)]
    assert store.search("ORD-2026-7") == [SearchHit("order", "ORD-2026-7", "C1", None)]
    assert store.search("OUT-2026") == [SearchHit("outage", OUTAGE, None, OUTAGE)]
    assert store.search("  ") == [] and store.search("zzz") == []
    assert len(store.search("C", limit=2)) == 2


def test_exact_matches_come_before_prefix_matches(store):
    r = Records()
    r.event("e1", "order.placed", "2026-11-25T10:00:00Z", {"order_id": "ORD-10", "items": []}, "C10")
    r.event("e2", "order.placed", "2026-11-25T10:00:00Z", {"order_id": "ORD-1", "items": []}, "C1")
    store.add_many(r.made)
    assert [hit.value for hit in store.search("ORD-1")] == ["ORD-1", "ORD-10"]
    assert [hit.value for hit in store.search("C1")] == ["C1", "C10"]


@pytest.mark.parametrize("deleted_first", [False, True])
def test_a_forgotten_customer_keeps_no_address_or_text_whichever_record_comes_first(store, deleted_first):
    r = Records()
    message = r.sent("n1", "order-delayed", "sms", "C7", "+31622222222", "Uw pakket", "2026-11-25T10:00:00Z",
                     "e1", "ORD-7", segments=1)
    forget = r.event("forget-C7", "customer.deleted", "2026-11-26T10:00:00Z", {}, "C7")
    later = r.sent("n2", "order-delayed", "sms", "C7", "+31633333333", "Welkom terug", "2026-11-27T10:00:00Z",
                   "e2", "ORD-8", segments=1)
    for record in ([forget, message, later] if deleted_first else [message, forget, later]):
        store.add(record)
    sent = [(e.notification_id, e.to, e.text) for e in store.customer_timeline("C7") if e.kind == "sent"]
    assert sent == [("n1", None, None), ("n2", "+31633333333", "Welkom terug")]
    assert store.search("+31622222222") == []


def test_the_file_keeps_rows_and_offsets_and_serves_other_threads(tmp_path):
    path = tmp_path / "console.sqlite3"
    first = ActivityStore(path, topics=TOPICS)
    r = outage_day()
    first.add_many(r.made)
    first.close()
    second = ActivityStore(path, topics=TOPICS)
    try:
        assert second.next_offsets() == r.next
        seen: list[int] = []
        reader = threading.Thread(target=lambda: seen.append(len(second.customer_timeline("C1"))))
        reader.start()
        reader.join()
        assert seen == [len(second.customer_timeline("C1"))] and seen[0] == 14
    finally:
        second.close()


def test_a_file_of_another_layout_is_rebuilt(tmp_path):
    path = tmp_path / "console.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE old (x)")
        db.execute("PRAGMA user_version = 999")
    store = ActivityStore(path, topics=TOPICS)
    try:
        assert store.next_offsets() == {}
        assert store.add_many(outage_day().made) > 0
    finally:
        store.close()
