"""The decision core: one event in, the notifications and suppressions it causes out.

Pure Python: the faust worker and the simulator run exactly this code, the one
with tables and wall-clock time, the other with dicts and event time. Outcomes
are yielded one by one so that a fan-out to many customers never has to hold
the whole audience in memory.

Each customer has one state record (in ``states``, see ``state.CustomerState``,
kept as compact bytes) holding everything restraint needs: pending messages
(waits, coalescing, quiet-hours deferrals), the contact history for caps, the
ids of notifications already emitted, cancellations seen, and the outages the
customer was told about. One record per customer keeps all of a customer's
state in the partition that owns the customer. Whether a message may go out
is decided step by step in ``restraint``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, MutableMapping
from datetime import datetime, timedelta
from typing import Any

import orjson

from streams.core import restraint
from streams.core.clock import event_time
from streams.core.consent import MARKETING, PreferenceBook, PreferenceChange, Scope
from streams.core.directory import Customer, CustomerDirectory
from streams.core.events import customer_record
from streams.core.outcomes import Decision, Notification, Suppression, notification_id
from streams.core.render import Rendered, Renderer
from streams.core.restraint import ADDRESS_FIELD, Attempt, Defer, Trigger as _Trigger, reachable
from streams.core.rules import LOCALES, Rule, RuleSet
from streams.core.schedule import Due, DueIndex
from streams.core.unsubscribe import Headers, UnsubscribeLinks
from streams.core.state import Contact, CustomerState, Fact, Fallback, Pending, Told, decode_state, encode_state
from streams.errors import TemplateError

log = logging.getLogger(__name__)
ANY_KEY = "*"  # a cancellation that matches the customer, whatever the rule's key

__all__ = ["ADDRESS_FIELD", "Decider", "Decision", "Notification", "Suppression", "notification_id", "reachable"]

SENT_IDS_KEEP = timedelta(days=30)
RENDER_CACHE_SIZE = 4096
FALLBACK_KEEP = timedelta(days=3)
CANCEL_KEEP = timedelta(days=7)
# An outage's lists of areas and nodes live once in its outage state, not in each affected customer's state.
OUTAGE_LISTS = ("areas", "nodes")


def outage_state_key(event: dict[str, Any], partition: int | None) -> str:
    """Each partition keeps its own copy of an outage's state, as each gets its own copy of the event."""
    outage_id = event["data"]["outage_id"]
    return outage_id if partition is None else f"{partition}/{outage_id}"


_last_stamp: list = [None, ""]


def _iso(moment: datetime) -> str:
    # A fan-out stamps 100,000 outcomes with the same moment object. By identity, not equality:
    # equal instants in other time zones print differently.
    if moment is not _last_stamp[0]:
        _last_stamp[:] = [moment, moment.isoformat()]
    return _last_stamp[1]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def contained(decisions: Iterator[Decision], rule_id: str, customer_id: str | None, event_id: str,
              stamp: str, key: str | None) -> Iterator[Decision]:
    """One customer's decision; should it fail unexpectedly, an ``internal_error`` record, and the rest go on.

    A decision saves the customer's state after yielding its messages, so a
    failure part-way leaves no record of a message that was never emitted.
    """
    try:
        yield from decisions
    except Exception as exc:  # noqa: BLE001  a bug or an input no check foresaw must not cost the fan-out
        log.error("rule %s, customer %s: decision failed: %s", rule_id, customer_id, type(exc).__name__)
        yield Suppression(rule_id, customer_id, "internal_error", event_id, stamp, key=key,
                          detail=f"{type(exc).__name__}: {exc}"[:300])


def _with_outage(event: dict[str, Any], outage: dict[str, Any] | None, fields: tuple[str, ...]) -> dict[str, Any]:
    """A stored event with the outage's current ``fields`` put back (or brought up to date)."""
    if not outage or not event["type"].startswith("outage."):
        return event
    return {**event, "data": {**event["data"], **{k: outage[k] for k in fields if k in outage}}}


class Decider:
    def __init__(self, rules: RuleSet, renderer: Renderer, directory: CustomerDirectory,
                 outages: MutableMapping[str, dict[str, Any]] | None = None,
                 states: MutableMapping[str, bytes] | None = None,
                 due: DueIndex | None = None, preferences: MutableMapping[str, bytes] | None = None,
                 links: UnsubscribeLinks | None = None):
        self.rules = rules
        self.preferences = PreferenceBook(preferences)
        self.links = links  # None: emails carry no unsubscribe link (and marketing email is not sent)
        self.renderer = renderer
        self.directory = directory
        self.outages: MutableMapping[str, dict[str, Any]] = outages if outages is not None else {}
        self.states: MutableMapping[str, bytes] = states if states is not None else {}  # encoded CustomerStates
        self.due = due if due is not None else DueIndex()
        self._rendered: dict[tuple, Rendered] = {}
        self._last_context: tuple | None = None
        self._last_slim: tuple | None = None

    # -- entry points -------------------------------------------------------------------------

    def handle(self, event: dict[str, Any], now: datetime,
               partition: int | None = None) -> Iterator[Decision]:
        """Apply ``event`` to the state and yield what it causes now.

        ``partition`` restricts an outage fan-out to the customers one
        partition owns; the worker passes it, the simulator does not.
        """
        event_type = event["type"]
        if event_type == "customer.upserted":
            self.directory.upsert(customer_record(event))
            self.preferences.from_crm(event["customer_id"], event["data"]["consents"], event["occurred_at"])
            return
        if event_type == "customer.deleted":
            self._forget(event["customer_id"], event["occurred_at"])
            return
        outage, outage_key = None, ""
        if event_type.startswith("outage."):
            outage_key = outage_state_key(event, partition)
            outage = self._track_outage(event, outage_key)
        stamp = _iso(now)
        for rule in self.rules.cancelled_by(event_type):
            yield from self._cancel(rule, event, outage, stamp, partition)
        for rule in self.rules.matching(event_type):
            key = rule.key_of(event)
            if rule.audience == "customer":
                customer = self.directory.get(event.get("customer_id"))
                if customer is None:
                    yield Suppression(rule.id, event.get("customer_id"), "unknown_customer", event["id"], stamp, key=key)
                    continue
                audience: Iterator[Customer] = iter((customer,))
            elif outage is None or (outage.get("resolved") and event_type != "outage.resolved"):
                continue  # an update or a late start for an outage already over: nobody to tell
            else:
                audience = self.directory.affected(outage.get("areas", ()), outage.get("nodes", ()), partition)
            trigger = _Trigger(rule, key, event, (event["id"],), event["id"], outage_key=outage_key or None)
            for customer in audience:  # one trigger for the whole audience: nothing downstream changes it
                yield from contained(self._trigger(trigger, customer, now), rule.id, customer["id"],
                                     event["id"], stamp, key)
        if event_type == "outage.resolved" and outage is not None:
            self._forget_outage(outage, event["data"]["outage_id"], partition)

    def fire(self, due: Due, now: datetime) -> Iterator[Decision]:
        """A pending message fell due: decide on it again against current state."""
        state = self._load(due.customer_id)
        entry = state.pending.get(due.pending_id) if state is not None else None
        if state is None or entry is None or entry.version != due.version:
            return  # cancelled, replaced by a newer trigger, or already sent
        del state.pending[due.pending_id]
        self._save(due.customer_id, state)
        try:
            rule = self.rules.get(entry.rule)
        except KeyError:
            return  # the rule was removed from rules.yaml since
        stamp = _iso(now)
        customer = self.directory.get(due.customer_id)
        if customer is None:
            yield Suppression(rule.id, due.customer_id, "unknown_customer", entry.event["id"], stamp, key=entry.key)
            return
        event = entry.event
        if event["type"] in ("outage.started", "outage.updated"):
            outage = self.outages.get(entry.outage_key)
            if outage is None or outage.get("resolved"):
                yield Suppression(rule.id, due.customer_id, "cancelled", event["id"], stamp, key=entry.key,
                                  detail="the outage was over before the message was due")
                return
            event = _with_outage(event, outage, ("expected_end", *OUTAGE_LISTS))
        elif event["type"] == "outage.resolved":
            event = _with_outage(event, self.outages.get(entry.outage_key), OUTAGE_LISTS)
        trigger = _Trigger(rule, entry.key, event, entry.event_ids, entry.occurrence, from_pending=True,
                           outage_key=entry.outage_key)
        yield from contained(self._deliver(trigger, customer, now, state), rule.id, due.customer_id,
                             entry.event["id"], stamp, entry.key)
        if event["type"] == "outage.resolved" and due.pending_id not in state.pending:
            # The all-clear was decided, sent or not: the customer keeps no record of the outage.
            state.outages.pop(event["data"]["outage_id"], None)
            self._save(due.customer_id, state)

    def fire_due(self, now: datetime, shards: Collection[int] | None = None) -> Iterator[Decision]:
        """Event-time mode: fire everything due by ``now``, in due order, each at its own due time.

        One at a time, so that what firing schedules again (a deferral) fires in its turn, as it
        would had the clock been moved to ``now`` in smaller steps.
        """
        while (due := self.due.pop_next(now, shards)) is not None:
            yield from self.fire(due, due.moment)

    def prefer(self, change: PreferenceChange) -> list[str]:
        """A customer said what they want to hear (STOP, an unsubscribe link, support, a provider's opt-out).

        A change by phone number (an SMS STOP) applies to every customer of this
        partition with that number. Returns the customers whose preferences changed.
        """
        if change.customer_id is not None:
            customers = [change.customer_id]
        else:
            customers = self.directory.with_phone(change.phone or "", change.partition)
        return [c for c in customers if self.preferences.state(c, change.statements)]

    def fall_back(self, record: dict[str, Any], now: datetime) -> Iterator[Decision]:
        """A channel failed for good: send the same message once on the next channel the rule names."""
        state = self._load(record["customer_id"])
        entry = state.fallbacks.pop(record["notification_id"], None) if state is not None else None
        if state is None or entry is None:
            return  # already fallen back, or too old
        self._save(record["customer_id"], state)
        customer = self.directory.get(record["customer_id"])
        try:
            rule = self.rules.get(entry.rule)
        except KeyError:
            return
        if customer is None:
            yield Suppression(rule.id, record["customer_id"], "unknown_customer", entry.event["id"], _iso(now),
                              key=entry.key)
            return
        event = _with_outage(entry.event, self.outages.get(entry.outage_key), OUTAGE_LISTS)
        trigger = _Trigger(rule, entry.key, event, entry.event_ids, entry.occurrence,
                           from_pending=True, outage_key=entry.outage_key,
                           fallback_from=record["failed_channel"], only=tuple(record.get("fallback", ())))
        yield from contained(self._deliver(trigger, customer, now, state), rule.id, record["customer_id"],
                             entry.event["id"], _iso(now), entry.key)

    def hold(self, due: Due) -> None:
        """A due record that may not fire yet: index its pending entry again, as the state has it now.

        Only if the record is still the entry's current version: a stale one (the trigger came again
        since) must not replace the newer entry the index holds, which would then never fire.
        """
        state = self._load(due.customer_id)
        entry = state.pending.get(due.pending_id) if state is not None else None
        if entry is not None and entry.version == due.version:
            self.due.schedule(due.customer_id, due.pending_id, entry.version, _at(entry.due))

    def rebuild_due_index(self, owns=lambda _: True) -> None:
        """After recovery: the pending table is the truth, the index is derived from it."""
        self.due.clear()
        for customer_id, raw in self.states.items():
            if owns(customer_id):
                for pending_id, entry in decode_state(raw).pending.items():
                    self.due.schedule(customer_id, pending_id, entry.version, _at(entry.due))

    # -- the states ---------------------------------------------------------------------------

    def _load(self, customer_id: str) -> CustomerState | None:
        return decode_state(self.states.get(customer_id))

    def _save(self, customer_id: str, state: CustomerState) -> None:
        self.states[customer_id] = encode_state(state)

    # -- triggers and cancellation ----------------------------------------------------------

    def _trigger(self, trigger: _Trigger, customer: Customer, now: datetime) -> Iterator[Decision]:
        rule, event = trigger.rule, trigger.event
        stamp = _iso(now)
        if not rule.plan_for(customer.get("tier", "standard")).enabled:
            return
        if rule.condition is not None:
            try:
                wanted = rule.condition(event=event, customer=customer)
            except Exception as exc:  # a condition from ops must never stop the worker
                yield Suppression(rule.id, customer["id"], "condition_error", event["id"], stamp,
                                  detail=f"{type(exc).__name__}: {exc}"[:300], key=trigger.key)
                return
            if not wanted:
                return
        stored = self._load(customer["id"])
        state = stored or CustomerState()
        cancelled_at = max((at for at in (state.cancels.get(f"{rule.id}|{trigger.key}"),
                                          state.cancels.get(f"{rule.id}|{ANY_KEY}")) if at), key=_at, default=None)
        if cancelled_at and _at(cancelled_at) >= event_time(event):
            yield Suppression(rule.id, customer["id"], "cancelled", event["id"], stamp, key=trigger.key,
                              detail="a cancelling event came first (out of order)")
            return
        # A re-delivered event that was already sent (perhaps folded into another's message) is not news.
        sent_ids = state.sent_ids
        already = [i for c in ADDRESS_FIELD
                   if (i := notification_id(rule.id, trigger.key, customer["id"], c, event["id"])) in sent_ids
                   ] if sent_ids else []
        if already:
            yield Suppression(rule.id, customer["id"], "duplicate", event["id"], stamp, key=trigger.key,
                              detail="already sent: " + ", ".join(already))
            return
        plan = rule.plan_for(customer.get("tier", "standard"))
        if plan.wait or rule.coalesce:
            chosen, refusals = reachable(plan.channels, customer, plan.channel_mode,
                                         self.preferences.get(customer["id"]), rule)
            if not chosen:  # nothing to hold for: say so now, not when it falls due
                channel, reason = refusals[0]
                yield Suppression(rule.id, customer["id"], reason, event["id"], stamp, channel=channel,
                                  key=trigger.key, detail=", ".join(f"{c}: {r}" for c, r in refusals))
                return
            yield from self._hold(trigger, customer, state, now, plan.wait)
        else:
            yield from self._deliver(trigger, customer, now, stored)

    def _hold(self, trigger: _Trigger, customer: Customer, state: CustomerState, now: datetime,
              wait: timedelta | None) -> Iterator[Decision]:
        """Put the trigger in the pending table, or fold it into the pending message for the same key."""
        rule, event = trigger.rule, trigger.event
        pending_id = f"{rule.id}|{trigger.key}"
        entry = state.pending.get(pending_id)
        moment = event_time(event)
        if entry is None or entry.hold != "wait":
            entry = Pending(rule.id, trigger.key, self._slim(event), [event["id"]], event["id"], _iso(moment),
                            _iso(moment), entry.version if entry is not None else 0, "wait")
        else:
            if event["id"] in entry.event_ids:
                return  # the same event delivered again
            newer = moment >= event_time(entry.event)
            folded, kept = (entry.event, event) if newer else (event, entry.event)  # the latest data wins
            yield Suppression(rule.id, customer["id"], "coalesced", folded["id"], _iso(now), key=trigger.key,
                              detail=f"folded into one message with {kept['id']}")
            if newer:
                entry.event = self._slim(event)
            entry.event_ids.append(event["id"])
            entry.last_at = _iso(max(moment, _at(entry.last_at)))
        if trigger.outage_key:
            entry.outage_key = trigger.outage_key
        candidates = []
        if wait:
            candidates.append(_at(entry.last_at) + wait)
        if rule.coalesce:
            candidates.append(_at(entry.first_at) + rule.coalesce)
        self._schedule(customer["id"], state, pending_id, entry, min(candidates))

    def _schedule(self, customer_id: str, state: CustomerState, pending_id: str, entry: Pending,
                  due_at: datetime) -> None:
        entry.version += 1
        entry.due = _iso(due_at)
        state.pending[pending_id] = entry
        self._save(customer_id, state)
        self.due.schedule(customer_id, pending_id, entry.version, due_at)

    def _cancel(self, rule: Rule, event: dict[str, Any], outage: dict[str, Any] | None, stamp: str,
                partition: int | None) -> Iterator[Decision]:
        match = rule.cancelled_by(event["type"])
        key = rule.key_of(event)
        if event["type"].startswith("outage."):
            if outage is None:
                return
            customers = self.directory.affected(outage.get("areas", ()), outage.get("nodes", ()), partition)
        else:
            customer = self.directory.get(event.get("customer_id"))
            customers = iter((customer,)) if customer else iter(())
        # An outage's own state remembers that it is over; customer events leave a marker so that
        # a trigger read after its cancellation, though it happened before it, is cancelled too.
        remember = not event["type"].startswith("outage.")
        cancelled_at = event_time(event)
        for customer in customers:
            state = self._load(customer["id"])
            if state is None and not remember:
                continue
            state = state or CustomerState()
            if remember:
                state.cancels[f"{rule.id}|{key if match == 'key' else ANY_KEY}"] = event["occurred_at"]
            elif not state.pending:
                continue
            for pending_id, entry in list(state.pending.items()):
                # Event time decides: a cancellation from after the due time comes too late, and one
                # from before the trigger (read late) is older news that the trigger has overtaken.
                if entry.rule == rule.id and (match == "customer" or entry.key == key) \
                        and _at(entry.due) > cancelled_at >= event_time(entry.event):
                    del state.pending[pending_id]
                    self.due.cancel(customer["id"], pending_id)
                    yield Suppression(rule.id, customer["id"], "cancelled", entry.event["id"], stamp,
                                      key=entry.key, detail=f"cancelled by {event['type']} {event['id']}")
            self._prune(state, event_time(event))
            self._save(customer["id"], state)

    # -- the decision to send -----------------------------------------------------------------

    def _deliver(self, trigger: _Trigger, customer: Customer, now: datetime,
                 state: CustomerState | None) -> Iterator[Decision]:
        """Send now, unless a step of restraint says otherwise; ``state`` is the stored one, or None."""
        plan = trigger.rule.plan_for(customer.get("tier", "standard"))
        if not plan.enabled:
            return
        attempt = Attempt(trigger, customer, plan, state or CustomerState(), now, _iso(now),
                          self.preferences.get(customer["id"]), self.rules.budget, list(plan.channels))
        verdict = restraint.restrain(attempt)
        if isinstance(verdict, Defer):
            yield from self._defer(attempt, verdict)
            return
        if verdict is not None:
            if attempt.changed:
                self._save(customer["id"], attempt.state)
            if isinstance(verdict, Suppression):
                yield verdict
            return
        yield from self._emit(attempt)
        if state is not None:  # a fresh state has nothing old to prune
            self._prune(attempt.state, now)
        self._save(customer["id"], attempt.state)

    def _emit(self, a: Attempt) -> Iterator[Decision]:
        """Render and yield the message on each chosen channel, and record it in the state."""
        rule, event, key, customer, state = a.rule, a.event, a.trigger.key, a.customer, a.state
        locale = customer.get("locale") if customer.get("locale") in LOCALES else self.rules.default_locale
        emitted = []
        for channel in a.chosen:
            if a.ids[channel] in state.sent_ids:
                continue
            links = self._unsubscribe(a, channel, locale)
            if links is None and channel == "email" and rule.category == MARKETING:
                yield a.suppressed("render_failed", "marketing email needs an unsubscribe link: set "
                                                    "FOREWARN_UNSUBSCRIBE_SECRET", channel)
                continue
            try:
                rendered = self._render(channel, locale, a.plan.template, event, customer, a.trigger.outage_key,
                                        links.url if links else None)
            except TemplateError as exc:
                yield a.suppressed("render_failed", str(exc)[:300], channel)
                continue
            self._record_sent(a, channel)
            emitted.append(channel)
            fallback = self._keep_for_fallback(a, channel)
            segments = rendered.segments
            yield Notification(
                id=a.ids[channel], rule=rule.id, channel=channel, customer_id=customer["id"],
                to=customer[ADDRESS_FIELD[channel]], locale=locale,
                subject=rendered.subject, body=rendered.body, html=rendered.html,
                created_at=a.stamp, event_ids=tuple(a.trigger.event_ids), template=a.plan.template,
                tier=customer.get("tier"), priority=rule.priority,
                segments=segments.segments if segments else None,
                encoding=segments.encoding if segments else None, key=key, fallback=fallback or None,
                category=rule.category, unsubscribe=links.as_email_headers() if links else None,
            )
        if emitted and not a.trigger.fallback_from:  # a fallback is the same contact on another channel
            self._record_contact(a, emitted)

    def _record_sent(self, a: Attempt, channel: str) -> None:
        sent_ids, trigger = a.state.sent_ids, a.trigger
        sent_ids[a.ids[channel]] = a.stamp
        for folded in trigger.event_ids:  # so that re-delivering any folded event is recognised too
            sent_ids[notification_id(a.rule.id, trigger.key, a.customer["id"], channel, folded)] = a.stamp

    def _keep_for_fallback(self, a: Attempt, channel: str) -> tuple[str, ...]:
        """The channels to try if ``channel`` fails for good; what to send on them is kept in the state."""
        trigger = a.trigger
        if a.plan.channel_mode != "first" or a.told is not None or trigger.fallback_from:
            return ()
        fallback = tuple(a.channels[a.channels.index(channel) + 1:])
        if fallback:  # kept until the provider has the message or the fallback is sent
            a.state.fallbacks[a.ids[channel]] = Fallback(
                a.rule.id, trigger.key, self._slim(trigger.event), list(trigger.event_ids), trigger.occurrence,
                trigger.outage_key, a.stamp)
        return fallback

    def _record_contact(self, a: Attempt, emitted: list[str]) -> None:
        state, event = a.state, a.event
        state.sent.append(Contact(a.stamp, a.rule.id))
        state.last[a.pending_id] = a.stamp
        if a.fact:  # so that the same fact under a new event id is known for a duplicate
            state.facts[a.fact] = Fact(event_time(event).isoformat(), event["id"])
        if a.outage_id and event["type"] == "outage.resolved":
            state.outages.pop(a.outage_id, None)
        elif a.outage_id:
            before = a.told.channels if a.told is not None else []
            state.outages[a.outage_id] = Told(sorted(set(emitted) | set(before)), event["data"].get("expected_end"))

    def _unsubscribe(self, a: Attempt, channel: str, locale: str) -> Headers | None:
        """The link an email of this rule carries: marketing ones all, service ones if the rule asks."""
        if channel != "email" or not a.rule.unsubscribable or self.links is None:
            return None
        scope = Scope("email", MARKETING) if a.rule.category == MARKETING else Scope("email", rule=a.rule.id)
        return self.links.headers(a.customer["id"], scope, locale, a.now)

    def _render(self, channel: str, locale: str, template: str, event: dict[str, Any], customer: Customer,
                outage_key: str | None, unsubscribe_url: str | None = None) -> Rendered:
        """Render, or reuse the text rendered for a customer who looks the same to this template.

        In a fan-out most customers differ only in fields the template never
        reads; this is what makes 100,000 outage messages cheap.
        """
        fields = self.renderer.customer_fields(channel, locale, template)
        extra = self._extra(outage_key, unsubscribe_url)
        if fields is None or unsubscribe_url is not None:  # a link is the customer's own: nothing to share
            return self.renderer.render(channel, locale, template, event=event, customer=customer, extra=extra)
        key = (channel, locale, template, self._render_context(event, outage_key),
               orjson.dumps([customer.get(f) for f in sorted(fields)], default=str))
        found = self._rendered.get(key)
        if found is None:
            found = self.renderer.render(channel, locale, template, event=event, customer=customer, extra=extra)
            if len(self._rendered) >= RENDER_CACHE_SIZE:
                self._rendered.clear()
            self._rendered[key] = found
        return found

    def _slim(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` as a customer's state keeps it: an outage without its areas and nodes (see ``_with_outage``)."""
        if self._last_slim is not None and self._last_slim[0] is event:
            return self._last_slim[1]  # made once per fan-out, not once per customer
        if not event["type"].startswith("outage.") or not any(k in event["data"] for k in OUTAGE_LISTS):
            return event
        slim = {**event, "data": {k: v for k, v in event["data"].items() if k not in OUTAGE_LISTS}}
        self._last_slim = (event, slim)
        return slim

    def _extra(self, outage_key: str | None, unsubscribe_url: str | None = None) -> dict[str, Any] | None:
        extra = {"outage": self.outages.get(outage_key)} if outage_key else {}
        if unsubscribe_url is not None:
            extra["unsubscribe_url"] = unsubscribe_url
        return extra or None

    def _render_context(self, event: dict[str, Any], outage_key: str | None) -> bytes:
        """The event and outage as the template sees them, serialised once per fan-out, not per customer."""
        last = self._last_context
        if last is not None and last[0] is event and last[1] == outage_key and last[2] is self.outages.get(outage_key):
            return last[3]
        outage = self.outages.get(outage_key) if outage_key else None
        context = orjson.dumps([event, outage], default=str)
        # The event and outage are held, so ``is`` cannot match a new object at a reused address.
        self._last_context = (event, outage_key, outage, context)
        return context

    def _defer(self, a: Attempt, defer: Defer) -> Iterator[Decision]:
        trigger, event = a.trigger, a.event
        existing = a.state.pending.get(a.pending_id)
        entry = Pending(trigger.rule.id, trigger.key, self._slim(event), list(trigger.event_ids), trigger.occurrence,
                        event["occurred_at"], event["occurred_at"], existing.version if existing is not None else 0,
                        "defer", outage_key=trigger.outage_key or None)
        self._schedule(a.customer["id"], a.state, a.pending_id, entry, defer.until)
        yield Suppression(trigger.rule.id, a.customer["id"], defer.reason, event["id"], _iso(a.now), key=trigger.key,
                          detail=defer.detail)

    # -- state upkeep -------------------------------------------------------------------------

    def _track_outage(self, event: dict[str, Any], key: str) -> dict[str, Any] | None:
        data = event["data"]
        known = self.outages.get(key)
        if event["type"] == "outage.started":
            if known is not None and known.get("resolved"):
                return known  # the all-clear came first: this start is old news
            state = {k: data[k] for k in ("outage_id", "service", "areas", "nodes", "expected_end") if k in data}
        elif known is None:
            if event["type"] == "outage.resolved":
                self.outages[key] = {"outage_id": data["outage_id"], "resolved": data["resolved_at"]}
            return None
        elif event["type"] == "outage.resolved":
            state = {**known, "resolved": data["resolved_at"]}
        else:
            state = {**known, **{k: data[k] for k in ("areas", "nodes", "expected_end") if k in data}}
        self.outages[key] = state
        return state

    def _forget_outage(self, outage: dict[str, Any], outage_id: str, partition: int | None) -> None:
        """After the all-clear, no customer in the area keeps this outage in their state."""
        for customer in self.directory.affected(outage.get("areas", ()), outage.get("nodes", ()), partition):
            state = self._load(customer["id"])
            if state is not None and outage_id in state.outages and not any(
                    e.event["type"] == "outage.resolved" and e.event["data"]["outage_id"] == outage_id
                    for e in state.pending.values()):  # a deferred all-clear still needs to know who was told
                del state.outages[outage_id]
                self._save(customer["id"], state)

    def _forget(self, customer_id: str, at: str) -> None:
        """``customer.deleted``: their record, state and pending messages go; their preferences say no to all."""
        self.directory.delete(customer_id)
        self.preferences.forget(customer_id, at)
        state = self._load(customer_id)
        if state is not None:
            for pending_id in state.pending:
                self.due.cancel(customer_id, pending_id)
            del self.states[customer_id]

    def _prune(self, state: CustomerState, now: datetime) -> None:
        keep_from = now - self.rules.history_window
        state.sent = [s for s in state.sent if _at(s.at) > keep_from]
        state.sent_ids = {i: at for i, at in state.sent_ids.items() if _at(at) > now - SENT_IDS_KEEP}
        state.cancels = {k: at for k, at in state.cancels.items() if _at(at) > now - CANCEL_KEEP}
        if state.fallbacks:
            state.fallbacks = {i: f for i, f in state.fallbacks.items() if _at(f.at) > now - FALLBACK_KEEP}
        if state.last:
            state.last = {k: at for k, at in state.last.items() if _at(at) > keep_from}
        if state.facts:
            fact_from = now - self.rules.dedupe_window
            state.facts = {f: fact for f, fact in state.facts.items() if _at(fact.at) > fact_from}
