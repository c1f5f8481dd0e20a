"""The terminal's view of a simulation and of a comparison of two rule sets."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streams.core.cost import Costs
from streams.core.policy import format_duration
from streams.core.rules import RuleSet
from streams.tools.compare import Comparison, CustomerChange
from streams.tools.simulate import SimulationReport

TEXT_SHOWN = 160  # characters of a message text in the sample of changed customers


def print_simulation(console: Console, report: SimulationReport, rules: RuleSet, title: str) -> None:
    table = Table(title=title)
    table.add_column("rule", no_wrap=True)
    for column in ("sent", "held back (by reason)", "SMS segments", "cost", "most to one customer"):
        table.add_column(column)
    for rule_id, tally in sorted(report.rules.items()):
        table.add_row(rule_id, _by_channel(tally.sent, tally.sent_by_channel), _reasons(tally.suppressed),
                      str(tally.sms_segments), _money(rules.cost, tally.cost), str(tally.most_to_one_customer))
    console.print(table)
    total = sum((t.cost for t in report.rules.values()), Decimal(0))
    console.print(f"cost: {_money(rules.cost, total)}" if rules.cost else
                  "cost: not configured (set defaults.cost in the rules file)", highlight=False)
    budget = rules.budget
    if budget:
        console.print(f"contact budget: {budget.count} per {format_duration(budget.per)}; most contacts to one "
                      f"customer in any such window: {report.most_contacts(budget.per, essential=False)} without "
                      f"and {report.most_contacts(budget.per)} with essential (outage) messages, which the budget "
                      "never holds back", highlight=False)
        for line in report.budget_use(budget):
            console.print(line, highlight=False)
    console.print(f"most messages to one customer, all rules and channels: "
                  f"{max(report.per_customer.values(), default=0)}", highlight=False)


def print_comparison(console: Console, comparison: Comparison) -> None:
    before, after = comparison.before_name, comparison.after_name
    table = Table(title=f"per rule: {before} -> {after}")
    table.add_column("rule", no_wrap=True)
    for column in ("sent", "held back", "SMS segments", "cost", ""):
        table.add_column(column)
    for change in comparison.rules:
        held = (sum(change.held[0].values()), sum(change.held[1].values()))
        table.add_row(change.rule, _pair(*change.sent), _pair(*held), _pair(*change.sms_segments),
                      _cost_pair(comparison.cost, change.cost), "changed" if change.changed else "")
    console.print(table)
    for change in comparison.rules:
        if change.held[0] != change.held[1]:
            reasons = sorted(set(change.held[0]) | set(change.held[1]))
            console.print(f"{change.rule} held back: " + ", ".join(
                f"{reason} {_pair(change.held[0][reason], change.held[1][reason])}" for reason in reasons),
                highlight=False, soft_wrap=True)
    sent, segments, cost = (comparison.totals[name] for name in ("sent", "sms_segments", "cost"))
    console.print(f"all rules: {_pair(*sent)} messages, {_pair(*segments)} SMS segments, "
                  f"cost {_cost_pair(comparison.cost, cost)}", highlight=False, soft_wrap=True)
    console.print(f"{comparison.customers_changed} customer(s) would get different messages"
                  + (f"; the first {len(comparison.sample)}:" if comparison.sample else ""), highlight=False)
    for change in comparison.sample:
        _print_customer(console, change, before, after)


def _print_customer(console: Console, change: CustomerChange, before: str, after: str) -> None:
    console.rule(f"customer {escape(change.customer_id)}")
    for name, messages, held in ((before, change.before, change.held_before), (after, change.after, change.held_after)):
        console.print(f"[bold]{escape(name)}[/bold]: {len(messages)} message(s)", highlight=False)
        for message in messages:
            text = " ".join(message.text.split())
            text = text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN - 1] + "…"
            console.print(f"  {message.created_at} {message.rule} by {message.channel}: {text}", markup=False,
                          highlight=False, soft_wrap=True)
        for rule, reason in held:
            console.print(f"  held back: {rule} ({reason})", markup=False, highlight=False)


def _by_channel(total: int, channels: Counter) -> str:
    parts = ", ".join(f"{count} {channel}" for channel, count in sorted(channels.items()))
    return f"{total} ({parts})" if parts else str(total)


def _reasons(held: Counter) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in held.most_common()) or "-"


def _pair(before: int, after: int) -> str:
    if before == after:
        return str(before)
    return f"{before} -> {after} ({after - before:+d})"


def _money(costs: Costs | None, amount: Decimal) -> str:
    return costs.shown(amount) if costs else "-"


def _cost_pair(costs: tuple[Costs | None, Costs | None], amounts: tuple[Decimal, Decimal]) -> str:
    shown = [_money(c, a) for c, a in zip(costs, amounts)]
    return shown[0] if shown[0] == shown[1] else f"{shown[0]} -> {shown[1]}"
