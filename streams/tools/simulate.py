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
from pathlib import Path
from typing import IO, Any

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


@dataclass
class SimulationReport:
    events: int = 0
    customers: int = 0
    rejected: int = 0
    rules: dict[str, RuleTally] = field(default_factory=lambda: defaultdict(RuleTally))
    per_customer: Counter = field(default_factory=Counter)
    contacts: dict[str, dict[tuple, bool]] = field(default_factory=lambda: defaultdict(dict))
    by_band: dict[Band, BandTally] = field(default_factory=lambda: defaultdict(BandTally))

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
    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, IO[bytes]] = {
            name: (out / f"{name}.jsonl").open("wb") for name in ("notifications", "suppressed", "rejected")
        }

    def write(self, name: str, record: dict[str, Any]) -> None:
        self.files[name].write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def simulate(config: CoreConfig, customers: Path, events: Path, out: Path) -> SimulationReport:
    report = SimulationReport()
    decider = Decider(config.rules, config.renderer, CustomerDirectory(), links=config.links)
    outputs = _Outputs(out)
    watermarks = Watermarks()
    watermarks.expect(FILE, 1)
    timeline = Timeline(watermarks, (FILE,))

    def take(steps) -> None:
        for step in steps:
            count(decider.fire_due(step.until))
            if step.event is not None:
                count(decider.handle(step.event, step.until))

    def count(outcomes) -> None:
        for outcome in outcomes:
            tally = report.rules[outcome.rule]
            if isinstance(outcome, Notification):
                tally.sent += 1
                tally.per_customer[outcome.customer_id] += 1
                report.per_customer[outcome.customer_id] += 1
                contact = (datetime.fromisoformat(outcome.created_at), f"{outcome.rule}|{outcome.key}")
                report.count_contact(outcome.customer_id, contact, config.rules.get(outcome.rule))
                outputs.write("notifications", outcome.to_dict())
            else:
                tally.suppressed[outcome.reason] += 1
                report.count_suppression(outcome, config.rules)
                outputs.write("suppressed", outcome.to_dict())

    try:
        for line, record, reason in read_customer_rows(customers):
            try:
                if reason:
                    raise EventError(reason)
                event = parse_event(orjson.dumps(upsert_event(record, EPOCH, line)), config.schemas)
            except EventError as exc:
                report.rejected += 1
                outputs.write("rejected", {"file": str(customers), "line": line, "reason": str(exc)})
                continue
            report.customers += 1
            for _ in decider.handle(event, EPOCH):
                pass
        with events.open("rb") as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    event = parse_event(raw.rstrip(b"\r\n"), config.schemas)
                except EventError as exc:
                    report.rejected += 1
                    outputs.write("rejected", {"file": str(events), "line": line, "reason": str(exc)})
                    continue
                report.events += 1
                if not moves_clock(event):
                    count(decider.handle(event, timeline.now()))
                    continue
                timeline.add(event)
                watermarks.read((FILE, 0), event_time(event))
                take(timeline.release())
        take(timeline.flush())  # what is still pending when the events run out, each at its own due time
    finally:
        outputs.close()
    return report
