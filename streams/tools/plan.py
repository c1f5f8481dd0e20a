"""The fan-out plan of an outage before it is real: who would hear it, on what, at what cost, how long.

Ops run it on a draft ``outage.started`` and a customer list before they publish
the outage, to see whether the provider rate gets the news out in time. It is
the worker's own plan (``streams.core.fanout_plan``) over a Decider loaded the
way the simulator loads one, for the whole account: every partition at the
full ``FOREWARN_SMS_RATE`` and ``FOREWARN_EMAIL_RATE``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from streams.core.policy import spoken as duration
from streams.core.config import CoreConfig, load_config
from streams.core.decider import Decider
from streams.core.directory import CustomerDirectory
from streams.core.events import BOUNDS, parse_event
from streams.core.fanout_plan import CHANNELS, FanoutPlan, fanout_rules, plan_fanout
from streams.errors import ConfigError, EventError
from streams.settings import Settings
from streams.tools.customer_files import read_customer_rows, upsert_event

EPOCH = BOUNDS.earliest  # customer records older than any outage, as the simulator loads them
SHOWN_REJECTIONS = 5  # the first few bad rows are named; the rest only counted
CHANNEL_NAMES = {"sms": "SMS", "email": "Email"}
RATE_SETTINGS = {"sms": "FOREWARN_SMS_RATE", "email": "FOREWARN_EMAIL_RATE"}
RATE_UNITS = {"sms": "segments/s", "email": "emails/s"}


@dataclass(frozen=True)
class Rejection:
    """A customer row that was not loaded, and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Rejections:
    count: int = 0
    first: tuple[Rejection, ...] = ()  # up to SHOWN_REJECTIONS


@dataclass(frozen=True)
class OutagePlan:
    fanout: FanoutPlan
    event: dict[str, Any]
    rules_file: str
    sms_rate: float  # segments per second, the whole account
    email_rate: float  # emails per second
    fanout_limit: float  # seconds
    customers: int = 0  # customer records loaded
    rejected: Rejections = field(default_factory=Rejections)

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules that fan the outage out."""
        return self.fanout.rules

    def channel_seconds(self, channel: str) -> float:
        """How long ``channel`` alone takes at its rate (0 when its rate is 0: not limited here)."""
        if channel == "sms":
            return self.fanout.sms_segments / self.sms_rate if self.sms_rate else 0.0
        return self.fanout.recipients[channel] / self.email_rate if self.email_rate else 0.0

    @property
    def seconds(self) -> float:
        return self.fanout.seconds(self.sms_rate, self.email_rate)

    @property
    def over_limit(self) -> bool:
        return self.seconds > self.fanout_limit

    @property
    def bottleneck(self) -> str:
        """The channel that decides how long the fan-out takes."""
        return max(CHANNELS, key=self.channel_seconds)

    def lines(self) -> list[str]:
        """The plan as plain text for the terminal, one fact a line."""
        plan, data = self.fanout, self.event["data"]
        areas = ", ".join(data.get("areas", ())) or "none"
        nodes = f", nodes {', '.join(data['nodes'])}" if data.get("nodes") else ""
        lines = [f"outage {plan.outage_id} ({data.get('service', '?')}, areas {areas}{nodes}), "
                 f"fanned out by {_plural(len(self.rules), 'rule')} {', '.join(self.rules)}",
                 f"customers loaded: {self.customers}" + (f", {_plural(self.rejected.count, 'row')} rejected"
                                                          if self.rejected.count else "")]
        lines += [f"  rejected {rejection}" for rejection in self.rejected.first]
        for channel in CHANNELS:
            tiers = ", ".join(f"{tier} {n}" for tier, n in plan.tiers(channel).items())
            segments = f", {_plural(plan.sms_segments, 'segment')}" if channel == "sms" else ""
            lines.append(f"{CHANNEL_NAMES[channel]}: {_plural(plan.recipients[channel], 'recipient')}"
                         f"{f' ({tiers})' if tiers else ''}{segments}")
        lines.append(f"unreachable: {plan.unreachable} (no channel they may be told on)")
        if plan.tier_disabled:
            lines.append(f"not told, their tier has the rule disabled: {plan.tier_disabled}")
        lines.append(self._cost_line())
        lines.append(f"time: {about(self.seconds)} at {self.sms_rate:g} SMS segments/s and {self.email_rate:g} "
                     f"emails/s (SMS {about(self.channel_seconds('sms'))}, email "
                     f"{about(self.channel_seconds('email'))}); limit {duration(self.fanout_limit)}")
        if self.over_limit:
            lines.append(self._warning())
        return lines

    def _cost_line(self) -> str:
        plan = self.fanout
        if not plan.cost_configured:
            return f"cost: not configured (set defaults.cost in {self.rules_file})"
        return f"cost: {_money(plan)} (SMS {_money(plan, 'sms')}, email {_money(plan, 'email')})"

    def _warning(self) -> str:
        channel = self.bottleneck
        rate = self.sms_rate if channel == "sms" else self.email_rate
        return (f"WARNING: the fan-out needs {about(self.seconds)}, more than the limit of "
                f"{duration(self.fanout_limit)} (FOREWARN_FANOUT_LIMIT); raise {RATE_SETTINGS[channel]} "
                f"(now {rate:g} {RATE_UNITS[channel]}) with the provider, or narrow the rule "
                f"{', '.join(self.rules)} (fewer areas, tiers or channels)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``--json``); money as decimal strings, never floats."""
        plan = self.fanout
        return {
            "outage_id": plan.outage_id,
            "rules": list(self.rules),
            "customers": self.customers,
            "rejected": {"count": self.rejected.count,
                         "first": [{"file": r.file, "line": r.line, "reason": r.reason} for r in self.rejected.first]},
            "recipients": {channel: {"total": plan.recipients[channel], "by_tier": plan.tiers(channel)}
                           for channel in CHANNELS},
            "sms_segments": plan.sms_segments,
            "unreachable": plan.unreachable,
            "tier_disabled": plan.tier_disabled,
            "cost": None if plan.prices is None else {
                "currency": plan.prices.currency, "total": str(plan.total_cost),
                **{channel: str(plan.cost.get(channel, 0)) for channel in CHANNELS}},
            "rates": {"sms_segments_per_second": self.sms_rate, "emails_per_second": self.email_rate},
            "seconds": {"total": self.seconds, **{channel: self.channel_seconds(channel) for channel in CHANNELS}},
            "fanout_limit": self.fanout_limit,
            "over_limit": self.over_limit,
        }


def plan_outage(config: CoreConfig, event: dict[str, Any], customers: Iterable[dict[str, Any]],
                settings: Settings) -> OutagePlan:
    """The plan of ``event`` (a parsed ``outage.started``) for ``customers`` (``customer.upserted`` events).

    Raises ConfigError when no rule fans the event out.
    """
    _check_fans_out(config, event)
    decider = Decider(config.rules, config.renderer, CustomerDirectory(), links=config.links)
    loaded = 0
    for customer in customers:
        if customer.get("type") != "customer.upserted":
            raise EventError(f"a customer must be a customer.upserted event, got {customer.get('type')!r}")
        for _ in decider.handle(customer, EPOCH):
            pass  # an upsert decides nothing; it fills the directory and the consents
        loaded += 1
    fanout = plan_fanout(decider, event, None)
    assert fanout is not None  # _check_fans_out said a rule does
    return OutagePlan(fanout, event, config.rules.file, settings.sms_rate, settings.email_rate,
                      settings.fanout_limit, loaded)


def plan_outage_files(settings: Settings, outage_file: Path, customers_file: Path,
                      config: CoreConfig | None = None) -> OutagePlan:
    """``plan_outage`` over an ``outage.started`` JSON file and a customers file (JSON Lines or CSV).

    A customer row that does not hold up is counted and named, not fatal; an outage file that does not
    raises EventError naming the file.
    """
    config = config or load_config(settings)
    try:
        event = parse_event(outage_file.read_bytes(), config.schemas)
    except EventError as exc:
        raise EventError(f"{outage_file}: {exc}") from None
    _check_fans_out(config, event)  # before reading what may be a million customers
    tally = _RejectionTally(str(customers_file))
    plan = plan_outage(config, event, _customer_events(config, customers_file, tally), settings)
    return replace(plan, rejected=tally.result())  # known once plan_outage has read every row


def _check_fans_out(config: CoreConfig, event: dict[str, Any]) -> None:
    if event.get("type") != "outage.started":
        raise ConfigError(f"only an outage.started event fans out, not {event.get('type')!r}: "
                          f"there is nothing to plan")
    if not fanout_rules(config.rules, event["type"]):
        raise ConfigError(f"no enabled rule with audience 'area' on outage.started in {config.rules.file}: "
                          f"this outage would reach nobody")


class _RejectionTally:
    """Counts the bad customer rows and keeps the first few."""

    def __init__(self, file: str):
        self.file = file
        self.count = 0
        self.first: list[Rejection] = []

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.first) < SHOWN_REJECTIONS:
            self.first.append(Rejection(self.file, line, reason))

    def result(self) -> Rejections:
        return Rejections(self.count, tuple(self.first))


def _customer_events(config: CoreConfig, path: Path, tally: _RejectionTally):
    """Each row of ``path`` that holds up as a validated ``customer.upserted`` event, as the simulator reads them."""
    for line, record, reason in read_customer_rows(path):
        try:
            if reason:
                raise EventError(reason)
            yield parse_event(orjson.dumps(upsert_event(record, EPOCH, line)), config.schemas)
        except EventError as exc:
            tally.add(line, str(exc))


def _money(plan: FanoutPlan, channel: str | None = None) -> str:
    """The amount to the cent; a cost below one cent is not shown as nothing."""
    assert plan.prices is not None and plan.total_cost is not None
    amount = plan.total_cost if channel is None else plan.cost.get(channel, Decimal(0))
    if 0 < amount < Decimal("0.005"):
        return f"under {plan.prices.shown(Decimal('0.01'))}"
    return plan.prices.shown(amount)


def about(seconds: float) -> str:
    """``about 2 h 05 min``, ``about 12 min``, ``about 40 s``, ``under a second``."""
    return "under a second" if 0 < seconds < 0.5 else f"about {duration(seconds)}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
