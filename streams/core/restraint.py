"""Restraint: whether a message that is due may go out now, one concern per step.

Each step reads (and narrows) an ``Attempt`` and returns None to go on, or a
verdict that ends the decision: a ``Suppression`` to report, ``STOP`` (nothing
to report), or a ``Defer`` to a later moment. ``restrain`` runs ``STEPS`` in
order; the Decider renders and records what gets through all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from streams.core.clock import event_time
from streams.core.consent import Preferences
from streams.core.directory import Customer
from streams.core.outcomes import Suppression, notification_id
from streams.core.policy import Budget
from streams.core.rules import Rule, TierPlan
from streams.core.state import CustomerState, Told

ADDRESS_FIELD = {"sms": "phone", "email": "email"}
_at = datetime.fromisoformat


def reachable(channels, customer: Customer, mode: str, preferences: Preferences,
              rule: Rule) -> tuple[list[str], list[tuple[str, str]]]:
    """The channels to use for this customer for ``rule``, and why the others cannot be."""
    chosen, refusals = [], []
    for channel in channels:
        withheld = preferences.withheld(channel, rule.category, rule.id)
        if withheld is not None:
            refusals.append((channel, withheld))
        elif not customer.get(ADDRESS_FIELD[channel]):
            refusals.append((channel, "no_contact_address"))
        else:
            chosen.append(channel)
            if mode == "first":
                break
    return chosen, refusals


@dataclass(frozen=True)
class Trigger:
    """One reason to message one customer: the rule, the key, the (latest) event and all events folded in."""

    rule: Rule
    key: str
    event: dict[str, Any]
    event_ids: tuple[str, ...] | list[str]
    occurrence: str
    from_pending: bool = False
    outage_key: str | None = None
    fallback_from: str | None = None  # the channel that failed for good; send on ``only`` instead
    only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Defer:
    """Not now: hold the message until ``until`` (the Decider schedules it)."""

    until: datetime
    reason: str
    detail: str


class _Stop:
    def __repr__(self) -> str:
        return "STOP"


STOP = _Stop()  # the decision ends with nothing to report
Verdict = Suppression | Defer | _Stop


@dataclass
class Attempt:
    """One trigger on its way to one customer, as the steps see it; they fill in the later fields."""

    trigger: Trigger
    customer: Customer
    plan: TierPlan
    state: CustomerState
    now: datetime
    stamp: str
    preferences: Preferences
    budget: Budget | None = None
    channels: list[str] = field(default_factory=list)
    outage_id: str | None = None
    told: Told | None = None  # what the customer was told about this outage
    chosen: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # notification id by chosen channel
    changed: bool = False  # a step changed the state: store it even though nothing is sent
    fact: str | None = None  # the fingerprint of the fact the message tells, recorded once it is sent
    _sent_at: list[tuple[datetime, str]] | None = None

    @property
    def rule(self) -> Rule:
        return self.trigger.rule

    @property
    def event(self) -> dict[str, Any]:
        return self.trigger.event

    @property
    def pending_id(self) -> str:
        return f"{self.rule.id}|{self.trigger.key}"

    def sent_at(self) -> list[tuple[datetime, str]]:
        """Past contacts as (moment, rule); a fallback is the same contact again, so it counts none."""
        if self._sent_at is None:
            self._sent_at = [] if self.trigger.fallback_from else [(_at(s.at), s.rule) for s in self.state.sent]
        return self._sent_at

    def suppressed(self, reason: str, detail: str | None = None, channel: str | None = None) -> Suppression:
        return Suppression(self.rule.id, self.customer["id"], reason, self.event["id"], self.stamp,
                           channel=channel, detail=detail, key=self.trigger.key)


def outage_told(a: Attempt) -> Verdict | None:
    """Outages: tell about one at a time, and update or clear only what the customer was told."""
    event, outages = a.event, a.state.outages
    a.outage_id = event["data"].get("outage_id") if event["type"].startswith("outage.") else None
    if not a.outage_id:
        return None
    a.told = outages.get(a.outage_id)
    if event["type"] == "outage.started":
        other = next((oid for oid in outages if oid != a.outage_id), None)
        if other is not None:  # one message about an outage covers any that overlaps it
            outages[a.outage_id] = Told(list(outages[other].channels), outages[other].expected_end, via=other)
            a.changed = True
            return a.suppressed("coalesced", f"already told about outage {other}")
        return None
    told, resolved = a.told, event["type"] == "outage.resolved"
    if told is None:
        return STOP  # never told about this outage: an update or all-clear would be news to them
    if told.via:
        return a.suppressed("superseded", f"covered by the message about outage {told.via}") if resolved else STOP
    if resolved:
        still = [oid for oid, o in outages.items() if oid != a.outage_id and o.via == a.outage_id]
        if still:
            for oid in still:  # the outage they still have is now the one they were told about
                outages[oid].via = None
            outages.pop(a.outage_id, None)
            a.changed = True
            return a.suppressed("superseded", f"still affected by outage {still[0]}")
    # Updates and the all-clear go where the first message went.
    a.channels = [c for c in told.channels if c in ("sms", "email")] or a.channels
    return None


def min_change(a: Attempt) -> Verdict | None:
    """An outage update only when the expected end moves by more than ``min_change``."""
    rule = a.rule
    if a.told is None or not rule.min_change or a.event["type"] != "outage.updated":
        return None
    before, after = a.told.expected_end, a.event["data"].get("expected_end")
    if before and after and abs(_at(after) - _at(before)) <= rule.min_change:
        return a.suppressed("coalesced", f"expected end moved by {abs(_at(after) - _at(before))}, "
                                         f"not more than {rule.min_change}")
    return None


def choose_channels(a: Attempt) -> Verdict | None:
    """The channels preferences and addresses allow; a fallback tries only the ones the failure left."""
    trigger = a.trigger
    if trigger.fallback_from:
        a.channels = list(trigger.only)
    # Whoever was told about an outage hears the rest on every channel they heard it on.
    mode = "first" if trigger.fallback_from else a.plan.channel_mode if a.told is None else "all"
    a.chosen, refusals = reachable(a.channels, a.customer, mode, a.preferences, a.rule)
    if a.chosen:
        return None
    channel, reason = refusals[0]
    return a.suppressed(reason, ", ".join(f"{c}: {r}" for c, r in refusals), channel)


def duplicate(a: Attempt) -> Verdict | None:
    """An occurrence already sent on any channel is not sent again (a re-delivery, a replay)."""
    trigger, customer_id = a.trigger, a.customer["id"]
    a.ids = {c: notification_id(a.rule.id, trigger.key, customer_id, c, trigger.occurrence) for c in a.chosen}
    seen = [i for i in a.ids.values() if i in a.state.sent_ids]
    return a.suppressed("duplicate", "already sent: " + ", ".join(seen)) if seen else _same_fact(a)


def _same_fact(a: Attempt) -> Verdict | None:
    """Nor is the same fact under a new event id (republished, re-sent): that is not news.

    Customer rules only (``Rule.fact_of``); a fallback is the same message again, so it is not checked.
    """
    if a.trigger.fallback_from:
        return None
    a.fact = a.rule.fact_of(a.event, a.trigger.key)
    earlier = a.state.facts.get(a.fact) if a.fact else None
    if earlier is None or abs(event_time(a.event) - _at(earlier.at)) >= a.rule.dedupe_window:
        return None
    return a.suppressed("duplicate", f"same fact as event {earlier.event_id} of {earlier.at}, already sent")


def min_interval(a: Attempt) -> Verdict | None:
    """Not twice for the same rule and key within ``min_interval``: the later one waits."""
    rule = a.rule
    if not rule.min_interval or a.trigger.fallback_from:
        return None
    last = a.state.last.get(a.pending_id)
    if last and _at(last) + rule.min_interval > a.now:
        return Defer(_at(last) + rule.min_interval, "coalesced", "within the minimum interval")
    return None


def quiet_hours(a: Attempt) -> Verdict | None:
    """Nothing but urgent messages in the customer's night: deferred to its end."""
    rule = a.rule
    if rule.quiet_hours and not rule.urgent:
        end = rule.quiet_hours.deferral(a.now, a.customer.get("timezone"))
        if end is not None:
            return Defer(end, "quiet_hours", f"deferred to {end.isoformat()}")
    return None


def rule_cap(a: Attempt) -> Verdict | None:
    cap = a.rule.cap
    if cap and cap.reached((at for at, r in a.sent_at() if r == a.rule.id), a.now):
        return a.suppressed("cap_exceeded", f"rule cap of {cap.count} per {cap.per}")
    return None


BUDGET_DETAIL = "contact budget of"  # how a suppression by the budget (not a rule cap) is told apart


def contact_budget(a: Attempt) -> Verdict | None:
    """All rules together reach a customer at most so often; lower priorities leave the reserve alone.

    An essential message is never held back by it (it still counts).
    """
    budget, priority = a.budget, a.rule.priority
    if not budget or a.rule.essential or not budget.reached_for(priority, (at for at, _ in a.sent_at()), a.now):
        return None
    detail = f"{BUDGET_DETAIL} {budget.count} per {budget.per}"
    if budget.allowance(priority) < budget.count:
        assert budget.reserve is not None  # a smaller allowance comes only from a reserve
        detail += f"; the rest ({budget.reserve.count}) is reserved for priority >= {budget.reserve.priority}"
    return a.suppressed("cap_exceeded", detail)


STEPS: tuple[Callable[[Attempt], Verdict | None], ...] = (
    outage_told, min_change, choose_channels, duplicate, min_interval, quiet_hours, rule_cap, contact_budget)


def restrain(a: Attempt) -> Verdict | None:
    """The first step's verdict, or None: send."""
    for step in STEPS:
        verdict = step(a)
        if verdict is not None:
            return verdict
    return None
