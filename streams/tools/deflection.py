"""The deflection report over files: decide the events as ``forewarn simulate`` does, then count support contacts.

Who was told is what the simulator sends; who was affected but not told is what
it holds back for a reason that leaves the customer uninformed (``NOT_TOLD``);
who contacted support are the input's ``support.contacted`` events. The counting
is ``streams.core.deflection``.

``at`` of a Told or NotTold record, "when the customer was affected", is the time
of the event that caused it (the earliest of a message's events), the same moment
for both groups: counting from the message's own time would leave out of the
told group the calls made while its message was still waiting.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from streams.core.clock import event_time
from streams.core.config import CoreConfig
from streams.core.decider import Notification
from streams.core.deflection import Contact, DeflectionRow, NotTold, Told, deflection
from streams.core.outcomes import Suppression
from streams.tools.simulate import EPOCH, SimulationRun, file_customers, file_events

# Suppression reasons that mean: affected, and (by this record) not told. A deferral for quiet hours counts
# only if nothing was sent after it (a pair both told and not told counts as told), and so does a message
# held back on one channel and sent on another.
NOT_TOLD = {
    "no_consent": "no consent for the channel",
    "no_marketing_consent": "no marketing consent for the channel",
    "no_contact_address": "no phone number or email address",
    "opted_out": "opted out",
    "quiet_hours": "deferred for quiet hours, and never sent",
    "cancelled": "cancelled before it was sent (a blip over within the wait, a parcel delivered)",
    "cap_exceeded": "a rule cap or the contact budget",
    "render_failed": "the message could not be made",
    "internal_error": "the decision failed",
}
# Not counted: coalesced (folded into a later message about the same key, which is counted), duplicate (the
# customer was told the fact already), superseded (a newer trigger replaced it), unknown_customer (nobody to
# count), condition_error (whether the rule meant the customer is not known).
LATE = "late"  # the reason of a message sent more than ``late`` after the customer was affected


class _Collect(SimulationRun):
    """A simulation that keeps its outcomes instead of writing them, and the input's support contacts."""

    def __init__(self, config: CoreConfig):
        super().__init__(config, None, keep_messages=False)
        self.outcomes: list[Notification | Suppression] = []
        self.occurred: dict[str, datetime] = {}  # event id: its time
        self.contacts: list[Contact] = []

    def count(self, outcomes) -> None:
        self.outcomes.extend(outcomes)

    def note(self, event: dict[str, Any]) -> None:
        moment = event_time(event)
        self.occurred.setdefault(event["id"], moment)
        if event["type"] == "support.contacted":
            data = event["data"]
            self.contacts.append(Contact(event["customer_id"], data["topic"],
                                         data.get("outage_id") or data.get("order_id"), moment))


def collect(config: CoreConfig, customers: Path, events: Path) -> tuple[list[Told], list[NotTold], list[Contact]]:
    """Decide ``events`` for ``customers`` on event time, as ``simulate_sources`` does: who was told, who was not,
    who contacted support."""
    return _records(_run(config, customers, events))


def report_from_simulation(config: CoreConfig, customers: Path, events: Path,
                           within: timedelta = timedelta(days=3), late: timedelta | None = None) -> list[DeflectionRow]:
    """Per rule, the customers told and not told and how many of each contacted support within ``within``.

    Only rules about outages or orders (the events they listen to): support contacts are about those, never
    about a cart. ``late``: a message sent more than this after the customer was affected counts as not told
    (reason ``late``); by default every message sent counts as told.
    """
    run = _run(config, customers, events)
    told, not_told, contacts = _records(run, late)
    kinds = {rule.id: _kind(rule.events) for rule in config.rules.rules}
    return deflection([t for t in told if kinds.get(t.rule)], [n for n in not_told if kinds.get(n.rule)], contacts,
                      within, kinds)


def _run(config: CoreConfig, customers: Path, events: Path) -> _Collect:
    run = _Collect(config)
    for origin, line, raw, reason in file_customers(customers):
        event = run.parsed(origin, line, raw, reason)
        if event is not None:
            run.report.customers += 1
            for _ in run.decider.handle(event, EPOCH):
                pass
    for origin, line, raw, reason in file_events(events):
        event = run.parsed(origin, line, raw, reason)
        if event is not None:
            run.report.events += 1
            run.note(event)
            run.decide(event)
    run.take(run.timeline.flush())
    return run


def _records(run: _Collect, late: timedelta | None = None) -> tuple[list[Told], list[NotTold], list[Contact]]:
    told, not_told = [], []
    # An expectation met (the parcel was scanned) cancels the message: that customer had nothing to hear.
    fulfilled = {rule.id for rule in run.config.rules.rules if rule.expects}
    for outcome in run.outcomes:
        if isinstance(outcome, Suppression) and outcome.reason == "cancelled" and outcome.rule in fulfilled:
            continue
        if isinstance(outcome, Notification):
            affected = _affected(run, outcome.event_ids, outcome.created_at)
            subject = outcome.key or outcome.event_ids[0]
            sent = datetime.fromisoformat(outcome.created_at)
            if late is not None and sent - affected > late:
                not_told.append(NotTold(outcome.rule, outcome.customer_id, subject, affected, LATE))
            else:
                told.append(Told(outcome.rule, outcome.customer_id, subject, affected))
        elif outcome.reason in NOT_TOLD and outcome.customer_id:
            affected = _affected(run, (outcome.event_id,), outcome.at)
            not_told.append(NotTold(outcome.rule, outcome.customer_id, outcome.key or outcome.event_id, affected,
                                    outcome.reason))
    return told, not_told, run.contacts


def _affected(run: _Collect, event_ids, fallback: str) -> datetime:
    times = [run.occurred[e] for e in event_ids if e in run.occurred]
    return min(times) if times else datetime.fromisoformat(fallback)


def _kind(events: tuple[str, ...]) -> str | None:
    families = {event.split(".", 1)[0] for event in events}
    return families.pop() if len(families) == 1 and families & {"outage", "order"} else None


def lines(rows: list[DeflectionRow]) -> list[str]:
    """A plain table: per rule, told and of whom called, the share with its 95 % interval, the same for those
    not told, and the difference in percentage points (positive: those told called less)."""
    header = ["rule", "told", "called", "share (95 % interval)", "not told", "called", "share (95 % interval)",
              "difference"]
    table = [header] + [[row.rule, str(row.told), str(row.told_called),
                         _share(row.told, row.told_share, row.told_interval),
                         str(row.not_told), str(row.not_told_called),
                         _share(row.not_told, row.not_told_share, row.not_told_interval),
                         "-" if math.isnan(row.difference) else f"{100 * row.difference:+.1f} points"]
                        for row in rows]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                      for i, (cell, width) in enumerate(zip(cells, widths))).rstrip() for cells in table]


def _share(n: int, share: float, interval: tuple[float, float]) -> str:
    if not n:
        return "-"
    return f"{100 * share:.1f} % ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})"
