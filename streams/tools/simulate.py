"""Run the decision core over files, on event time, with no broker.

Time is the events' own, through the worker's own ``streams.core.clock.Timeline``
over one input, the file: events are decided in event-time order (ties by
event id), and before each one every pending message due by then is decided
at its due time; what is still pending after the last event is decided at its
due time too. A sorted file passes straight through. Ops replay events against changed rules and read what would have been sent
(``notifications.jsonl``), held back (``suppressed.jsonl``) and refused as
invalid input (``rejected.jsonl``). It is the same Decider the worker runs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from streams.core.clock import Timeline, Watermarks, event_time, moves_clock
from streams.core.config import CoreConfig
from streams.core.decider import Decider, Notification
from streams.core.directory import CustomerDirectory
from streams.core.outcomes import Suppression
from streams.core.policy import Budget
from streams.core.restraint import BUDGET_DETAIL
from streams.core.rules import Rule, RuleSet
from streams.tools.customer_files import read_customer_rows, upsert_event
from streams.errors import EventError
from streams.core.events import BOUNDS, parse_event

FILE = "events file"  # the simulator's one input
EPOCH = BOUNDS.earliest  # customer records are older than any story: they move no clock


@dataclass
class RuleTally:
    sent: int = 0
    suppressed: Counter = field(default_factory=Counter)
    per_customer: Counter = field(default_factory=Counter)
    sent_by_channel: Counter = field(default_factory=Counter)
    sms_segments: int = 0
    cost: Decimal = Decimal(0)

    @property
    def most_to_one_customer(self) -> int:
        return max(self.per_customer.values(), default=0)


@dataclass(frozen=True, order=True)
class Band:
    """Rules of one priority, essential ones apart (the budget counts them but never holds them back)."""

    priority: int
    essential: bool

    @classmethod
    def of(cls, rule: Rule) -> "Band":
        return cls(rule.priority, rule.essential)


@dataclass
class BandTally:
    """What one band took of the contact budget, and how often the budget held it back."""

    contacts: int = 0  # a message on two channels is one contact
    held_by_budget: int = 0


@dataclass(frozen=True, order=True)
class Sent:
    """One message as a customer gets it, for comparing two rule sets."""

    created_at: str
    rule: str
    channel: str
    text: str

    @classmethod
    def of(cls, notification: Notification) -> "Sent":
        text = f"{notification.subject}: {notification.body}" if notification.subject else notification.body
        return cls(notification.created_at, notification.rule, notification.channel, text)


@dataclass
class SimulationReport:
    keep_messages: bool = False
    messages: dict[str, list[Sent]] = field(default_factory=lambda: defaultdict(list))  # by customer
    held: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))  # (rule, reason)
    events: int = 0
    customers: int = 0
    rejected: int = 0
    rules: dict[str, RuleTally] = field(default_factory=lambda: defaultdict(RuleTally))
    per_customer: Counter = field(default_factory=Counter)
    contacts: dict[str, dict[tuple, bool]] = field(default_factory=lambda: defaultdict(dict))
    by_band: dict[Band, BandTally] = field(default_factory=lambda: defaultdict(BandTally))

    def figures(self, rules: RuleSet) -> dict[str, Any]:
        """What ``simulate --json`` prints: the counts per rule, JSON-ready."""
        return {"events": self.events, "customers": self.customers, "rejected": self.rejected,
                "currency": rules.cost.currency if rules.cost else None,
                "rules": {rule: {"sent": t.sent, "sent_by_channel": dict(t.sent_by_channel),
                                 "held_back": dict(t.suppressed), "sms_segments": t.sms_segments,
                                 "cost": str(t.cost), "most_to_one_customer": t.most_to_one_customer}
                          for rule, t in sorted(self.rules.items())}}

    def count_sent(self, notification: Notification, rules: RuleSet) -> None:
        tally = self.rules[notification.rule]
        tally.sent += 1
        tally.sent_by_channel[notification.channel] += 1
        tally.per_customer[notification.customer_id] += 1
        if notification.channel == "sms":
            tally.sms_segments += notification.segments or 1
        if rules.cost is not None:
            tally.cost += rules.cost.of(notification.channel, notification.to, notification.segments)
        self.per_customer[notification.customer_id] += 1
        contact = (datetime.fromisoformat(notification.created_at), f"{notification.rule}|{notification.key}")
        self.count_contact(notification.customer_id, contact, rules.get(notification.rule))
        if self.keep_messages:
            self.messages[notification.customer_id].append(Sent.of(notification))

    def count_held(self, suppression: Suppression, rules: RuleSet) -> None:
        self.rules[suppression.rule].suppressed[suppression.reason] += 1
        self.count_suppression(suppression, rules)
        if self.keep_messages and suppression.customer_id:
            self.held[suppression.customer_id].append((suppression.rule, suppression.reason))

    def count_contact(self, customer_id: str, contact: tuple, rule: Rule) -> None:
        """One message; its other channels are the same contact."""
        if contact not in self.contacts[customer_id]:
            self.by_band[Band.of(rule)].contacts += 1
        self.contacts[customer_id][contact] = rule.essential

    def count_suppression(self, suppression: Suppression, rules: RuleSet) -> None:
        """Only the budget's own: a rule cap gives the same reason with another detail."""
        if suppression.reason == "cap_exceeded" and (suppression.detail or "").startswith(BUDGET_DETAIL):
            self.by_band[Band.of(rules.get(suppression.rule))].held_by_budget += 1

    def budget_use(self, budget: Budget) -> list[str]:
        """One line per band, highest priority first: its contacts, and what the budget held back."""
        lines = []
        for band, tally in sorted(self.by_band.items(), reverse=True):
            allowance = budget.allowance(band.priority)
            if band.essential:
                share = "essential, never held back"
            elif allowance < budget.count:
                share = f"up to {allowance} of {budget.count}, the rest reserved"
            else:
                share = f"may use all {budget.count}"
            lines.append(f"priority {band.priority} ({share}): {tally.contacts} contacts, "
                         f"{tally.held_by_budget} held back by the budget")
        return lines

    def most_contacts(self, window: timedelta, essential: bool = True) -> int:
        """The most contacts one customer had in any window (a message on two channels is one contact)."""
        most = 0
        for contacts in self.contacts.values():
            times = sorted(at for (at, _), is_essential in contacts.items() if essential or not is_essential)
            start = 0
            for end, moment in enumerate(times):
                while times[start] <= moment - window:
                    start += 1
                most = max(most, end - start + 1)
        return most


class _Outputs:
    """The three JSON Lines files of a simulation; none when it writes nowhere (a comparison's second run)."""

    def __init__(self, out: Path | None):
        self.files: dict[str, IO[bytes]] = {}
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            self.files = {name: (out / f"{name}.jsonl").open("wb")
                          for name in ("notifications", "suppressed", "rejected")}

    def write(self, name: str, record: dict[str, Any]) -> None:
        if self.files:
            self.files[name].write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


# (where it came from, its line or offset, the raw record or None, why it cannot be read)
Source = Iterator[tuple[str, int, bytes | None, str | None]]


def file_customers(customers: Path) -> Source:
    """Customer rows of a JSON Lines or CSV file, as the customer.upserted events a load would send."""
    for line, record, reason in read_customer_rows(customers):
        yield str(customers), line, None if reason else orjson.dumps(upsert_event(record, EPOCH, line)), reason


def file_events(events: Path) -> Source:
    with events.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if raw.strip():
                yield str(events), line, raw.rstrip(b"\r\n"), None


def simulate(config: CoreConfig, customers: Path, events: Path, out: Path | None,
             keep_messages: bool = False) -> SimulationReport:
    """Decide the events of a file for the customers of another, on event time; see ``simulate_sources``."""
    return simulate_sources(config, file_customers(customers), file_events(events), out, keep_messages)


def simulate_sources(config: CoreConfig, customers: Source, events: Source, out: Path | None,
                     keep_messages: bool = False) -> SimulationReport:
    """Decide ``events`` for ``customers``; write the outcomes under ``out`` (if given) and tally them.

    ``keep_messages``: the report also holds every message per customer, for a comparison of two rule sets.
    """
    run = SimulationRun(config, out, keep_messages)
    try:
        for origin, line, raw, reason in customers:
            event = run.parsed(origin, line, raw, reason)
            if event is not None:
                run.report.customers += 1
                for _ in run.decider.handle(event, EPOCH):
                    pass
        for origin, line, raw, reason in events:
            event = run.parsed(origin, line, raw, reason)
            if event is not None:
                run.report.events += 1
                run.decide(event)
        run.take(run.timeline.flush())  # what is still pending when the events run out, each at its own due time
    finally:
        run.outputs.close()
    return run.report


class SimulationRun:
    """One simulation: the decider, the event-time timeline over its one input, the outputs and the tally."""

    def __init__(self, config: CoreConfig, out: Path | None, keep_messages: bool):
        self.config = config
        self.report = SimulationReport(keep_messages=keep_messages)
        self.decider = Decider(config.rules, config.renderer, CustomerDirectory(), links=config.links)
        self.outputs = _Outputs(out)
        self.watermarks = Watermarks()
        self.watermarks.expect(FILE, 1)
        self.timeline = Timeline(self.watermarks, (FILE,))

    def parsed(self, origin: str, line: int, raw: bytes | None, reason: str | None) -> dict[str, Any] | None:
        try:
            if raw is None:
                raise EventError(reason or "unreadable")
            return parse_event(raw, self.config.schemas)
        except EventError as exc:
            self.report.rejected += 1
            self.outputs.write("rejected", {"file": origin, "line": line, "reason": str(exc)})
            return None

    def decide(self, event: dict[str, Any]) -> None:
        if not moves_clock(event):
            self.count(self.decider.handle(event, self.timeline.now()))
            return
        self.timeline.add(event)
        self.watermarks.read((FILE, 0), event_time(event))
        self.take(self.timeline.release())

    def take(self, steps) -> None:
        for step in steps:
            self.count(self.decider.fire_due(step.until))
            if step.event is not None:
                self.count(self.decider.handle(step.event, step.until))

    def count(self, outcomes) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Notification):
                self.report.count_sent(outcome, self.config.rules)
                self.outputs.write("notifications", outcome.to_dict())
            else:
                self.report.count_held(outcome, self.config.rules)
                self.outputs.write("suppressed", outcome.to_dict())
