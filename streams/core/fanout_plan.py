"""Before a fan-out: how many messages on which channel, how many SMS segments, how long it will take.

Twilio drops messages that wait in its queue for more than ten hours; long
before that, an outage notice that arrives two hours late is worse than none.
The plan is made from the same rules, directory and rendering as the fan-out
itself, so what it counts is what will be sent (waits and quiet hours aside).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.core.decider import Decider
from streams.core.restraint import reachable
from streams.core.rules import LOCALES
from streams.errors import TemplateError


@dataclass
class FanoutPlan:
    outage_id: str
    partition: int | None
    recipients: Counter = field(default_factory=Counter)
    sms_segments: int = 0
    unreachable: int = 0

    def seconds(self, sms_rate: float, email_rate: float) -> float:
        """The channels send side by side; the slower decides."""
        return max(self.sms_segments / sms_rate if sms_rate else 0.0,
                   self.recipients["email"] / email_rate if email_rate else 0.0)

    def describe(self, sms_rate: float, email_rate: float) -> str:
        where = "" if self.partition is None else f" (partition {self.partition})"
        return (f"fan-out plan for outage {self.outage_id}{where}: {self.recipients['sms']} SMS "
                f"({self.sms_segments} segments), {self.recipients['email']} emails, {self.unreachable} unreachable; "
                f"about {self.seconds(sms_rate, email_rate):.0f} s at {sms_rate:g} segments/s and {email_rate:g} emails/s")


def plan_fanout(decider: Decider, event: dict[str, Any], partition: int | None = None) -> FanoutPlan | None:
    """The plan for an ``outage.started``, or None if no rule fans it out."""
    data = event["data"]
    plan = FanoutPlan(data["outage_id"], partition)
    rules = [r for r in decider.rules.matching(event["type"]) if r.audience != "customer"]
    if not rules:
        return None
    segments: dict[tuple[str, str], int] = {}
    for customer in decider.directory.affected(data.get("areas", ()), data.get("nodes", ()), partition):
        for rule in rules:
            tier_plan = rule.plan_for(customer.get("tier", "standard"))
            if not tier_plan.enabled:
                continue
            chosen, _ = reachable(tier_plan.channels, customer, tier_plan.channel_mode,
                                  decider.preferences.get(customer["id"]), rule)
            if not chosen:
                plan.unreachable += 1
            for channel in chosen:
                plan.recipients[channel] += 1
                if channel == "sms":
                    locale = customer.get("locale") if customer.get("locale") in LOCALES else decider.rules.default_locale
                    key = (locale, tier_plan.template)
                    if key not in segments:
                        segments[key] = _segments(decider, locale, tier_plan.template, event, customer)
                    plan.sms_segments += segments[key]
    return plan


def _segments(decider: Decider, locale: str, template: str, event: dict[str, Any], customer) -> int:
    """SMS segments of one copy; a copy that does not render counts one (the decision records why)."""
    try:
        rendered = decider.renderer.render("sms", locale, template, event=event, customer=customer,
                                           extra={"outage": event["data"]})
    except TemplateError:
        return 1
    return rendered.segments.segments if rendered.segments else 1
