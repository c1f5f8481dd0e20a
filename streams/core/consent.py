"""What a customer agreed to hear: statements with provenance, the newest one wins.

Every rule has a category. A ``service`` message (an outage, an order update)
goes to anyone with a contact address who has not opted out; a ``marketing``
message (a cart reminder) needs the customer's marketing consent for that
channel as well.

A customer's preferences are statements, each about a scope (a channel, a
category, a rule, or any mix; an unset part covers all), saying yes or no, at a
time, from a source (the CRM, an SMS STOP, an unsubscribe link, support, the
API). For a given message the newest statement whose scope covers it wins; a
tie goes to the no. So a CRM record that still says ``sms: true`` does not undo
a STOP sent after the CRM last changed its mind.

The CRM sends the whole profile on every upsert. Its consents count as a new
statement only when they change, or when the CRM dates them later
(``consents.updated_at``): a changed address is not a renewed consent.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

CHANNELS = ("sms", "email")
SERVICE, MARKETING = "service", "marketing"
CATEGORIES = (SERVICE, MARKETING)
SOURCES = ("crm", "sms-stop", "unsubscribe-link", "support", "api", "provider")
OPTED_OUT, NO_MARKETING_CONSENT = "opted_out", "no_marketing_consent"
FORGOTTEN = "forgotten (customer.deleted)"


class Scope(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a statement is about; None covers everything of its kind."""

    channel: str | None = None
    category: str | None = None
    rule: str | None = None

    def covers(self, channel: str, category: str, rule: str) -> bool:
        return (self.channel in (None, channel) and self.category in (None, category)
                and self.rule in (None, rule))

    def grants_marketing(self, rule: str) -> bool:
        """A yes to this scope is marketing consent: it names marketing or the rule itself."""
        return self.category == MARKETING or self.rule == rule

    def describe(self) -> str:
        parts = [self.rule and f"rule {self.rule}", self.category, self.channel]
        return " ".join(p for p in parts if p) or "everything"


class Statement(msgspec.Struct, frozen=True, omit_defaults=True):
    """The customer said yes (``allow``) or no to ``scope`` at ``at`` (ISO time), through ``source``."""

    scope: Scope
    allow: bool
    at: str
    source: str
    detail: str | None = None

    def moment(self) -> datetime:
        return datetime.fromisoformat(self.at)

    def order(self) -> tuple[datetime, int]:
        """Newest first wins; at the same moment the no wins."""
        return self.moment(), 0 if self.allow else 1


class Preferences(msgspec.Struct):
    """One customer's statements, the newest per scope."""

    customer_id: str
    statements: list[Statement] = msgspec.field(default_factory=list)
    crm: list[Statement] = msgspec.field(default_factory=list)  # the CRM's last answer per scope, news or not

    def state(self, statement: Statement) -> bool:
        """Take ``statement`` if it is newer than the one held for its scope; True if anything changed."""
        for index, held in enumerate(self.statements):
            if held.scope == statement.scope:
                if statement.order() <= held.order():
                    return False
                self.statements[index] = statement
                return True
        self.statements.append(statement)
        return True

    def held(self, scope: Scope) -> Statement | None:
        return next((s for s in self.statements if s.scope == scope), None)

    def from_crm(self, consents: dict[str, Any], at: str) -> bool:
        """The CRM's consents as of ``at``, as far as they are news (``crm_news``); True if anything changed."""
        dated = bool(consents.get("updated_at"))
        changed = False
        for statement in crm_statements(consents, at):
            last = next((s for s in self.crm if s.scope == statement.scope), None)
            if crm_news(last, statement, dated):
                changed = self.state(statement) or changed
                self.crm = [s for s in self.crm if s.scope != statement.scope] + [statement]
                changed = True
        return changed

    def withheld(self, channel: str, category: str, rule: str) -> str | None:
        """Why a message of ``rule`` (``category``) may not go on ``channel``; None: it may."""
        covering = [s for s in self.statements if s.scope.covers(channel, category, rule)]
        denials = [s.order() for s in covering if not s.allow]
        newest_no = max(denials, default=None)
        if newest_no is not None and newest_no >= max(s.order() for s in covering):
            return OPTED_OUT
        if category == MARKETING:
            grants = [s.order() for s in covering if s.allow and s.scope.grants_marketing(rule)]
            if not grants or (newest_no is not None and max(grants) < newest_no):
                return NO_MARKETING_CONSENT
        return None

    def encode(self) -> bytes:
        return _ENCODER.encode(self)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Preferences)


def decode(raw: bytes | None, customer_id: str) -> Preferences:
    return _DECODER.decode(raw) if raw else Preferences(customer_id)


def crm_statements(consents: dict[str, Any], at: str) -> list[Statement]:
    """The statements a CRM record's ``consents`` make: per channel, and per channel for marketing."""
    when = consents.get("updated_at") or at
    statements = [Statement(Scope(channel), bool(consents[channel]), when, "crm")
                  for channel in CHANNELS if channel in consents]
    marketing = consents.get("marketing") or {}
    statements += [Statement(Scope(channel, MARKETING), bool(marketing[channel]), when, "crm")
                   for channel in CHANNELS if channel in marketing]
    return statements


def crm_news(last: Statement | None, statement: Statement, dated: bool) -> bool:
    """A CRM statement counts if the CRM changed its answer, or (``dated``) dates it later than before."""
    if last is None or statement.allow != last.allow:
        return True
    return dated and statement.moment() > last.moment()


class PreferenceBook:
    """Preferences by customer id, kept as compact JSON bytes in any mutable mapping (a dict, a faust table)."""

    def __init__(self, records: MutableMapping[str, bytes] | None = None):
        self.records: MutableMapping[str, bytes] = records if records is not None else {}

    def get(self, customer_id: str) -> Preferences:
        return decode(self.records.get(customer_id), customer_id)

    def state(self, customer_id: str, statements: Iterable[Statement]) -> bool:
        """Record ``statements``; True if the customer's preferences changed."""
        preferences = self.get(customer_id)
        changed = False
        for statement in statements:
            changed = preferences.state(statement) or changed
        if changed:
            self.records[customer_id] = preferences.encode()
        return changed

    def from_crm(self, customer_id: str, consents: dict[str, Any], at: str) -> bool:
        preferences = self.get(customer_id)
        if not preferences.from_crm(consents, at):
            return False
        self.records[customer_id] = preferences.encode()
        return True

    def withheld(self, customer_id: str, channel: str, category: str, rule: str) -> str | None:
        raw = self.records.get(customer_id)
        if raw is None:
            return None if category != MARKETING else NO_MARKETING_CONSENT
        return decode(raw, customer_id).withheld(channel, category, rule)

    def forget(self, customer_id: str, at: str) -> None:
        """Keep nothing but a no to everything from ``at``: what is queued or parked for them is not sent.

        It holds no contact data, and a later CRM record (the customer signs up again) is newer and wins.
        """
        self.records[customer_id] = Preferences(customer_id, [Statement(Scope(), False, at, "api", FORGOTTEN)]).encode()


@dataclass(frozen=True)
class PreferenceChange:
    """What goes on the ``consent`` topic: statements for one customer, or for a phone number (an SMS STOP).

    A change by phone number goes to every partition (``partition`` is where
    it was read): the number's customers may live in any of them.
    """

    statements: tuple[Statement, ...]
    customer_id: str | None = None
    phone: str | None = None
    partition: int | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"customer_id": self.customer_id} if self.customer_id else {"phone": self.phone}
        record["statements"] = [statement_record(s) for s in self.statements]
        return record

    @classmethod
    def of(cls, record: dict[str, Any], partition: int | None = None) -> "PreferenceChange":
        """From a ``consent`` record; raises ValueError if it is not one."""
        try:
            statements = tuple(statement_of(s) for s in record["statements"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a consent record: {exc}") from None
        if not (record.get("customer_id") or record.get("phone")):
            raise ValueError("a consent record names a customer_id or a phone")
        return cls(statements, record.get("customer_id"), record.get("phone"), partition)


def statement_record(statement: Statement) -> dict[str, Any]:
    scope = statement.scope
    record = {"channel": scope.channel, "category": scope.category, "rule": scope.rule, "allow": statement.allow,
              "at": statement.at, "source": statement.source}
    if statement.detail:
        record["detail"] = statement.detail
    return record


def statement_of(record: dict[str, Any]) -> Statement:
    channel, category = record.get("channel"), record.get("category")
    if channel not in (None, *CHANNELS) or category not in (None, *CATEGORIES) or record["source"] not in SOURCES:
        raise ValueError(f"not a statement: {record!r:.200}")
    if datetime.fromisoformat(record["at"]).tzinfo is None:  # raises ValueError for what is not a time at all
        raise ValueError("a statement's time needs its UTC offset")
    if not isinstance(record["allow"], bool):
        raise ValueError("allow is true or false")
    return Statement(Scope(channel, category, record.get("rule")), record["allow"], record["at"], record["source"],
                     record.get("detail"))
