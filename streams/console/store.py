"""The console's activity store: what customers were told, held back and did, in one SQLite file.

Only a cache of the topics (``notifications``, ``suppressed``, ``deliveries``, ``deadletter`` and
``forewarn-events``): every row comes from a record, each record is added with its offset in the
same transaction, and ``next_offsets`` says where to resume; a deleted file is rebuilt from the
topics by reading them again (``feed.py``). The one exception is ``mark_redriven``: who re-drove a
dead letter is on no topic. Joins are made when asked, not when stored, because topics are read in
no order across one another: a delivery may come before its notification, a suppression before
its event. WAL mode: the feed writes while the console reads, each thread on its own connection.
"""

from __future__ import annotations

import base64
import binascii
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import msgspec
import orjson

from streams.core.state import decode_state
from streams.settings import Topics

log = logging.getLogger("forewarn.console")

SCHEMA_VERSION = 2  # 2: pending
CONTACT = "support.contacted"
PRIVATE_PREFIX = "customer."  # customer.upserted holds contact data: only the type and time are kept
SUBJECT_FIELDS = (("outage", "outage_id"), ("order", "order_id"), ("cart", "cart_id"))
# A delivery status that ends a message's story outranks one that does not, whatever their times:
# providers' callbacks arrive out of order ("sent" after "delivered").
STATUS_RANK = {"queued": 0, "sent": 1, "parked": 2, "delivered": 3, "failed": 3, "undelivered": 3}
DETAIL_CHARS = 300
KIND_ORDER = ("event", "contact", "held", "sent", "delivery")  # at the same moment: cause before effect


@dataclass(frozen=True)
class TopicRecord:
    """One record as read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a customer's (or an outage's) story; ``kind``: event, sent, held, delivery or contact."""

    at: datetime
    kind: str
    rule: str | None
    channel: str | None
    text: str | None  # the message ("subject: body" for email) or the event type
    reason: str | None
    detail: str | None
    status: str | None  # of a sent message: its latest delivery status
    to: str | None
    notification_id: str | None
    event_type: str | None
    subject_id: str | None  # outage, order or cart id


@dataclass(frozen=True)
class OutageStory:
    outage_id: str
    started: datetime | None
    resolved: datetime | None
    events: list[TimelineEntry]  # the outage's events and the support contacts about it
    told: dict[tuple[str, str], int]  # (channel, tier) -> customers told; tier "unknown" when not said
    told_over_time: list[tuple[datetime, int]]  # cumulative notifications, per minute
    updates_sent: int
    held_back: dict[str, int]  # reason -> messages
    delivery_failures: int  # messages whose latest status is failed, undelivered or parked


@dataclass(frozen=True)
class RuleDay:
    rule: str
    day: date  # UTC
    sent: dict[str, int]  # channel -> messages
    held: dict[str, int]  # reason -> messages
    sms_segments: int


@dataclass(frozen=True)
class DeadLetterEntry:
    """A dead letter, named by the original record's topic, partition and offset."""

    topic: str
    partition: int
    offset: int
    hop: str | None
    reason: str
    dead_at: datetime
    original: bytes
    redriven_by: str | None
    redriven_at: datetime | None
    key: bytes | None = None  # the original's key: a re-drive sends it back with it
    complete: bool = True  # False: the dead letter kept only the beginning of a larger value


@dataclass(frozen=True)
class PendingEntry:
    """A message waiting in the decide hop: its rule and key, when it falls due, waiting or deferred."""

    rule: str
    key: str
    due: datetime
    hold: str


@dataclass(frozen=True)
class SearchHit:
    kind: str  # customer, phone, email, order or outage
    value: str
    customer_id: str | None
    outage_id: str | None


@dataclass
class _DayCounts:
    sent: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    sms_segments: int = 0


Reader = Callable[[sqlite3.Connection, dict[str, Any], TopicRecord], bool]


class ActivityStore:
    """The store; see the module. Safe to share between threads (a connection per thread)."""

    def __init__(self, path: Path, retention: timedelta = timedelta(days=90), topics: Topics | None = None,
                 states_changelog: str | None = None):
        self.path = Path(path)
        self.states_changelog = states_changelog  # the decide hop's state table: what is waiting, and till when
        self.retention = retention
        self.topics = topics or Topics.from_env()
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._readers: dict[str, Reader] = {
            self.topics.events: self._event, self.topics.notifications: self._notification,
            self.topics.suppressed: self._suppression, self.topics.deliveries: self._delivery,
            self.topics.deadletter: self._dead_letter}
        self._create()

    # -- the connection ------------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # autocommit: transactions are explicit (``_write``); check_same_thread off so ``close`` may close all
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache: a lost last transaction is read again
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _create(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):  # a cache: an older layout is dropped and read again
                log.warning("console store %s has layout %d, not %d: rebuilding it from the topics",
                            self.path, version, SCHEMA_VERSION)
                for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                    db.execute(f'DROP TABLE "{table}"')
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()
        self._local = threading.local()

    # -- adding records ------------------------------------------------------------------------------------

    def add(self, record: TopicRecord) -> bool:
        """Add one record; False if it was there already (or holds nothing to keep). Its offset is kept."""
        return self.add_many((record,)) == 1

    def add_many(self, records: Iterable[TopicRecord]) -> int:
        """Add records in one transaction, with their offsets; how many were new."""
        added = 0
        ends: dict[tuple[str, int], int] = {}
        with self._write() as db:
            for record in records:
                added += self._add(db, record)
                place = (record.topic, record.partition)
                ends[place] = max(ends.get(place, 0), record.offset + 1)
            db.executemany(KEEP_OFFSET, [(topic, part, end) for (topic, part), end in ends.items()])
        return added

    def _add(self, db: sqlite3.Connection, record: TopicRecord) -> bool:
        if record.topic == self.states_changelog:
            return self._pending(db, record)
        reader = self._readers.get(record.topic)
        value = _json_object(record.value)
        # Not an object: ingest's watermark records on forewarn-events are objects without an id and type,
        # and go as any record that is not what its topic holds: only its offset is kept.
        if reader is None or value is None:
            return False
        return reader(db, value, record)

    def _pending(self, db: sqlite3.Connection, record: TopicRecord) -> bool:
        """A customer's state as last logged: only its waiting messages are kept, replaced each time."""
        try:
            customer_id = orjson.loads(record.key) if record.key else None
            state = decode_state(record.value)
        except (orjson.JSONDecodeError, msgspec.DecodeError, ValueError):
            return False
        if not isinstance(customer_id, str):
            return False
        waiting = [] if state is None else [[p.rule, p.key, p.due or p.last_at, p.hold] for p in state.pending.values()]
        db.execute(SET_PENDING, (customer_id, orjson.dumps(waiting).decode()))
        return True

    def pending(self, customer_id: str) -> list[PendingEntry]:
        """What is waiting to be sent to the customer, soonest first, as the state table last logged it."""
        row = self._db().execute("SELECT waiting FROM pending WHERE customer_id = ?", (customer_id,)).fetchone()
        entries = [PendingEntry(rule, key, datetime.fromisoformat(due).astimezone(timezone.utc), hold)
                   for rule, key, due, hold in (orjson.loads(row[0]) if row else []) if due]
        return sorted(entries, key=lambda entry: entry.due)

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Where to resume each topic partition: the offset after the last record added."""
        return {(topic, part): end for topic, part, end in self._db().execute(OFFSETS)}

    def _event(self, db: sqlite3.Connection, event: dict[str, Any], record: TopicRecord) -> bool:
        event_id, event_type = _text(event.get("id")), _text(event.get("type"))
        if event_id is None or event_type is None:
            return False
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        private = event_type.startswith(PRIVATE_PREFIX)
        subject_kind, subject_id = (None, None) if private else _subject(event_type, data)
        at = _ms(event.get("occurred_at"), record.timestamp_ms)
        contact = event_type == CONTACT
        # An outage reaches every partition of forewarn-events: the event id keeps one row of it.
        added = db.execute(ADD_EVENT, (
            event_id, event_type, at, _text(event.get("customer_id")), subject_kind, subject_id,
            _text(data.get("channel")) if contact else None,
            None if private else (_text(data.get("topic")) if contact else _summary(data)),
            record.partition, record.offset)).rowcount == 1
        if added and event_type == "customer.deleted" and event.get("customer_id"):
            db.execute(FORGET, (event["customer_id"], at))
        return added

    def _notification(self, db: sqlite3.Connection, message: dict[str, Any], record: TopicRecord) -> bool:
        notification_id, customer_id = _text(message.get("id")), _text(message.get("customer_id"))
        if notification_id is None:
            return False
        created = _ms(message.get("created_at"), record.timestamp_ms)
        to, subject, body = _text(message.get("to")), _text(message.get("subject")), _text(message.get("body"))
        # A customer forgotten after this message was made: it is kept without address or text.
        if customer_id and db.execute(FORGOTTEN, (customer_id, created)).fetchone():
            to = subject = body = None
        channel = _text(message.get("channel"))
        event_ids = message.get("event_ids")
        first_event = _text(event_ids[0]) if isinstance(event_ids, list) and event_ids else None
        segments = message.get("segments") if isinstance(message.get("segments"), int) else None
        return db.execute(ADD_NOTIFICATION, (
            notification_id, _text(message.get("rule")), channel, customer_id, to, _searchable(to), subject, body,
            _text(message.get("tier")), segments, _text(message.get("key")), first_event, created,
            record.partition, record.offset)).rowcount == 1

    def _suppression(self, db: sqlite3.Connection, held: dict[str, Any], record: TopicRecord) -> bool:
        return db.execute(ADD_SUPPRESSION, (
            record.partition, record.offset, _text(held.get("rule")), _text(held.get("customer_id")),
            _text(held.get("reason")), _text(held.get("event_id")), _text(held.get("channel")),
            _text(held.get("detail")), _text(held.get("key")),
            _ms(held.get("at"), record.timestamp_ms))).rowcount == 1

    def _delivery(self, db: sqlite3.Connection, delivery: dict[str, Any], record: TopicRecord) -> bool:
        notification_id, status = _text(delivery.get("notification_id")), _text(delivery.get("status"))
        if notification_id is None or status is None:
            return False
        return db.execute(ADD_DELIVERY, (
            record.partition, record.offset, notification_id, _text(delivery.get("channel")), status,
            STATUS_RANK.get(status, 0), _text(delivery.get("error")), _ms(delivery.get("at"), record.timestamp_ms),
        )).rowcount == 1

    def _dead_letter(self, db: sqlite3.Connection, dead: dict[str, Any], record: TopicRecord) -> bool:
        topic, partition, offset = _text(dead.get("topic")), dead.get("partition"), dead.get("offset")
        if topic is None or not isinstance(partition, int) or not isinstance(offset, int):
            return False
        original, key = _b64(dead.get("value_b64")), _b64(dead.get("key_b64"))
        if original is None:
            return False
        size = dead.get("value_bytes")
        complete = not (isinstance(size, int) and size > len(original))
        return db.execute(ADD_DEAD_LETTER, (
            topic, partition, offset, _text(dead.get("hop")), _text(dead.get("reason")) or "",
            _ms(dead.get("dead_at"), record.timestamp_ms), original, key, complete,
            record.partition, record.offset)).rowcount == 1

    # -- keeping it small ----------------------------------------------------------------------------------

    def prune(self, now: datetime) -> int:
        """Drop the rows older than the retention, each by its own time; offsets stay. How many went."""
        if now.tzinfo is None:
            raise ValueError("now must carry a time zone")
        cutoff = _to_ms(now - self.retention)
        with self._write() as db:
            return sum(db.execute(statement, (cutoff,)).rowcount for statement in PRUNE)

    # -- questions -----------------------------------------------------------------------------------------

    def customer_timeline(self, customer_id: str) -> list[TimelineEntry]:
        """Everything about one customer, oldest first: their events (and their outages'), what was sent,
        held back and delivered, and their contacts with support."""
        db = self._db()
        rows = [row for statement in TIMELINE for row in db.execute(statement, {"customer": customer_id})]
        return _in_order(rows)

    def outage_story(self, outage_id: str) -> OutageStory | None:
        """The outage from start to all-clear and whom it reached; None if the store knows nothing of it."""
        db = self._db()
        asked = {"outage": outage_id}
        events = _in_order(db.execute(OUTAGE_EVENTS, asked).fetchall())
        told = {(channel, tier): count for channel, tier, count in db.execute(OUTAGE_TOLD, asked)}
        held = {reason: count for reason, count in db.execute(OUTAGE_HELD, asked)}
        if not events and not told and not held:
            return None
        over_time, total = [], 0
        for minute, count in db.execute(OUTAGE_PER_MINUTE, asked):
            total += count
            over_time.append((_from_ms(minute * 60_000), total))
        return OutageStory(
            outage_id=outage_id,
            started=min((e.at for e in events if e.event_type == "outage.started"), default=None),
            resolved=max((e.at for e in events if e.event_type == "outage.resolved"), default=None),
            events=events, told=told, told_over_time=over_time,
            updates_sent=db.execute(OUTAGE_UPDATES, asked).fetchone()[0], held_back=held,
            delivery_failures=db.execute(OUTAGE_FAILURES, asked).fetchone()[0])

    def rule_days(self, since: datetime | None = None) -> list[RuleDay]:
        """Per rule and UTC day: messages sent per channel, held back per reason, SMS segments."""
        db = self._db()
        start = {"since": _to_ms(since) if since else None}
        days: dict[tuple[str, str], _DayCounts] = {}
        for rule, day, channel, count, segments in db.execute(SENT_PER_DAY, start):
            counts = days.setdefault((rule, day), _DayCounts())
            counts.sent[channel] = count
            counts.sms_segments += segments
        for rule, day, reason, count in db.execute(HELD_PER_DAY, start):
            days.setdefault((rule, day), _DayCounts()).held[reason] = count
        return [RuleDay(rule, date.fromisoformat(day), counts.sent, counts.held, counts.sms_segments)
                for (rule, day), counts in sorted(days.items())]

    def dead_letters(self, limit: int = 200) -> list[DeadLetterEntry]:
        """The newest dead letters first."""
        return [_dead_entry(row) for row in self._db().execute(DEAD_LETTERS, (limit,))]

    def dead_letter_count(self) -> int:
        return self._db().execute("SELECT count(*) FROM dead_letters").fetchone()[0]

    def dead_letter(self, topic: str, partition: int, offset: int) -> DeadLetterEntry | None:
        row = self._db().execute(DEAD_LETTER, (topic, partition, offset)).fetchone()
        return _dead_entry(row) if row else None

    def mark_redriven(self, topic: str, partition: int, offset: int, who: str, at: datetime) -> None:
        """Record who sent a dead letter back, and when (the one fact here that no topic holds)."""
        with self._write() as db:
            db.execute(REDRIVEN, (topic, partition, offset, who, _to_ms(at)))

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Customers, phone numbers, addresses, orders and outages that are ``text`` or start with it;
        exact matches first."""
        text = text.strip()
        if not text:
            return []
        db = self._db()
        found: dict[SearchHit, None] = {}  # ordered and without repeats
        for statement, prefix in ((SEARCH_CUSTOMERS, text), (SEARCH_ADDRESSES, _searchable(text)),
                                  (SEARCH_SUBJECTS, text)):
            if not prefix:
                continue
            for kind, value, customer_id, outage_id in db.execute(
                    statement, {"low": prefix, "high": prefix + "\U0010ffff", "limit": limit}):
                found.setdefault(SearchHit(kind, value, customer_id, outage_id))
        exact = {text, _searchable(text)}
        hits = sorted(found, key=lambda hit: (hit.value not in exact and _searchable(hit.value) not in exact,
                                              hit.kind, hit.value, hit.customer_id or ""))
        return hits[:limit]


# -- rows to answers ---------------------------------------------------------------------------------------


def _in_order(rows: Iterable[tuple]) -> list[TimelineEntry]:
    entries = [TimelineEntry(_from_ms(row[0]), *row[1:]) for row in rows]
    return sorted(entries, key=lambda e: (e.at, KIND_ORDER.index(e.kind) if e.kind in KIND_ORDER else 9))


def _dead_entry(row: tuple) -> DeadLetterEntry:
    topic, partition, offset, hop, reason, dead_ms, original, key, complete, who, at_ms = row
    return DeadLetterEntry(topic, partition, offset, hop, reason, _from_ms(dead_ms), bytes(original), who,
                           _from_ms(at_ms) if at_ms is not None else None,
                           bytes(key) if key is not None else None, bool(complete))


# -- values ------------------------------------------------------------------------------------------------


def _json_object(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _subject(event_type: str, data: dict[str, Any]) -> tuple[str | None, str | None]:
    """What the event is about: its own family's id first (a checked-out cart names its order too)."""
    family = event_type.split(".", 1)[0]
    ordered = sorted(SUBJECT_FIELDS, key=lambda pair: pair[0] != family)
    for kind, name in ordered:
        if isinstance(data.get(name), str):
            return kind, data[name]
    return None, None


def _summary(data: dict[str, Any]) -> str | None:
    """The event's plain facts in one line (lists such as items and areas left out)."""
    ids = {name for _, name in SUBJECT_FIELDS}
    facts = [f"{name}: {value}" for name, value in data.items()
             if name not in ids and isinstance(value, (str, int, float, bool))]
    return ", ".join(facts)[:DETAIL_CHARS] or None


def _searchable(text: str | None) -> str | None:
    """An address as search compares it: email in lower case; a phone number in E.164 (a Dutch 06 as +316)."""
    if text is None:
        return None
    text = text.strip().lower()
    if "@" in text:
        return text
    compact = "".join(ch for ch in text if ch not in " -().")
    if compact.startswith("00") and compact[2:].isdigit():
        return "+" + compact[2:]
    if compact.startswith("0") and compact[1:].isdigit():
        return "+31" + compact[1:]
    return compact


def _ms(text: Any, fallback: int) -> int:
    """An RFC 3339 time as milliseconds since the epoch; ``fallback`` (the record's time) if there is none."""
    if isinstance(text, str):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        if moment.tzinfo is not None:
            return _to_ms(moment)
    return fallback


def _to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


# -- the SQL -----------------------------------------------------------------------------------------------
# Times are milliseconds since the epoch (UTC). ``rec_partition``/``rec_offset``: where the row's own record is.

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS pending (customer_id TEXT PRIMARY KEY, waiting TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL,
       PRIMARY KEY (topic, part)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, type TEXT NOT NULL, at_ms INTEGER NOT NULL,
       customer_id TEXT, subject_kind TEXT, subject_id TEXT, channel TEXT, detail TEXT,
       rec_partition INTEGER NOT NULL, rec_offset INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_customer ON events (customer_id, at_ms)",
    "CREATE INDEX IF NOT EXISTS events_subject ON events (subject_id, at_ms)",
    "CREATE INDEX IF NOT EXISTS events_at ON events (at_ms)",
    """CREATE TABLE IF NOT EXISTS notifications (id TEXT PRIMARY KEY, rule TEXT, channel TEXT, customer_id TEXT,
       to_addr TEXT, to_search TEXT, subject TEXT, body TEXT, tier TEXT, segments INTEGER, subject_id TEXT,
       event_id TEXT, created_ms INTEGER NOT NULL, rec_partition INTEGER NOT NULL, rec_offset INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS notifications_customer ON notifications (customer_id, created_ms)",
    "CREATE INDEX IF NOT EXISTS notifications_subject ON notifications (subject_id, created_ms)",
    "CREATE INDEX IF NOT EXISTS notifications_rule ON notifications (rule, created_ms)",
    "CREATE INDEX IF NOT EXISTS notifications_at ON notifications (created_ms)",
    "CREATE INDEX IF NOT EXISTS notifications_to ON notifications (to_search)",
    """CREATE TABLE IF NOT EXISTS suppressions (rec_partition INTEGER NOT NULL, rec_offset INTEGER NOT NULL,
       rule TEXT, customer_id TEXT, reason TEXT, event_id TEXT, channel TEXT, detail TEXT, subject_key TEXT,
       at_ms INTEGER NOT NULL, PRIMARY KEY (rec_partition, rec_offset))""",
    "CREATE INDEX IF NOT EXISTS suppressions_customer ON suppressions (customer_id, at_ms)",
    "CREATE INDEX IF NOT EXISTS suppressions_event ON suppressions (event_id)",
    "CREATE INDEX IF NOT EXISTS suppressions_subject ON suppressions (subject_key)",
    "CREATE INDEX IF NOT EXISTS suppressions_rule ON suppressions (rule, at_ms)",
    "CREATE INDEX IF NOT EXISTS suppressions_at ON suppressions (at_ms)",
    """CREATE TABLE IF NOT EXISTS deliveries (rec_partition INTEGER NOT NULL, rec_offset INTEGER NOT NULL,
       notification_id TEXT NOT NULL, channel TEXT, status TEXT NOT NULL, rank INTEGER NOT NULL, error TEXT,
       at_ms INTEGER NOT NULL, PRIMARY KEY (rec_partition, rec_offset))""",
    "CREATE INDEX IF NOT EXISTS deliveries_notification ON deliveries (notification_id)",
    "CREATE INDEX IF NOT EXISTS deliveries_at ON deliveries (at_ms)",
    """CREATE TABLE IF NOT EXISTS dead_letters (orig_topic TEXT NOT NULL, orig_partition INTEGER NOT NULL,
       orig_offset INTEGER NOT NULL, hop TEXT, reason TEXT NOT NULL, dead_ms INTEGER NOT NULL,
       original BLOB NOT NULL, orig_key BLOB, complete INTEGER NOT NULL, rec_partition INTEGER NOT NULL,
       rec_offset INTEGER NOT NULL, PRIMARY KEY (orig_topic, orig_partition, orig_offset))""",
    "CREATE INDEX IF NOT EXISTS dead_letters_at ON dead_letters (dead_ms)",
    """CREATE TABLE IF NOT EXISTS redrives (orig_topic TEXT NOT NULL, orig_partition INTEGER NOT NULL,
       orig_offset INTEGER NOT NULL, who TEXT NOT NULL, at_ms INTEGER NOT NULL,
       PRIMARY KEY (orig_topic, orig_partition, orig_offset))""",
)

KEEP_OFFSET = """INSERT INTO offsets VALUES (?, ?, ?)
    ON CONFLICT (topic, part) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)"""
OFFSETS = "SELECT topic, part, next_offset FROM offsets"
ADD_EVENT = """INSERT OR IGNORE INTO events (event_id, type, at_ms, customer_id, subject_kind, subject_id, channel,
    detail, rec_partition, rec_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
ADD_NOTIFICATION = """INSERT OR IGNORE INTO notifications (id, rule, channel, customer_id, to_addr, to_search,
    subject, body, tier, segments, subject_id, event_id, created_ms, rec_partition, rec_offset)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
ADD_SUPPRESSION = """INSERT OR IGNORE INTO suppressions (rec_partition, rec_offset, rule, customer_id, reason,
    event_id, channel, detail, subject_key, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
ADD_DELIVERY = """INSERT OR IGNORE INTO deliveries (rec_partition, rec_offset, notification_id, channel, status,
    rank, error, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
ADD_DEAD_LETTER = """INSERT OR IGNORE INTO dead_letters (orig_topic, orig_partition, orig_offset, hop, reason,
    dead_ms, original, orig_key, complete, rec_partition, rec_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
# A forgotten customer's messages lose address and text, whichever of the two records is read first.
SET_PENDING = "INSERT OR REPLACE INTO pending (customer_id, waiting) VALUES (?, ?)"
FORGET = """UPDATE notifications SET to_addr = NULL, to_search = NULL, subject = NULL, body = NULL
    WHERE customer_id = ? AND created_ms <= ?"""
FORGOTTEN = "SELECT 1 FROM events WHERE customer_id = ? AND type = 'customer.deleted' AND at_ms >= ? LIMIT 1"
PRUNE = (
    "DELETE FROM notifications WHERE created_ms < ?",
    "DELETE FROM suppressions WHERE at_ms < ?",
    "DELETE FROM deliveries WHERE at_ms < ?",
    "DELETE FROM events WHERE at_ms < ?",
    """DELETE FROM redrives WHERE (orig_topic, orig_partition, orig_offset) IN
       (SELECT orig_topic, orig_partition, orig_offset FROM dead_letters WHERE dead_ms < ?)""",
    "DELETE FROM dead_letters WHERE dead_ms < ?",
)

# The latest status of notification ``n``: the furthest along, then the newest.
LATEST = """(SELECT d.status FROM deliveries d WHERE d.notification_id = n.id
    ORDER BY d.rank DESC, d.at_ms DESC, d.rec_partition DESC, d.rec_offset DESC LIMIT 1)"""
# Every timeline query gives: at, kind, rule, channel, text, reason, detail, status, to, notification id,
# event type, subject id (the fields of TimelineEntry, in order).
EVENT_COLUMNS = """e.at_ms, CASE WHEN e.type = 'support.contacted' THEN 'contact' ELSE 'event' END, NULL,
    e.channel, e.type, NULL, e.detail, NULL, NULL, NULL, e.type, e.subject_id"""
TIMELINE = (
    f"""SELECT n.created_ms, 'sent', n.rule, n.channel,
        CASE WHEN n.subject IS NOT NULL THEN n.subject || ': ' || n.body ELSE n.body END,
        NULL, NULL, {LATEST}, n.to_addr, n.id, e.type, n.subject_id
        FROM notifications n LEFT JOIN events e ON e.event_id = n.event_id WHERE n.customer_id = :customer""",
    """SELECT s.at_ms, 'held', s.rule, s.channel, NULL, s.reason, s.detail, NULL, NULL, NULL, e.type,
        COALESCE(e.subject_id, s.subject_key)
        FROM suppressions s LEFT JOIN events e ON e.event_id = s.event_id WHERE s.customer_id = :customer""",
    """SELECT d.at_ms, 'delivery', n.rule, d.channel, NULL, NULL, d.error, d.status, NULL, d.notification_id,
        NULL, n.subject_id
        FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE n.customer_id = :customer""",
    f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.customer_id = :customer",
    # Outage events name no customer: those of the outages the customer was told of, held back from or called about.
    f"""SELECT {EVENT_COLUMNS} FROM events e
        WHERE e.subject_kind = 'outage' AND e.customer_id IS NULL AND e.subject_id IN (
            SELECT subject_id FROM notifications WHERE customer_id = :customer
            UNION SELECT subject_key FROM suppressions WHERE customer_id = :customer
            UNION SELECT x.subject_id FROM suppressions s JOIN events x ON x.event_id = s.event_id
                  WHERE s.customer_id = :customer
            UNION SELECT subject_id FROM events WHERE customer_id = :customer AND subject_kind = 'outage')""",
)

OUTAGE_EVENTS = f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.subject_id = :outage AND e.subject_kind = 'outage'"
# Outage rules key their messages by the outage id (the rule's default key, data.outage_id).
OUTAGE_TOLD = """SELECT channel, COALESCE(tier, 'unknown'), COUNT(DISTINCT customer_id) FROM notifications
    WHERE subject_id = :outage GROUP BY 1, 2"""
OUTAGE_PER_MINUTE = """SELECT created_ms / 60000, COUNT(*) FROM notifications WHERE subject_id = :outage
    GROUP BY 1 ORDER BY 1"""
OUTAGE_UPDATES = """SELECT COUNT(*) FROM notifications n JOIN events e ON e.event_id = n.event_id
    WHERE n.subject_id = :outage AND e.type = 'outage.updated'"""
OUTAGE_FAILURES = f"""SELECT COUNT(*) FROM notifications n
    WHERE n.subject_id = :outage AND {LATEST} IN ('failed', 'undelivered', 'parked')"""
OUTAGE_HELD = """SELECT COALESCE(reason, 'unknown'), COUNT(*) FROM suppressions
    WHERE subject_key = :outage
       OR event_id IN (SELECT event_id FROM events WHERE subject_id = :outage AND subject_kind = 'outage')
    GROUP BY 1"""

SENT_PER_DAY = """SELECT rule, date(created_ms / 1000, 'unixepoch'), COALESCE(channel, 'unknown'), COUNT(*),
    SUM(CASE WHEN channel = 'sms' THEN COALESCE(segments, 1) ELSE 0 END) FROM notifications
    WHERE rule IS NOT NULL AND (:since IS NULL OR created_ms >= :since) GROUP BY 1, 2, 3"""
HELD_PER_DAY = """SELECT rule, date(at_ms / 1000, 'unixepoch'), COALESCE(reason, 'unknown'), COUNT(*)
    FROM suppressions WHERE rule IS NOT NULL AND (:since IS NULL OR at_ms >= :since) GROUP BY 1, 2, 3"""

DEAD_COLUMNS = """SELECT d.orig_topic, d.orig_partition, d.orig_offset, d.hop, d.reason, d.dead_ms, d.original,
    d.orig_key, d.complete, r.who, r.at_ms
    FROM dead_letters d LEFT JOIN redrives r USING (orig_topic, orig_partition, orig_offset)"""
DEAD_LETTERS = f"{DEAD_COLUMNS} ORDER BY d.dead_ms DESC, d.rec_partition DESC, d.rec_offset DESC LIMIT ?"
DEAD_LETTER = f"{DEAD_COLUMNS} WHERE d.orig_topic = ? AND d.orig_partition = ? AND d.orig_offset = ?"
REDRIVEN = """INSERT INTO redrives VALUES (?, ?, ?, ?, ?)
    ON CONFLICT DO UPDATE SET who = excluded.who, at_ms = excluded.at_ms"""

# Prefix searches as ranges (>= low, < high), so that the indexes serve them.
SEARCH_CUSTOMERS = """SELECT 'customer', customer_id, customer_id, NULL FROM (
        SELECT customer_id FROM events WHERE customer_id >= :low AND customer_id < :high
        UNION SELECT customer_id FROM notifications WHERE customer_id >= :low AND customer_id < :high
        UNION SELECT customer_id FROM suppressions WHERE customer_id >= :low AND customer_id < :high)
    ORDER BY customer_id LIMIT :limit"""
SEARCH_ADDRESSES = """SELECT DISTINCT CASE WHEN instr(to_addr, '@') > 0 THEN 'email' ELSE 'phone' END, to_addr,
    customer_id, NULL FROM notifications WHERE to_search >= :low AND to_search < :high
    ORDER BY to_search LIMIT :limit"""
SEARCH_SUBJECTS = """SELECT DISTINCT subject_kind, subject_id,
    CASE WHEN subject_kind = 'outage' THEN NULL ELSE customer_id END,
    CASE WHEN subject_kind = 'outage' THEN subject_id END
    FROM events WHERE subject_id >= :low AND subject_id < :high AND subject_kind IN ('order', 'outage')
    ORDER BY subject_id LIMIT :limit"""
