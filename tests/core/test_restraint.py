"""Each step of restraint on its own: what it lets through, what it holds back, and why."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from streams.core.config import load_config
from streams.core.outcomes import Suppression, notification_id
from streams.core.policy import Budget, Reserve
from streams.core.restraint import (STOP, STEPS, Attempt, Defer, Trigger, choose_channels, contact_budget, duplicate,
                                    min_change, min_interval, outage_told, quiet_hours, restrain, rule_cap)
from streams.core.state import Contact, CustomerState, Fact, Told
from streams.settings import Settings
from tests.fakes import preferences_of

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)  # 13:00 in Amsterdam
NIGHT = datetime(2026, 11, 25, 22, 30, tzinfo=timezone.utc)  # 23:30 in Amsterdam


@pytest.fixture(scope="module")
def rules():
    return load_config(Settings()).rules


def customer(**changes) -> dict:
    record = {"id": "C1", "name": "Sanne de Vries", "phone": "+31612345678", "email": "sanne@example.nl",
              "locale": "nl", "timezone": "Europe/Amsterdam", "tier": "standard",
              "consents": {"sms": True, "email": True, "marketing": {"email": True}}}
    return {**record, **changes}


def event(event_type: str, **data) -> dict:
    return {"id": f"e-{event_type}", "type": event_type, "occurred_at": NOON.isoformat(), "data": data}


def attempt(rules, rule_id: str, incoming: dict, *, state: CustomerState | None = None, now: datetime = NOON,
            who: dict | None = None, **trigger) -> Attempt:
    rule, who = rules.get(rule_id), who or customer()
    plan = rule.plan_for(who["tier"])
    return Attempt(Trigger(rule, "K1", incoming, (incoming["id"],), incoming["id"], **trigger), who, plan,
                   state or CustomerState(), now, now.isoformat(), preferences_of(who), rules.budget,
                   list(plan.channels))


def reason(verdict) -> str | None:
    return verdict.reason if isinstance(verdict, Suppression) else None


# -- outages told ---------------------------------------------------------------------------------

def test_an_outage_start_for_a_customer_told_of_another_is_folded_into_that_message(rules):
    state = CustomerState(outages={"OUT-1": Told(["sms"], "2026-11-25T18:00:00+01:00")})
    a = attempt(rules, "outage-started", event("outage.started", outage_id="OUT-2"), state=state)
    assert reason(outage_told(a)) == "coalesced"
    assert a.changed and a.state.outages["OUT-2"].via == "OUT-1"


@pytest.mark.parametrize("event_type", ["outage.updated", "outage.resolved"])
def test_news_of_an_outage_never_told_about_is_not_sent_and_not_reported(rules, event_type):
    rule = "outage-updated" if event_type == "outage.updated" else "outage-resolved"
    assert outage_told(attempt(rules, rule, event(event_type, outage_id="OUT-1"))) is STOP


def test_the_all_clear_of_a_covered_outage_is_superseded_and_an_update_says_nothing(rules):
    state = CustomerState(outages={"OUT-1": Told(["sms"]), "OUT-2": Told(["sms"], via="OUT-1")})
    resolved = attempt(rules, "outage-resolved", event("outage.resolved", outage_id="OUT-2"), state=state)
    assert reason(outage_told(resolved)) == "superseded"
    updated = attempt(rules, "outage-updated", event("outage.updated", outage_id="OUT-2"), state=state)
    assert outage_told(updated) is STOP


def test_the_all_clear_waits_while_an_overlapping_outage_goes_on(rules):
    state = CustomerState(outages={"OUT-1": Told(["sms"]), "OUT-2": Told(["sms"], via="OUT-1")})
    a = attempt(rules, "outage-resolved", event("outage.resolved", outage_id="OUT-1"), state=state)
    assert reason(outage_told(a)) == "superseded"
    assert set(a.state.outages) == {"OUT-2"} and a.state.outages["OUT-2"].via is None


def test_updates_go_to_the_channels_the_first_message_went_to(rules):
    state = CustomerState(outages={"OUT-1": Told(["email"])})
    a = attempt(rules, "outage-updated", event("outage.updated", outage_id="OUT-1"), state=state)
    assert outage_told(a) is None and a.channels == ["email"]


# -- min_change, channels, duplicates -----------------------------------------------------------------

@pytest.mark.parametrize("new_end, held", [("2026-11-25T18:20:00+01:00", True), ("2026-11-25T18:31:00+01:00", False)])
def test_an_update_goes_only_when_the_expected_end_moves_by_more_than_min_change(rules, new_end, held):
    state = CustomerState(outages={"OUT-1": Told(["sms"], "2026-11-25T18:00:00+01:00")})
    a = attempt(rules, "outage-updated", event("outage.updated", outage_id="OUT-1", expected_end=new_end),
                state=state)
    outage_told(a)
    assert reason(min_change(a)) == ("coalesced" if held else None)


@pytest.mark.parametrize("who, rule, expected", [
    (customer(), "order-delayed", None),
    (customer(consents={"sms": False, "email": False}), "order-delayed", "opted_out"),
    (customer(phone=None, email=None), "order-delayed", "no_contact_address"),
    (customer(consents={"sms": True, "email": True}), "order-delayed", None),  # service: no marketing consent needed
    (customer(consents={"sms": True, "email": True}), "cart-reminder", "no_marketing_consent"),
    (customer(consents={"sms": True, "email": True, "marketing": {"email": False}}), "cart-reminder", "opted_out"),
    (customer(), "cart-reminder", None),
])
def test_channels_follow_preferences_category_and_addresses(rules, who, rule, expected):
    incoming = event("order.delayed", order_id="O1") if rule == "order-delayed" else event("cart.updated", cart_id="K")
    a = attempt(rules, rule, incoming, who=who)
    assert reason(choose_channels(a)) == expected
    if expected is None:
        assert a.chosen == (["sms"] if rule == "order-delayed" else ["email"])  # the first reachable channel


def test_a_fallback_uses_only_the_channels_the_failure_left(rules):
    a = attempt(rules, "order-delayed", event("order.delayed", order_id="O1"), fallback_from="sms", only=("email",))
    assert choose_channels(a) is None and a.chosen == ["email"]


def test_an_occurrence_sent_on_any_channel_is_a_duplicate(rules):
    incoming = event("order.delayed", order_id="O1")
    sent = notification_id("order-delayed", "K1", "C1", "sms", incoming["id"])
    a = attempt(rules, "order-delayed", incoming, state=CustomerState(sent_ids={sent: NOON.isoformat()}))
    choose_channels(a)
    assert reason(duplicate(a)) == "duplicate"
    fresh = attempt(rules, "order-delayed", incoming)
    choose_channels(fresh)
    assert duplicate(fresh) is None and set(fresh.ids) == {"sms"}


def test_a_fact_already_sent_within_the_window_is_a_duplicate_whatever_the_event_id(rules):
    shipped = {**event("order.shipped", order_id="O1", carrier="PostNL"), "id": "e-new"}
    sent = attempt(rules, "order-shipped", shipped)
    choose_channels(sent)
    assert duplicate(sent) is None and sent.fact  # the fingerprint to record once it is sent
    facts = {sent.fact: Fact((NOON - timedelta(days=6)).isoformat(), "e-old")}
    again = attempt(rules, "order-shipped", shipped, state=CustomerState(facts=facts))
    choose_channels(again)
    verdict = duplicate(again)
    assert reason(verdict) == "duplicate" and "e-old" in verdict.detail
    moved = attempt(rules, "order-shipped", {**shipped, "data": {**shipped["data"], "carrier": "DHL"}},
                    state=CustomerState(facts=facts))
    choose_channels(moved)
    assert duplicate(moved) is None  # a new carrier is news


def test_a_fallback_and_an_outage_message_are_not_checked_for_facts(rules):
    shipped = event("order.shipped", order_id="O1")
    fact = rules.get("order-shipped").fact_of(shipped, "K1")
    state = CustomerState(facts={fact: Fact(NOON.isoformat(), "e-old")})
    fallback = attempt(rules, "order-shipped", shipped, state=state, fallback_from="sms", only=("email",))
    choose_channels(fallback)
    assert duplicate(fallback) is None
    assert rules.get("outage-started").fact_of(event("outage.started", outage_id="OUT-1"), "K1") is None


# -- time: min_interval, quiet hours ----------------------------------------------------------------

def test_within_the_minimum_interval_the_message_waits_for_its_end(rules):
    last = NOON - timedelta(minutes=30)
    state = CustomerState(last={"outage-updated|K1": last.isoformat()})
    verdict = min_interval(attempt(rules, "outage-updated", event("outage.updated", outage_id="OUT-1"), state=state))
    assert verdict == Defer(last + timedelta(hours=2), "coalesced", "within the minimum interval")
    later = attempt(rules, "outage-updated", event("outage.updated", outage_id="OUT-1"), state=state,
                    now=NOON + timedelta(hours=2))
    assert min_interval(later) is None


def test_quiet_hours_defer_to_the_customers_morning_unless_urgent(rules):
    verdict = quiet_hours(attempt(rules, "order-shipped", event("order.shipped", order_id="O1"), now=NIGHT))
    assert isinstance(verdict, Defer) and verdict.reason == "quiet_hours"
    assert verdict.until == datetime(2026, 11, 26, 7, 0, tzinfo=timezone.utc)  # 08:00 in Amsterdam
    assert quiet_hours(attempt(rules, "order-shipped", event("order.shipped", order_id="O1"), now=NOON)) is None


# -- caps and the contact budget -------------------------------------------------------------------

def contacts(*rules_and_hours_ago: tuple[str, float]) -> CustomerState:
    return CustomerState(sent=[Contact((NOON - timedelta(hours=h)).isoformat(), r) for r, h in rules_and_hours_ago])


@pytest.mark.parametrize("history, expected", [
    ((), None),
    ((("cart-reminder", 24),), "cap_exceeded"),  # once a week
    ((("cart-reminder", 24 * 8),), None),  # more than a week ago
    ((("order-shipped", 24),), None),  # another rule's message
])
def test_a_rule_cap_counts_only_that_rules_messages_in_its_window(rules, history, expected):
    a = attempt(rules, "cart-reminder", event("cart.updated", cart_id="K1"), state=contacts(*history))
    assert reason(rule_cap(a)) == expected


def test_the_contact_budget_holds_back_the_fourth_message_of_a_week_but_never_an_essential_one(rules):
    three = contacts(("order-shipped", 1), ("order-shipped", 30), ("order-delayed", 50))
    assert reason(contact_budget(attempt(rules, "order-shipped", event("order.shipped"), state=three))) == \
        "cap_exceeded"
    assert contact_budget(attempt(rules, "outage-started", event("outage.started", outage_id="OUT-1"),
                                  state=three)) is None
    two = contacts(("order-shipped", 1), ("order-delayed", 50))
    assert contact_budget(attempt(rules, "order-shipped", event("order.shipped"), state=two)) is None


RESERVED = Budget(3, timedelta(days=7), Reserve(priority=70, count=1))


def budgeted(rules, rule_id: str, incoming: dict, state: CustomerState) -> Attempt:
    a = attempt(rules, rule_id, incoming, state=state)
    a.budget = RESERVED
    return a


def test_low_priority_messages_stop_short_of_the_reserve_and_a_high_one_still_goes_out(rules):
    assert rules.get("order-shipped").priority < 70 <= rules.get("order-delayed").priority
    two_shipped = contacts(("order-shipped", 1), ("order-shipped", 30))
    held = contact_budget(budgeted(rules, "order-shipped", event("order.shipped"), two_shipped))
    assert reason(held) == "cap_exceeded" and "reserved for priority >= 70" in held.detail
    assert contact_budget(budgeted(rules, "order-delayed", event("order.delayed"), two_shipped)) is None


def test_below_the_reserve_low_priority_messages_go_and_at_the_full_budget_nothing_but_essentials(rules):
    one_shipped = contacts(("order-shipped", 1))
    assert contact_budget(budgeted(rules, "order-shipped", event("order.shipped"), one_shipped)) is None
    three = contacts(("order-shipped", 1), ("order-shipped", 30), ("order-delayed", 50))
    held = contact_budget(budgeted(rules, "order-delayed", event("order.delayed"), three))
    assert reason(held) == "cap_exceeded" and "reserved" not in held.detail
    assert contact_budget(budgeted(rules, "outage-started", event("outage.started", outage_id="OUT-1"), three)) is None


def test_contacts_older_than_the_window_leave_the_reserve_free_again(rules):
    old = contacts(("order-shipped", 24 * 8), ("order-shipped", 24 * 9))
    assert contact_budget(budgeted(rules, "order-shipped", event("order.shipped"), old)) is None


def test_a_fallback_is_the_same_contact_and_counts_against_nothing(rules):
    three = contacts(("order-shipped", 1), ("order-shipped", 30), ("order-delayed", 50))
    a = attempt(rules, "order-shipped", event("order.shipped"), state=three, fallback_from="sms", only=("email",))
    assert contact_budget(a) is None and a.sent_at() == []


# -- the steps together ------------------------------------------------------------------------------

def test_the_first_step_that_holds_a_message_back_decides(rules):
    assert [step.__name__ for step in STEPS] == ["outage_told", "min_change", "choose_channels", "duplicate",
                                                  "min_interval", "quiet_hours", "rule_cap", "contact_budget"]
    # At night and over its cap: the night decides first, so the message waits rather than being dropped.
    a = attempt(rules, "cart-reminder", event("cart.updated", cart_id="K1"), state=contacts(("cart-reminder", 24)),
                now=NIGHT)
    assert isinstance(restrain(a), Defer)
    assert restrain(attempt(rules, "order-shipped", event("order.shipped", order_id="O1"))) is None
