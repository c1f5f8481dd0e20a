"""The decision core on the shipped rules and templates: who hears what, and why not."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from streams.channels.courier import optout_record
from streams.core.consent import PreferenceChange
from streams.core.decider import Decider, Notification, Suppression, notification_id
from streams.core.directory import CustomerDirectory, owner_partition
from streams.core.rules import load_rules
from streams.core.state import decode_state
from streams.settings import ROOT
from tests.fakes import known, links_for_tests, shipped_rules_without
from tests.conftest import write

NOW = datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)


def customer(cid, postcode="1012AB", locale="nl", tier="standard", sms=True, email=True, **extra):
    return {"id": cid, "name": f"Klant {cid}", "phone": "+31612345678", "email": f"{cid.lower()}@example.nl",
            "locale": locale, "timezone": "Europe/Amsterdam", "tier": tier, "postcode": postcode,
            "consents": {"sms": sms, "email": email, "marketing": {"email": email}}, **extra}


def outage(event_type="outage.started", event_id="e1", **data):
    base = {"outage_id": "OUT-1"}
    if event_type == "outage.started":
        base |= {"service": "internet", "areas": ["1012"], "expected_end": "2026-11-25T18:00:00+01:00"}
    if event_type == "outage.resolved":
        base |= {"resolved_at": "2026-11-25T15:00:00+01:00"}
    return {"id": event_id, "type": event_type, "occurred_at": "2026-11-25T14:00:00+01:00", "data": base | data}


def order_delayed(customer_id="C1", event_id="o1"):
    return {"id": event_id, "type": "order.delayed", "occurred_at": "2026-11-25T14:00:00+01:00",
            "customer_id": customer_id,
            "data": {"order_id": "ORD-1", "old_eta": "2026-11-26T12:00:00+01:00",
                     "new_eta": "2026-11-28T12:00:00+01:00", "reason": "Storm"}}


@pytest.fixture
def decider(renderer, schemas):
    rules = load_rules(shipped_rules_without("order-not-moving"), renderer, schemas)
    return Decider(rules, renderer, CustomerDirectory(), links=links_for_tests())


def run(decider, event, settle=timedelta(hours=2), **kwargs):
    """Handle ``event`` at NOW, then let the clock run ``settle`` so held messages are decided."""
    outcomes = list(decider.handle(event, NOW, **kwargs))
    outcomes += decider.fire_due(NOW + settle)
    return ([o for o in outcomes if isinstance(o, Notification)],
            [o for o in outcomes if isinstance(o, Suppression)])


def test_outage_reaches_every_customer_in_the_area_and_nobody_else(decider):
    for c in [customer("C1", "1012AB"), customer("C2", "1012ZZ"), customer("C3", "3511AB"),
              customer("C4", "3511CD"), customer("C5", "1013AA"), customer("C6", "9999XX", node_id="N7")]:
        known(decider, c)
    sent, _ = run(decider, outage(areas=["1012", "3511AB"], nodes=["N7"]))
    assert sorted(n.customer_id for n in sent) == ["C1", "C2", "C3", "C6"]
    assert all(n.rule == "outage-started" and n.channel == "sms" for n in sent)


def test_locale_picks_the_language(decider):
    known(decider, customer("C1", locale="nl"))
    known(decider, customer("C2", locale="en"))
    sent = {n.customer_id: n for n in run(decider, outage())[0]}
    assert sent["C1"].locale == "nl" and "storing" in sent["C1"].body.lower()
    assert sent["C2"].locale == "en" and "outage" in sent["C2"].body.lower()


def test_dutch_outage_sms_fits_one_gsm7_segment(decider):
    known(decider, customer("C1", locale="nl"))
    (sms,), _ = run(decider, outage(areas=["1012", "3511AB"]))
    assert sms.encoding == "GSM-7" and sms.segments == 1


def test_no_consent_falls_to_next_channel_or_is_suppressed_with_reason(decider):
    known(decider, customer("C1", sms=False))
    known(decider, customer("C2", sms=False, email=False))
    sent, suppressed = run(decider, outage())
    assert [(n.customer_id, n.channel) for n in sent] == [("C1", "email")]
    assert [(s.customer_id, s.reason) for s in suppressed] == [("C2", "opted_out")]
    assert sent[0].subject and sent[0].html and "<" in sent[0].html


def test_tiers_change_channels(decider):
    known(decider, customer("B", tier="basic"))
    known(decider, customer("P", tier="premium"))
    sent = sorted((n.customer_id, n.channel) for n in run(decider, outage())[0])
    assert sent == [("B", "email"), ("P", "email"), ("P", "sms")]


def test_order_for_unknown_customer_is_suppressed_not_lost(decider):
    sent, suppressed = run(decider, order_delayed("NOBODY"))
    assert sent == [] and [(s.rule, s.reason) for s in suppressed] == [("order-delayed", "unknown_customer")]


def test_order_delayed_message_carries_new_date(decider):
    known(decider, customer("C1"))
    (sms,), _ = run(decider, order_delayed(), settle=timedelta(hours=4))
    assert "28 november" in sms.body and sms.to == "+31612345678"


def test_condition_filters_empty_cart(decider):
    known(decider, customer("C1"))
    cart = {"id": "c1", "type": "cart.updated", "occurred_at": "2026-11-25T14:00:00+01:00", "customer_id": "C1",
            "data": {"cart_id": "K1", "items": [], "total": 0, "currency": "EUR",
                     "checkout_url": "https://shop.example.nl/checkout/K1"}}
    assert run(decider, cart) == ([], [])
    cart["data"] |= {"items": [{"sku": "A", "name": "Lamp", "qty": 1, "unit_price": 12.5}], "total": 12.5}
    (mail,), _ = run(decider, cart)
    assert mail.channel == "email" and "€ 12,50" in mail.body


def test_resolved_goes_to_the_area_of_the_started_outage(decider):
    known(decider, customer("C1", "1012AB"))
    known(decider, customer("C2", "2000AA"))
    run(decider, outage())
    sent, _ = run(decider, outage("outage.resolved", "e2"))
    assert [(n.customer_id, n.rule) for n in sent] == [("C1", "outage-resolved")]
    assert run(decider, outage("outage.resolved", "e3")) == ([], [])


def test_customer_moving_is_reindexed(decider):
    for event in ({"id": "u1", "type": "customer.upserted", "occurred_at": "2026-11-25T10:00:00+01:00",
                   "customer_id": "C1", "data": {k: v for k, v in customer("C1", "2000AA").items() if k != "id"}},
                  {"id": "u2", "type": "customer.upserted", "occurred_at": "2026-11-25T11:00:00+01:00",
                   "customer_id": "C1", "data": {k: v for k, v in customer("C1", "1012AB").items() if k != "id"}}):
        assert list(decider.handle(event, NOW)) == []
    assert [n.customer_id for n in run(decider, outage())[0]] == ["C1"]
    assert run(decider, outage(areas=["2000"], event_id="e9"))[0] == []


def test_partitions_split_a_fan_out_without_overlap(decider):
    decider.directory = CustomerDirectory(partitions=4)
    for i in range(40):
        known(decider, customer(f"C{i}"))
    seen = []
    for p in range(4):
        sent, _ = run(decider, outage(), partition=p)
        assert all(owner_partition(n.customer_id, 4) == p for n in sent)
        seen += [n.customer_id for n in sent]
    assert sorted(seen) == sorted(f"C{i}" for i in range(40))


def test_notification_ids_are_deterministic(decider):
    known(decider, customer("C1"))
    first = run(decider, order_delayed(), settle=timedelta(hours=4))[0][0]
    assert first.id == notification_id("order-delayed", "ORD-1", "C1", "sms", "o1")
    sent, suppressed = run(decider, order_delayed(), settle=timedelta(hours=4))  # the same event delivered again
    assert sent == [] and [s.reason for s in suppressed] == ["duplicate"] and first.id in suppressed[0].detail


def test_notifications_match_their_schema(decider, schemas):
    known(decider, customer("C1", tier="premium"))
    sent, _ = run(decider, outage())
    assert len(sent) == 2
    for n in sent:
        assert schemas.problems("notification.json", n.to_dict()) == []


IMMEDIATE_OUTAGE = """\
version: 1
defaults: {quiet_hours: false}
rules:
  - id: outage-started
    on: outage.started
    category: service
    channels: [sms]
    template: outage_started
"""


def test_fan_out_emits_critical_then_premium_then_the_rest_each_once(renderer, schemas, tmp_path):
    rules = load_rules(write(tmp_path / "rules.yaml", IMMEDIATE_OUTAGE), renderer, schemas)
    decider = Decider(rules, renderer, CustomerDirectory(), links=links_for_tests())
    for c in [customer("A1"), customer("A2", tier="premium"), customer("A3", critical=True),
              customer("A4", "1012AB", node_id="N1"), customer("A5", tier="premium", critical=True),
              customer("A6", "1099ZZ", node_id="N1")]:
        known(decider, c)
    order = [n.customer_id for n in decider.handle(outage(areas=["1012", "1012AB"], nodes=["N1"]), NOW)]
    assert sorted(order[:2]) == ["A3", "A5"] and order[2] == "A2"
    assert sorted(order) == ["A1", "A2", "A3", "A4", "A5", "A6"]  # A4 matches three keys, told once


def test_directory_keeps_records_compact_and_rebuilds_its_index(decider):
    known(decider, customer("C1", "1012AB"))
    assert isinstance(decider.directory.records["C1"], bytes)
    rebuilt = CustomerDirectory(dict(decider.directory.records))
    assert [c["id"] for c in rebuilt.affected(["1012"])] == ["C1"]


FALLBACK_RULES = """\
version: 1
defaults: {quiet_hours: false, budget: {count: 1, per: 7d}}
rules:
  - id: order-delayed
    on: order.delayed
    category: service
    channels: [sms, email]
    template: order_delayed
"""


def test_permanent_sms_failure_falls_back_to_email_once(renderer, schemas, tmp_path):
    rules = load_rules(write(tmp_path / "rules.yaml", FALLBACK_RULES), renderer, schemas)
    decider = Decider(rules, renderer, CustomerDirectory(), links=links_for_tests())
    known(decider, customer("C1"))
    (sms,) = list(decider.handle(order_delayed(), NOW))
    assert sms.channel == "sms" and sms.fallback == ("email",)
    assert schemas.problems("notification.json", sms.to_dict()) == []
    record = {"notification_id": sms.id, "customer_id": "C1", "rule": "order-delayed", "failed_channel": "sms",
              "reason": "21614 landline", "fallback": ["email"]}
    (email,) = list(decider.fall_back(record, NOW))  # the budget of 1 is not spent twice: same contact
    assert email.channel == "email" and email.event_ids == sms.event_ids and "28 november" in email.body
    assert email.fallback is None
    assert list(decider.fall_back(record, NOW)) == []  # a repeated fallback record sends nothing


def test_provider_opt_out_withdraws_consent_for_that_channel(decider):
    known(decider, customer("C1"))
    decider.prefer(PreferenceChange.of(optout_record("C1", "sms", "Twilio 21610")))
    assert decider.preferences.withheld("C1", "sms", "service", "order-delayed") == "opted_out"
    sent, _ = run(decider, order_delayed(), settle=timedelta(hours=4))
    assert [n.channel for n in sent] == ["email"]


OUTAGE_FALLBACK_RULES = """\
version: 1
defaults: {quiet_hours: false}
rules:
  - id: outage-started
    on: outage.started
    category: service
    audience: area
    channels: [sms, email]
    template: outage_started
    essential: true
"""


def test_outage_fallback_email_names_the_areas_the_state_did_not_copy(renderer, schemas, tmp_path):
    rules = load_rules(write(tmp_path / "rules.yaml", OUTAGE_FALLBACK_RULES), renderer, schemas)
    decider = Decider(rules, renderer, CustomerDirectory(), links=links_for_tests())
    known(decider, customer("C1"))
    (sms,) = list(decider.handle(outage(areas=["1012", "3511"]), NOW))
    stored = decode_state(decider.states["C1"]).fallbacks[sms.id].event
    assert "areas" not in stored["data"]  # each customer's state stays small in a fan-out
    record = {"notification_id": sms.id, "customer_id": "C1", "rule": "outage-started", "failed_channel": "sms",
              "reason": "21614 landline", "fallback": ["email"]}
    (email,) = list(decider.fall_back(record, NOW))
    assert email.channel == "email" and "1012" in email.body and "3511" in email.body


def cart_updated(at: datetime, event_id="c1"):
    return {"id": event_id, "type": "cart.updated", "occurred_at": at.isoformat(), "customer_id": "C1",
            "data": {"cart_id": "CART-1", "items": [{"sku": "A1", "name": "Router", "qty": 1, "unit_price": 99.0}],
                     "total": 99.0, "currency": "EUR", "checkout_url": "https://shop.example.nl/checkout/CART-1"}}


def order_placed(at: datetime, event_id="p1"):
    return {"id": event_id, "type": "order.placed", "occurred_at": at.isoformat(), "customer_id": "C1",
            "data": {"order_id": "ORD-9", "items": [{"sku": "A1", "name": "Router", "qty": 1, "unit_price": 99.0}],
                     "total": 99.0, "currency": "EUR"}}


def checked_out(at: datetime, event_id="k1"):
    return {"id": event_id, "type": "cart.checked_out", "occurred_at": at.isoformat(), "customer_id": "C1",
            "data": {"cart_id": "CART-1", "order_id": "ORD-9"}}


def test_an_order_that_happened_after_the_cart_cancels_the_reminder_though_it_is_read_first(decider):
    known(decider, customer("C1"))
    list(decider.handle(order_placed(NOW), NOW))
    sent, suppressed = run(decider, cart_updated(NOW - timedelta(minutes=10)))
    assert [n for n in sent if n.rule == "cart-reminder"] == []
    assert ("cart-reminder", "cancelled") in {(s.rule, s.reason) for s in suppressed}


def test_a_cancelling_event_older_than_the_pending_trigger_does_not_cancel_it(decider):
    known(decider, customer("C1"))
    assert list(decider.handle(cart_updated(NOW), NOW)) == []  # held for an hour
    for late_news in (checked_out(NOW - timedelta(minutes=5)), order_placed(NOW - timedelta(minutes=5))):
        assert [s for s in decider.handle(late_news, NOW) if s.reason == "cancelled"] == []
    sent = [o for o in decider.fire_due(NOW + timedelta(hours=2)) if isinstance(o, Notification)]
    assert [n.rule for n in sent] == ["cart-reminder"]


# -- dedupe on the business fact --------------------------------------------------------------------

def order_shipped(event_id, at=NOW, **data):
    return {"id": event_id, "type": "order.shipped", "occurred_at": at.isoformat(), "customer_id": "C1",
            "data": {"order_id": "ORD-1", "carrier": "PostNL", "eta": "2026-11-27",
                     "tracking_url": "https://tracking.example.nl/ORD-1"} | data}


def delayed(event_id, at, new_eta="2026-11-28T12:00:00+01:00"):
    return {**order_delayed(event_id=event_id), "occurred_at": at.isoformat(),
            "data": {**order_delayed()["data"], "new_eta": new_eta}}


def decided(decider, event, at):
    """Handle ``event`` at ``at`` and fire what falls due within four hours (order-delayed coalesces 3h)."""
    outcomes = list(decider.handle(event, at)) + list(decider.fire_due(at + timedelta(hours=4)))
    return ([o for o in outcomes if isinstance(o, Notification)],
            [(o.reason, o.detail) for o in outcomes if isinstance(o, Suppression)])


def test_the_same_shipment_published_twice_with_new_event_ids_is_one_email(decider):
    known(decider, customer("C1"))
    first, _ = decided(decider, order_shipped("s1"), NOW)
    again, suppressed = decided(decider, order_shipped("s2", NOW + timedelta(minutes=5)), NOW + timedelta(minutes=5))
    assert len(first) == 1 and again == []
    assert suppressed == [("duplicate", f"same fact as event s1 of {NOW.isoformat()}, already sent")]


def test_a_delay_with_the_same_new_date_is_not_news_and_a_new_date_is(decider):
    known(decider, customer("C1"))
    later, next_day = NOW + timedelta(hours=3, minutes=30), NOW + timedelta(days=1)  # outside quiet hours
    sent, _ = decided(decider, delayed("d1", NOW), NOW)
    same, suppressed = decided(decider, delayed("d2", later), later)
    moved, _ = decided(decider, delayed("d3", next_day, new_eta="2026-11-30"), next_day)
    assert len(sent) == 1 and same == [] and [r for r, _ in suppressed] == ["duplicate"]
    assert [n.event_ids for n in moved] == [("d3",)]


def test_the_same_fact_after_the_dedupe_window_is_sent_again_and_old_facts_are_pruned(decider):
    known(decider, customer("C1"))
    decided(decider, order_shipped("s1"), NOW)
    week_later = NOW + timedelta(days=8)
    again, suppressed = decided(decider, order_shipped("s2", week_later), week_later)
    assert len(again) == 1 and suppressed == []
    facts = decode_state(decider.states["C1"]).facts
    assert [f.event_id for f in facts.values()] == ["s2"]


def test_dedupe_false_sends_the_same_fact_twice(tmp_path, renderer, schemas):
    rules = write(tmp_path / "rules.yaml", """\
version: 1
rules:
  - id: order-shipped
    on: order.shipped
    category: service
    channels: [email]
    template: order_shipped
    dedupe: false
""")
    decider = Decider(load_rules(rules, renderer, schemas), renderer, CustomerDirectory(), links=links_for_tests())
    known(decider, customer("C1"))
    first, _ = decided(decider, order_shipped("s1"), NOW)
    again, _ = decided(decider, order_shipped("s2"), NOW + timedelta(minutes=5))
    assert len(first) == len(again) == 1


def test_a_delay_sent_again_with_the_same_new_date_is_not_news_even_with_another_reason(decider):
    known(decider, customer("C1"))
    first, _ = run(decider, order_delayed(event_id="d1"), settle=timedelta(hours=4))  # coalesced for 3 h
    again = {**order_delayed(event_id="d2"), "occurred_at": "2026-11-25T20:00:00+01:00"}
    again["data"] = {**again["data"], "reason": "Drukte", "old_eta": "2026-11-27T12:00:00+01:00"}
    sent, suppressed = run(decider, again, settle=timedelta(hours=12))
    assert first and sent == []
    assert "duplicate" in {s.reason for s in suppressed}


def test_marketing_email_carries_its_unsubscribe_link_and_a_service_rule_may_ask_for_one(tmp_path, renderer, schemas):
    rules = write(tmp_path / "rules.yaml", """\
version: 1
rules:
  - id: order-shipped
    on: order.shipped
    category: service
    list_unsubscribe: true
    channels: [email]
    template: order_shipped
""")
    decider = Decider(load_rules(rules, renderer, schemas), renderer, CustomerDirectory(), links=links_for_tests())
    known(decider, customer("C1"))
    shipped = {"id": "s1", "type": "order.shipped", "occurred_at": "2026-11-25T12:00:00+01:00", "customer_id": "C1",
               "data": {"order_id": "O1", "carrier": "PostNL", "tracking_url": "https://t.example.nl/1",
                        "eta": "2026-11-26T12:00:00+01:00"}}
    [sent] = list(decider.handle(shipped, NOW))
    assert sent.category == "service" and sent.unsubscribe["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = sent.unsubscribe["List-Unsubscribe"].split("/unsubscribe/")[1].split(">")[0]
    ticket = links_for_tests().read(token, NOW)
    assert (ticket.customer_id, ticket.scope.channel, ticket.scope.rule) == ("C1", "email", "order-shipped")


def test_without_a_signing_key_a_marketing_email_is_held_back_not_sent_without_its_link(renderer, schemas):
    rules = load_rules(shipped_rules_without("order-not-moving"), renderer, schemas)
    decider = Decider(rules, renderer, CustomerDirectory())
    known(decider, customer("C1"))
    sent, suppressed = run(decider, cart_updated(datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)))
    assert sent == [] and [s.reason for s in suppressed if s.rule == "cart-reminder"] == ["render_failed"]
