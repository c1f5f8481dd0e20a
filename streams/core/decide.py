"""The decision core: one event in, the notifications and suppressions it causes out.

Pure Python: the faust worker and the simulator run exactly this code, the one
with wall-clock time and tables, the other with event time and dicts. Outcomes
are yielded one by one so that a fan-out to many customers never has to hold
the whole audience in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, MutableMapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from streams.core.directory import Customer, CustomerDirectory
from streams.core.render import Renderer
from streams.core.rules import LOCALES, Rule, RuleSet
from streams.errors import TemplateError

ADDRESS_FIELD = {"sms": "phone", "email": "email"}


@dataclass(frozen=True)
class Notification:
    id: str
    rule: str
    channel: str
    customer_id: str
    to: str
    locale: str
    subject: str | None
    body: str
    created_at: str
    event_ids: tuple[str, ...]
    html: str | None = None
    template: str | None = None
    tier: str | None = None
    priority: int | None = None
    segments: int | None = None
    encoding: str | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["event_ids"] = list(self.event_ids)
        return {k: v for k, v in record.items() if v is not None or k in ("subject", "html")}


@dataclass(frozen=True)
class Suppression:
    rule: str
    customer_id: str | None
    reason: str
    event_id: str
    at: str
    channel: str | None = None
    detail: str | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "customer_id"}


Outcome = Notification | Suppression


def notification_id(rule: str, key: str, customer_id: str, channel: str, occurrence: str) -> str:
    """Deterministic, so that a re-delivered event yields the same id and can be recognised."""
    digest = hashlib.sha256(f"{rule}\x1f{key}\x1f{customer_id}\x1f{channel}\x1f{occurrence}".encode())
    return digest.hexdigest()[:32]


def outage_state_key(event: dict[str, Any], partition: int | None) -> str:
    """Each partition keeps its own copy of an outage's state, as each gets its own copy of the event."""
    outage_id = event["data"]["outage_id"]
    return outage_id if partition is None else f"{partition}/{outage_id}"


class Decider:
    def __init__(self, rules: RuleSet, renderer: Renderer, directory: CustomerDirectory,
                 outages: MutableMapping[str, dict[str, Any]] | None = None):
        self.rules = rules
        self.renderer = renderer
        self.directory = directory
        self.outages: MutableMapping[str, dict[str, Any]] = outages if outages is not None else {}

    def handle(self, event: dict[str, Any], now: datetime,
               partition: int | None = None, partitions: int = 1) -> Iterator[Outcome]:
        """Apply ``event`` to the state and yield what it causes.

        ``partition``/``partitions`` restrict an outage fan-out to the customers
        one partition owns; the worker passes them, the simulator does not.
        """
        event_type = event["type"]
        if event_type == "customer.upserted":
            self.directory.upsert({"id": event["customer_id"], **event["data"]})
            return
        if event_type == "customer.deleted":
            self.directory.delete(event["customer_id"])
            return
        outage_key = outage_state_key(event, partition) if event_type.startswith("outage.") else ""
        outage = self._track_outage(event, outage_key) if outage_key else None
        stamp = now.isoformat()
        for rule in self.rules.matching(event_type):
            key = rule.key_of(event)
            if rule.audience == "area":
                audience = self.directory.affected(outage.get("areas", ()), outage.get("nodes", ()),
                                                   partition, partitions) if outage else iter(())
                extra = {"outage": outage}
            else:
                customer = self.directory.get(event.get("customer_id"))
                if customer is None:
                    yield Suppression(rule.id, event.get("customer_id"), "unknown_customer", event["id"], stamp, key=key)
                    continue
                audience, extra = iter((customer,)), None
            for customer in audience:
                yield from self._for_customer(rule, key, event, customer, stamp, extra)
        if event_type == "outage.resolved":
            self.outages.pop(outage_key, None)

    def _track_outage(self, event: dict[str, Any], key: str) -> dict[str, Any] | None:
        data = event["data"]
        known = self.outages.get(key)
        if event["type"] == "outage.started":
            state = {k: data[k] for k in ("outage_id", "service", "areas", "nodes", "expected_end") if k in data}
        elif known is None:
            return None
        else:
            state = {**known, **{k: data[k] for k in ("areas", "nodes", "expected_end") if k in data}}
        self.outages[key] = state
        return state

    def _for_customer(self, rule: Rule, key: str, event: dict[str, Any], customer: Customer,
                      stamp: str, extra: dict[str, Any] | None) -> Iterator[Outcome]:
        plan = rule.plan_for(customer.get("tier", "standard"))
        if not plan.enabled:
            return
        if rule.condition is not None:
            try:
                wanted = rule.condition(event=event, customer=customer)
            except Exception as exc:  # a condition from ops must never stop the worker
                yield Suppression(rule.id, customer["id"], "condition_error", event["id"], stamp,
                                  detail=f"{type(exc).__name__}: {exc}"[:300], key=key)
                return
            if not wanted:
                return
        chosen, refusals = [], []
        for channel in plan.channels:
            if not customer.get("consents", {}).get(channel, False):
                refusals.append((channel, "no_consent"))
            elif not customer.get(ADDRESS_FIELD[channel]):
                refusals.append((channel, "no_contact_address"))
            else:
                chosen.append(channel)
                if plan.channel_mode == "first":
                    break
        if not chosen:
            channel, reason = refusals[0]
            yield Suppression(rule.id, customer["id"], reason, event["id"], stamp, channel=channel,
                              detail=", ".join(f"{c}: {r}" for c, r in refusals), key=key)
            return
        locale = customer.get("locale") if customer.get("locale") in LOCALES else self.rules.default_locale
        for channel in chosen:
            try:
                rendered = self.renderer.render(channel, locale, plan.template, event=event,
                                                customer=customer, extra=extra)
            except TemplateError as exc:
                yield Suppression(rule.id, customer["id"], "render_failed", event["id"], stamp,
                                  channel=channel, detail=str(exc)[:300], key=key)
                continue
            segments = rendered.segments
            yield Notification(
                id=notification_id(rule.id, key, customer["id"], channel, event["id"]),
                rule=rule.id, channel=channel, customer_id=customer["id"],
                to=customer[ADDRESS_FIELD[channel]], locale=locale,
                subject=rendered.subject, body=rendered.body, html=rendered.html,
                created_at=stamp, event_ids=(event["id"],), template=plan.template,
                tier=customer.get("tier"), priority=rule.priority,
                segments=segments.segments if segments else None,
                encoding=segments.encoding if segments else None, key=key,
            )
