"""What one rule would do for one event and one customer at a given moment, and why.

The same decision core as the worker and the simulator, on event time: the customer is made known
as a CRM upsert would, earlier events (``--history``) are decided first so that caps and the budget
see them, then the event at its moment, then every pending message at its due time. What comes out
for the rule is explained step by step: the tier's plan, the condition, the wait, quiet hours, and
the texts with their SMS segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

import orjson

from streams.core.config import CoreConfig
from streams.core.outcomes import Notification, Suppression
from streams.core.policy import Budget, format_duration, spoken
from streams.core.render import zone
from streams.core.rules import LOCALES, Rule, TierPlan
from streams.core.sms_lint import show_forced
from streams.core.events import parse_event
from streams.errors import ConfigError, EventError
from streams.tools.customer_files import upsert_event
from streams.tools.simulate import EPOCH, SimulationRun


@dataclass
class Preview:
    rule: Rule
    customer: dict[str, Any]
    tier: str
    plan: TierPlan
    locale: str
    at: datetime
    condition: bool | None  # None: the rule has no condition
    event: dict[str, Any] = field(default_factory=dict)
    for_customer: bool = False  # the event's customer_id was set to this customer's
    outcomes: list[Notification | Suppression] = field(default_factory=list)
    earlier: int = 0  # messages of this rule to this customer from the history
    contacts: int = 0  # messages of any rule to this customer from the history
    budget: Budget | None = None
    forced: dict[str, str | None] = field(default_factory=dict)  # SMS id: why UCS-2
    consent: dict[str, str | None] = field(default_factory=dict)  # channel: None (may hear it) or why not

    @property
    def extra(self) -> dict[str, Any] | None:
        """What outage templates get besides event and customer."""
        return {"outage": self.event["data"]} if self.event.get("type", "").startswith("outage.") else None

    def lines(self) -> list[str]:
        """The story, in order: plan, condition, what happened when, held back or sent."""
        lines = [f"rule {self.rule.id} ({self.rule.category}) on {', '.join(self.rule.events)}, "
                 f"customer {self.customer.get('id')} (tier {self.tier}, locale {self.locale}), "
                 f"event at {self._local(self.at)}"]
        if self.for_customer:
            lines.append(f"the event is taken as this customer's (its customer_id set to {self.customer.get('id')})")
        lines.append(self._plan_line())
        if self.condition is not None:
            lines.append(f"condition {self.rule.when!r} is {'true' if self.condition else 'false'}")
        needs = "marketing consent" if self.rule.category == "marketing" else "no opt-out"
        lines.append(f"{self.rule.category}: needs {needs} for the channel; " + ", ".join(
            f"{channel} {'yes' if why is None else f'no ({why})'}" for channel, why in self.consent.items()))
        lines += self._restraint_lines()
        if not self.outcomes:
            lines.append(self._why_nothing())
        for outcome in self.outcomes:
            lines.append(self._outcome_line(outcome))
        return lines

    def _plan_line(self) -> str:
        if not self.plan.enabled:
            return f"tier {self.tier}: this rule is off for the tier (tiers.{self.tier}.enabled: false)"
        wait = (f", waits {spoken(self.plan.wait.total_seconds())}" if self.plan.wait else
                f", coalesces {spoken(self.rule.coalesce.total_seconds())}" if self.rule.coalesce else "")
        return (f"tier {self.tier}: channels {', '.join(self.plan.channels)} ({self.plan.channel_mode}), "
                f"template {self.plan.template}{wait}")

    def _restraint_lines(self) -> list[str]:
        rule, lines = self.rule, []
        quiet = rule.quiet_hours
        if rule.urgent or quiet is None:
            lines.append("quiet hours: none (urgent)" if rule.urgent else "quiet hours: none")
        else:
            lines.append(f"quiet hours: {quiet.start:%H:%M} to {quiet.end:%H:%M} in the customer's time zone "
                         f"({self.customer.get('timezone') or 'Europe/Amsterdam'})")
        if rule.cap:
            lines.append(f"cap: {rule.cap.count} per {format_duration(rule.cap.per)}; "
                         f"{self.earlier} of this rule's messages to this customer in the history given")
        if self.budget is not None:
            essential = " (essential: counted, never held back)" if rule.essential else ""
            lines.append(f"contact budget: {self.budget.count} per {format_duration(self.budget.per)} for all "
                         f"rules{essential}; {self.contacts} message(s) to this customer in the history given")
        return lines

    def _why_nothing(self) -> str:
        if not self.plan.enabled:
            return "nothing is sent: the rule is off for this tier"
        if self.condition is False:
            return "nothing is sent: the condition is false"
        if self.rule.audience != "customer":
            return "nothing is sent: the customer is not in the outage's areas or nodes (or was not told before)"
        return "nothing is sent: the event does not concern this customer"

    def _outcome_line(self, outcome: Notification | Suppression) -> str:
        if isinstance(outcome, Suppression):
            if outcome.reason == "quiet_hours" and outcome.detail and outcome.detail.startswith("deferred to "):
                until = _parse(outcome.detail.removeprefix("deferred to "))
                return f"at {self._local(_parse(outcome.at))} it is quiet hours: held until {self._local(until)}"
            detail = f": {outcome.detail}" if outcome.detail else ""
            return f"held back at {self._local(_parse(outcome.at))}: {outcome.reason}{detail}"
        sent = _parse(outcome.created_at)
        return f"sent by {outcome.channel} to {outcome.to} at {self._local(sent)}{self._why_then(sent)}"

    def _why_then(self, sent: datetime) -> str:
        """Why at that moment: at once, after the wait, then quiet hours or the interval the rule keeps."""
        waited = (sent - self.at).total_seconds()
        wait = (self.plan.wait or self.rule.coalesce or timedelta(0)).total_seconds()
        verb = "waits" if self.plan.wait else "coalesces"
        if waited <= 1:
            return " (at once)"
        if abs(waited - wait) <= 1:
            return f" ({verb} {spoken(wait)})"
        before = f"{verb} {spoken(wait)}, then " if wait else ""
        deferred = any(isinstance(o, Suppression) and o.reason == "quiet_hours" for o in self.outcomes)
        why = "quiet hours" if deferred else "the rule's min_interval or a cap's window"
        return f" ({before}{why}: {spoken(waited)} after the event)"

    def _local(self, moment: datetime) -> str:
        local = moment.astimezone(zone(self.customer.get("timezone")))
        return local.strftime("%H:%M %A %d %B %Y (%Z)")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def preview(config: CoreConfig, rule_id: str, event: dict[str, Any], customer: dict[str, Any],
            at: datetime | None = None, history: Iterable[bytes] = ()) -> Preview:
    """Decide ``event`` (moved to ``at`` if given) for ``customer`` after ``history``; the outcomes of ``rule_id``."""
    try:
        rule = config.rules.get(rule_id)
    except KeyError:
        raise ConfigError(f"no rule '{rule_id}' in {config.rules.file}") from None
    record = dict(customer)
    record.setdefault("customer_id", record.pop("id", "preview"))
    event = dict(event)
    if at is not None:
        event["occurred_at"] = at.isoformat()
    moved = rule.audience == "customer" and event.get("customer_id") != record["customer_id"]
    if moved:  # the event as it would be for this customer
        event["customer_id"] = record["customer_id"]
    moment = _parse(event["occurred_at"])
    tier = record.get("tier", "standard")
    shown = {**record, "id": record["customer_id"]}
    result = Preview(rule, shown, tier, rule.plan_for(tier), _locale(config, record), moment,
                     _condition(rule, event, shown), event, for_customer=moved)
    run = _Capture(config)
    run.feed(orjson.dumps(upsert_event(record, EPOCH)), EPOCH_FEED)
    for raw in history:
        run.feed(raw, "history")
    run.feed(orjson.dumps(event), "event")
    run.take(run.timeline.flush())
    mine = [o for o in run.captured if o.customer_id == record["customer_id"]]
    of_event = [o for o in mine if _caused_by(o, event["id"])]
    sent_before = [o for o in mine if isinstance(o, Notification) and not _caused_by(o, event["id"])]
    result.earlier = sum(o.rule == rule.id for o in sent_before)
    result.contacts = len(sent_before)
    result.budget = config.rules.budget
    result.outcomes = [o for o in of_event if o.rule == rule.id]
    preferences = run.decider.preferences.get(record["customer_id"])
    result.consent = {channel: preferences.withheld(channel, rule.category, rule.id)
                      for channel in result.plan.channels}
    result.forced = {o.id: show_forced(config.renderer, o.locale, o.template or rule.template, o.body, "given")
                     for o in result.outcomes if isinstance(o, Notification) and o.channel == "sms"}
    return result


EPOCH_FEED = "customer"


def _caused_by(outcome: Notification | Suppression, event_id: str) -> bool:
    if isinstance(outcome, Notification):
        return event_id in outcome.event_ids
    return outcome.event_id == event_id


def _locale(config: CoreConfig, record: dict[str, Any]) -> str:
    return record.get("locale") if record.get("locale") in LOCALES else config.rules.default_locale


def _condition(rule: Rule, event: dict[str, Any], customer: dict[str, Any]) -> bool | None:
    if rule.condition is None:
        return None
    try:
        return bool(rule.condition(event=event, customer=customer))
    except Exception:  # noqa: BLE001 - the decider records it as condition_error, shown as held back
        return False


class _Capture(SimulationRun):
    """A simulation that keeps its outcomes instead of writing them."""

    def __init__(self, config: CoreConfig):
        super().__init__(config, None, keep_messages=False)
        self.captured: list[Notification | Suppression] = []

    def feed(self, raw: bytes, origin: str) -> None:
        try:
            event = parse_event(raw, self.config.schemas)
        except EventError as exc:
            raise EventError(f"the {origin} record is not a valid event: {exc}") from None
        if origin == EPOCH_FEED:
            list(self.decider.handle(event, EPOCH))
        else:
            self.decide(event)

    def count(self, outcomes) -> None:
        self.captured.extend(outcomes)


def read_history(path: Path | None) -> list[bytes]:
    if path is None:
        return []
    return [line.rstrip(b"\r\n") for line in path.read_bytes().splitlines() if line.strip()]
