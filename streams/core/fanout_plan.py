"""Before a fan-out: how many messages on which channel and tier, how many SMS segments, what it costs, how long.

Twilio drops messages that wait in its queue for more than ten hours; long
before that, an outage notice that arrives two hours late is worse than none.
The plan is made from the same rules, directory and rendering as the fan-out
itself, so what it counts is what will be sent (waits and quiet hours aside).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from streams.core.cost import Costs
from streams.core.decider import Decider
from streams.core.restraint import ADDRESS_FIELD, reachable
from streams.core.rules import LOCALES, Rule, RuleSet
from streams.errors import TemplateError

CHANNELS = ("sms", "email")
TIERS = ("basic", "standard", "premium")
DEFAULT_TIER = "standard"


@dataclass
class FanoutPlan:
    outage_id: str
    partition: int | None
    by_tier: Counter[tuple[str, str]] = field(default_factory=Counter)  # (channel, tier) -> recipients
    sms_segments: int = 0
    unreachable: int = 0
    tier_disabled: int = 0  # customers a rule leaves out because their tier has it disabled
    rules: tuple[str, ...] = ()  # the rules that fan the outage out
    prices: Costs | None = None  # None: ``defaults.cost`` not set
    cost: dict[str, Decimal] = field(default_factory=dict)  # per channel; empty when prices is None

    @property
    def recipients(self) -> Counter[str]:
        """Recipients per channel, all tiers together."""
        totals: Counter[str] = Counter()
        for (channel, _), count in self.by_tier.items():
            totals[channel] += count
        return totals

    def tiers(self, channel: str) -> dict[str, int]:
        """Recipients on ``channel`` per tier, in tier order (tiers with none left out)."""
        counts = {tier: n for (ch, tier), n in self.by_tier.items() if ch == channel and n}
        return dict(sorted(counts.items(), key=lambda item: _tier_rank(item[0])))

    @property
    def cost_configured(self) -> bool:
        return self.prices is not None

    @property
    def total_cost(self) -> Decimal | None:
        """Every channel together; None when cost is not configured."""
        if self.prices is None:
            return None
        return sum(self.cost.values(), Decimal(0))

    def shown_cost(self, channel: str | None = None) -> str | None:
        """``EUR 12.34`` for ``channel`` (None: the total); None when cost is not configured."""
        if self.prices is None:
            return None
        amount = self.total_cost if channel is None else self.cost.get(channel, Decimal(0))
        return self.prices.shown(amount)

    def count(self, channel: str, tier: str, segments: int, customer: dict[str, Any]) -> None:
        """One message on ``channel`` to ``customer``, of ``segments`` segments when SMS."""
        self.by_tier[channel, tier] += 1
        if channel == "sms":
            self.sms_segments += segments
        if self.prices is not None:
            address = customer.get(ADDRESS_FIELD[channel])
            price = self.prices.of(channel, address, segments if channel == "sms" else None)
            self.cost[channel] = self.cost.get(channel, Decimal(0)) + price

    def seconds(self, sms_rate: float, email_rate: float) -> float:
        """The channels send side by side; the slower decides."""
        return max(self.sms_segments / sms_rate if sms_rate else 0.0,
                   self.recipients["email"] / email_rate if email_rate else 0.0)

    def describe(self, sms_rate: float, email_rate: float) -> str:
        where = "" if self.partition is None else f" (partition {self.partition})"
        recipients = self.recipients
        cost = f", cost about {self.shown_cost()}" if self.prices is not None else ""
        return (f"fan-out plan for outage {self.outage_id}{where}: {recipients['sms']} SMS "
                f"({self.sms_segments} segments), {recipients['email']} emails, {self.unreachable} unreachable"
                f"{cost}; "
                f"about {self.seconds(sms_rate, email_rate):.0f} s at {sms_rate:g} segments/s and {email_rate:g} emails/s")


def fanout_rules(rules: RuleSet, event_type: str) -> list[Rule]:
    """The rules that fan ``event_type`` out to an area; only ``outage.started`` has any."""
    return [r for r in rules.matching(event_type) if r.audience == "area"]


def plan_fanout(decider: Decider, event: dict[str, Any], partition: int | None = None) -> FanoutPlan | None:
    """The plan for an ``outage.started``, or None if no rule fans it out."""
    rules = fanout_rules(decider.rules, event["type"])
    if not rules:
        return None  # checked first: an event of another type has no outage_id
    data = event["data"]
    plan = FanoutPlan(data["outage_id"], partition, rules=tuple(r.id for r in rules), prices=decider.rules.cost)
    segments: dict[tuple[str, str], int] = {}
    for customer in decider.directory.affected(data.get("areas", ()), data.get("nodes", ()), partition):
        tier = customer.get("tier", DEFAULT_TIER)
        for rule in rules:
            tier_plan = rule.plan_for(tier)
            if not tier_plan.enabled:
                plan.tier_disabled += 1
                continue
            chosen, _ = reachable(tier_plan.channels, customer, tier_plan.channel_mode,
                                  decider.preferences.get(customer["id"]), rule)
            if not chosen:
                plan.unreachable += 1
            for channel in chosen:
                copy_segments = 0
                if channel == "sms":
                    locale = customer.get("locale") if customer.get("locale") in LOCALES else decider.rules.default_locale
                    key = (locale, tier_plan.template)
                    if key not in segments:
                        segments[key] = _segments(decider, locale, tier_plan.template, event, customer)
                    copy_segments = segments[key]
                plan.count(channel, tier, copy_segments, customer)
    return plan


def _tier_rank(tier: str) -> int:
    return TIERS.index(tier) if tier in TIERS else len(TIERS)


def _segments(decider: Decider, locale: str, template: str, event: dict[str, Any], customer) -> int:
    """SMS segments of one copy; a copy that does not render counts one (the decision records why)."""
    try:
        rendered = decider.renderer.render("sms", locale, template, event=event, customer=customer,
                                           extra={"outage": event["data"]})
    except TemplateError:
        return 1
    return rendered.segments.segments if rendered.segments else 1
