"""Two rule sets over the same input: what each sends, holds back and costs, per rule, and who notices.

``forewarn simulate --against OTHER`` runs the simulator twice on the same customers and events,
once with each rules file, and compares the reports: per rule, messages sent, held back by reason,
SMS segments and cost under both; and a sample of customers whose messages differ, with the texts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from streams.core.cost import Costs
from streams.tools.simulate import Sent, SimulationReport

SAMPLE_CUSTOMERS = 5


@dataclass(frozen=True)
class RuleChange:
    """One rule under both rule sets; a rule only one of them has counts zero in the other."""

    rule: str
    sent: tuple[int, int]
    held: tuple[Counter, Counter]
    sms_segments: tuple[int, int]
    cost: tuple[Decimal, Decimal]

    @property
    def changed(self) -> bool:
        return self.sent[0] != self.sent[1] or self.held[0] != self.held[1] or self.sms_segments[0] != self.sms_segments[1]

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "sent": list(self.sent), "held_back": [dict(h) for h in self.held],
                "sms_segments": list(self.sms_segments), "cost": [str(c) for c in self.cost]}


@dataclass(frozen=True)
class CustomerChange:
    customer_id: str
    before: tuple[Sent, ...]
    after: tuple[Sent, ...]
    held_before: tuple[tuple[str, str], ...] = ()
    held_after: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def shown(messages: tuple[Sent, ...]) -> list[dict[str, str]]:
            return [{"at": m.created_at, "rule": m.rule, "channel": m.channel, "text": m.text} for m in messages]
        return {"customer": self.customer_id, "before": shown(self.before), "after": shown(self.after),
                "held_back_before": [list(h) for h in self.held_before],
                "held_back_after": [list(h) for h in self.held_after]}


@dataclass(frozen=True)
class Comparison:
    before_name: str
    after_name: str
    rules: list[RuleChange]
    customers_changed: int
    sample: list[CustomerChange]
    cost: tuple[Costs | None, Costs | None]
    totals: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before_name, "after": self.after_name,
                "rules": [r.to_dict() for r in self.rules],
                "totals": {name: [str(v) for v in pair] for name, pair in self.totals.items()},
                "customers_changed": self.customers_changed, "sample": [c.to_dict() for c in self.sample]}


def compare(before: SimulationReport, after: SimulationReport, names: tuple[str, str],
            costs: tuple[Costs | None, Costs | None], sample: int = SAMPLE_CUSTOMERS) -> Comparison:
    """The differences between two simulations of the same input (both run with ``keep_messages``)."""
    rules = [_rule_change(rule, before, after) for rule in sorted(set(before.rules) | set(after.rules))]
    changed = sorted(customer for customer in set(before.messages) | set(after.messages)
                     if sorted(before.messages.get(customer, ())) != sorted(after.messages.get(customer, ())))
    picked = [CustomerChange(customer, tuple(sorted(before.messages.get(customer, ()))),
                             tuple(sorted(after.messages.get(customer, ()))),
                             tuple(before.held.get(customer, ())), tuple(after.held.get(customer, ())))
              for customer in changed[:sample]]
    totals = {"sent": (sum(r.sent[0] for r in rules), sum(r.sent[1] for r in rules)),
              "sms_segments": (sum(r.sms_segments[0] for r in rules), sum(r.sms_segments[1] for r in rules)),
              "cost": (sum((r.cost[0] for r in rules), Decimal(0)), sum((r.cost[1] for r in rules), Decimal(0)))}
    return Comparison(names[0], names[1], rules, len(changed), picked, costs, totals)


def _rule_change(rule: str, before: SimulationReport, after: SimulationReport) -> RuleChange:
    old, new = before.rules.get(rule), after.rules.get(rule)

    def pair(name: str, empty: Any) -> tuple[Any, Any]:
        return (getattr(old, name) if old else empty, getattr(new, name) if new else empty)

    return RuleChange(rule, pair("sent", 0), pair("suppressed", Counter()), pair("sms_segments", 0),
                      pair("cost", Decimal(0)))
