"""Restraint in the decision core, on event time: waits, cancellation, outage grace, coalescing,
outage updates, overlapping outages, caps, duplicates, opt-out, restart and tiers.

Time is driven explicitly: each event is handled at its own time after the timers due by then
have fired (as the simulator does), and ``fire_due(t)`` lets the clock run to ``t``.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import pytest

from streams.core.decider import Decider, Notification, Suppression, notification_id
from streams.core.directory import CustomerDirectory
from streams.core.policy import Cap, parse_duration
from streams.core.rules import load_rules
from streams.core.schedule import DueIndex
from streams.core.state import decode_state
from streams.settings import ROOT
from streams.core.consent import Scope
from tests.fakes import known, links_for_tests, shipped_rules_without
from tests.conftest import write

LAMP = {"sku": "LMP-1", "name": "Desk lamp", "qty": 1, "unit_price": 12.5}
CABLE = {"sku": "CBL-1", "name": "Network cable", "qty": 2, "unit_price": 6.95}


# -- helpers ------------------------------------------------------------------------------------

def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def customer(cid, postcode="1012AB", tier="standard", sms=True, email=True, tz="Europe/Amsterdam", **extra):
    return {"id": cid, "name": f"Kim {cid}", "phone": "+31612345678", "email": f"{cid.lower()}@example.nl",
            "locale": "en", "timezone": tz, "tier": tier, "postcode": postcode,
            "consents": {"sms": sms, "email": email, "marketing": {"email": email}}, **extra}


def cart(eid, when, cart_id="K1", cid="C1", items=(LAMP,)):
    total = round(sum(i["qty"] * i["unit_price"] for i in items), 2)
    return {"id": eid, "type": "cart.updated", "occurred_at": when, "customer_id": cid,
            "data": {"cart_id": cart_id, "items": list(items), "total": total, "currency": "EUR",
                     "checkout_url": f"https://shop.example.nl/checkout/{cart_id}"}}


def checkout(eid, when, cart_id="K1", cid="C1"):
    return {"id": eid, "type": "cart.checked_out", "occurred_at": when, "customer_id": cid,
            "data": {"cart_id": cart_id, "order_id": "ORD-9"}}


def placed(eid, when, cid="C1"):
    return {"id": eid, "type": "order.placed", "occurred_at": when, "customer_id": cid,
            "data": {"order_id": "ORD-9", "items": [LAMP], "total": 12.5, "currency": "EUR"}}


def delayed(eid, when, new_eta, order_id="ORD-1", cid="C1"):
    return {"id": eid, "type": "order.delayed", "occurred_at": when, "customer_id": cid,
            "data": {"order_id": order_id, "old_eta": "2026-11-26T12:00:00+01:00", "new_eta": new_eta}}


def shipped_order(eid, when, cid="C1", order_id="ORD-1"):
    return {"id": eid, "type": "order.shipped", "occurred_at": when, "customer_id": cid,
            "data": {"order_id": order_id, "carrier": "PostNL", "eta": "2026-11-27T12:00:00+01:00",
                     "tracking_url": "https://track.example.nl/ORD-1"}}


def started(eid, when, outage_id="OUT-1", areas=("1012",), nodes=None, expected_end="2026-11-25T18:00:00+01:00"):
    data = {"outage_id": outage_id, "service": "internet", "areas": list(areas), "expected_end": expected_end}
    if nodes:
        data["nodes"] = list(nodes)
    return {"id": eid, "type": "outage.started", "occurred_at": when, "data": data}


def updated(eid, when, expected_end, outage_id="OUT-1"):
    return {"id": eid, "type": "outage.updated", "occurred_at": when,
            "data": {"outage_id": outage_id, "expected_end": expected_end}}


def resolved(eid, when, outage_id="OUT-1"):
    return {"id": eid, "type": "outage.resolved", "occurred_at": when,
            "data": {"outage_id": outage_id, "resolved_at": when}}


def upserted(eid, when, record):
    return {"id": eid, "type": "customer.upserted", "occurred_at": when, "customer_id": record["id"],
            "data": {k: v for k, v in record.items() if k != "id"}}


def feed(decider, *events, until=None):
    """Like the simulator: before each event fire what fell due by its time, then handle it then.

    An item may be ``(event, now)`` to handle an event late (out of order).
    """
    outcomes = []
    for item in events:
        event, now = item if isinstance(item, tuple) else (item, item["occurred_at"])
        outcomes += decider.fire_due(at(now))
        outcomes += decider.handle(event, at(now))
    if until is not None:
        outcomes += decider.fire_due(at(until))
    return outcomes


def summary(outcomes):
    """Each outcome as a comparable tuple; sent: ("sent", rule, customer, channel, instant, event ids)."""
    return [("sent", o.rule, o.customer_id, o.channel, at(o.created_at), o.event_ids)
            if isinstance(o, Notification) else (o.reason, o.rule, o.customer_id, o.event_id)
            for o in outcomes]


def sent(outcomes):
    """By time, then customer id (stable: channels keep their order); a fan-out's own order is urgency."""
    return sorted((o for o in outcomes if isinstance(o, Notification)), key=lambda o: (at(o.created_at), o.customer_id))


def suppressed(outcomes):
    return sorted((o for o in outcomes if isinstance(o, Suppression)), key=lambda o: (at(o.at), o.customer_id or ""))


def decider_from(path, renderer, schemas):
    return Decider(load_rules(path, renderer, schemas), renderer, CustomerDirectory(), links=links_for_tests())


def rules_file(tmp_path, rules, defaults=""):
    return write(tmp_path / "rules.yaml", f"version: 1\n{defaults}rules:\n{rules}")


@pytest.fixture
def shipped(renderer, schemas):
    """A decider on the shipped config/rules.yaml, less the parcel-not-moving rule every shipment also starts."""
    return decider_from(shipped_rules_without("order-not-moving"), renderer, schemas)


# -- 1. waits with debounce ----------------------------------------------------------------------

def test_cart_reminder_is_sent_an_hour_after_the_last_update_with_its_data(shipped):
    known(shipped, customer("C1"))
    out = feed(shipped, cart("c1", "2026-11-25T10:00:00+01:00"),
               cart("c2", "2026-11-25T10:40:00+01:00", items=(LAMP, CABLE)))
    assert summary(out) == [("coalesced", "cart-reminder", "C1", "c1")]
    assert list(shipped.fire_due(at("2026-11-25T11:00:00+01:00"))) == []
    assert list(shipped.fire_due(at("2026-11-25T11:39:59+01:00"))) == []
    (mail,) = shipped.fire_due(at("2026-11-25T11:40:00+01:00"))
    assert (mail.rule, mail.channel, mail.to) == ("cart-reminder", "email", "c1@example.nl")
    assert at(mail.created_at) == at("2026-11-25T11:40:00+01:00")
    assert mail.event_ids == ("c1", "c2")
    assert mail.id == notification_id("cart-reminder", "K1", "C1", "email", "c1")
    assert "Network cable" in mail.body and "Total: €26.40" in mail.body
    assert list(shipped.fire_due(at("2026-11-26T12:00:00+01:00"))) == []


@pytest.mark.parametrize("tier, due", [
    ("basic", "2026-11-25T11:00:00+01:00"),
    ("standard", "2026-11-25T11:00:00+01:00"),
    ("premium", "2026-11-25T10:30:00+01:00"),
])
def test_cart_wait_depends_on_the_tier(shipped, tier, due):
    known(shipped, customer("C1", tier=tier))
    assert feed(shipped, cart("c1", "2026-11-25T10:00:00+01:00")) == []
    assert list(shipped.fire_due(at(due) - timedelta(seconds=1))) == []
    assert summary(shipped.fire_due(at(due) + timedelta(hours=3))) == [
        ("sent", "cart-reminder", "C1", "email", at(due), ("c1",))]


@pytest.mark.parametrize("tier, due, channels", [
    ("basic", "2026-11-25T14:10:00+01:00", ["email"]),
    ("standard", "2026-11-25T14:10:00+01:00", ["sms"]),
    ("premium", "2026-11-25T14:05:00+01:00", ["sms", "email"]),
])
def test_outage_started_is_held_for_a_grace_period_per_tier(shipped, tier, due, channels):
    known(shipped, customer("C1", tier=tier))
    assert feed(shipped, started("s1", "2026-11-25T14:00:00+01:00")) == []
    assert list(shipped.fire_due(at(due) - timedelta(seconds=1))) == []
    out = list(shipped.fire_due(at(due) + timedelta(hours=1)))
    assert summary(out) == [("sent", "outage-started", "C1", c, at(due), ("s1",)) for c in channels]
    assert all("18:00" in n.body for n in out)


# -- 2. cancellation -----------------------------------------------------------------------------

@pytest.mark.parametrize("cancel, cancels", [
    (checkout("x1", "2026-11-25T10:50:00+01:00"), True),
    (placed("x1", "2026-11-25T10:50:00+01:00"), True),                      # {on: order.placed, match: customer}
    (checkout("x1", "2026-11-25T10:50:00+01:00", cart_id="K2"), False),     # another cart
    (placed("x1", "2026-11-25T10:50:00+01:00", cid="C2"), False),           # another customer
], ids=["checkout", "order-placed", "other-cart", "other-customer"])
def test_cart_reminder_cancelled_before_due(shipped, cancel, cancels):
    known(shipped, customer("C1"))
    known(shipped, customer("C2"))
    out = feed(shipped, cart("c1", "2026-11-25T10:00:00+01:00"), cancel)
    if cancels:
        assert summary(out) == [("cancelled", "cart-reminder", "C1", "c1")]
        assert out[0].detail == f"cancelled by {cancel['type']} x1"
        assert list(shipped.fire_due(at("2026-11-26T12:00:00+01:00"))) == []
        assert decode_state(shipped.states["C1"]).pending == {}
    else:
        assert out == []
        assert summary(shipped.fire_due(at("2026-11-26T12:00:00+01:00"))) == [
            ("sent", "cart-reminder", "C1", "email", at("2026-11-25T11:00:00+01:00"), ("c1",))]


@pytest.mark.parametrize("fire_first", [True, False], ids=["timer-ran", "timer-not-yet-run"])
def test_checkout_after_the_due_time_does_not_cancel_the_reminder(shipped, fire_first):
    known(shipped, customer("C1"))
    list(shipped.handle(cart("c1", "2026-11-25T10:00:00+01:00"), at("2026-11-25T10:00:00+01:00")))
    late = checkout("x1", "2026-11-25T11:30:00+01:00")
    if fire_first:  # event time: the reminder went at 11:00, the checkout comes after it
        out = feed(shipped, late, until="2026-11-26T12:00:00+01:00")
    else:  # the checkout is handled before the timer ran, but it happened after the due time
        out = list(shipped.handle(late, at("2026-11-25T11:30:00+01:00")))
        assert out == []
        out = list(shipped.fire_due(at("2026-11-26T12:00:00+01:00")))
    assert summary(out) == [("sent", "cart-reminder", "C1", "email", at("2026-11-25T11:00:00+01:00"), ("c1",))]


def test_checkout_processed_before_the_update_it_follows_cancels_it(shipped):
    known(shipped, customer("C1"))
    assert feed(shipped, (checkout("x1", "2026-11-25T10:30:00+01:00"), "2026-11-25T10:31:00+01:00")) == []
    out = list(shipped.handle(cart("c1", "2026-11-25T10:00:00+01:00"), at("2026-11-25T10:31:00+01:00")))
    assert summary(out) == [("cancelled", "cart-reminder", "C1", "c1")]
    assert out[0].detail == "a cancelling event came first (out of order)"
    assert decode_state(shipped.states["C1"]).pending == {}
    assert list(shipped.fire_due(at("2026-11-26T12:00:00+01:00"))) == []


def test_cart_updated_after_a_checkout_of_the_same_cart_is_reminded(shipped):
    known(shipped, customer("C1"))
    out = feed(shipped, checkout("x1", "2026-11-25T10:30:00+01:00"), cart("c1", "2026-11-25T10:45:00+01:00"),
               until="2026-11-25T12:00:00+01:00")
    assert summary(out) == [("sent", "cart-reminder", "C1", "email", at("2026-11-25T11:45:00+01:00"), ("c1",))]


# -- 3. outage grace -----------------------------------------------------------------------------

AREA = [customer("E", sms=False), customer("N", sms=False, email=False), customer("P", tier="premium"),
        customer("S"), customer("X", postcode="3511AB")]


@pytest.mark.parametrize("resolved_at, started_to, cancelled, resolved_to", [
    # a blip: nobody hears anything, the held messages are cancelled
    ("2026-11-25T14:04:00+01:00", [], ["E", "P", "S"], []),
    # premium waits 5 minutes, the others 10: only premium was told, so only premium hears it is over
    ("2026-11-25T14:07:00+01:00", [("P", "sms"), ("P", "email")], ["E", "S"], [("P", "email"), ("P", "sms")]),
    # everybody told: the all-clear goes to exactly them, on the channels they were told on
    ("2026-11-25T14:30:00+01:00", [("P", "sms"), ("P", "email"), ("E", "email"), ("S", "sms")], [],
     [("E", "email"), ("P", "email"), ("P", "sms"), ("S", "sms")]),
], ids=["4-minutes", "7-minutes", "30-minutes"])
def test_outage_grace_period(shipped, resolved_at, started_to, cancelled, resolved_to):
    for c in AREA:
        known(shipped, c)
    out = feed(shipped, started("s1", "2026-11-25T14:00:00+01:00"), resolved("r1", resolved_at),
               until="2026-11-25T18:00:00+01:00")
    assert [(n.customer_id, n.channel) for n in sent(out) if n.rule == "outage-started"] == started_to
    assert [(n.customer_id, n.channel) for n in sent(out) if n.rule == "outage-resolved"] == resolved_to
    assert all(n.event_ids == ("r1",) and at(n.created_at) == at(resolved_at)
               for n in sent(out) if n.rule == "outage-resolved")
    assert [(s.reason, s.rule, s.customer_id, s.event_id) for s in suppressed(out)] == \
        [("opted_out", "outage-started", "N", "s1")] + [("cancelled", "outage-started", c, "s1") for c in cancelled]


def test_all_clear_uses_the_told_channels_and_skips_customers_not_told(shipped):
    known(shipped, customer("E", sms=False))
    out = feed(shipped, started("s1", "2026-11-25T14:00:00+01:00"),
               # after being told by email, E allows SMS and a new customer moves into the area
               upserted("u1", "2026-11-25T14:20:00+01:00", customer("E")),
               upserted("u2", "2026-11-25T14:20:00+01:00", customer("L", postcode="1012CD")),
               resolved("r1", "2026-11-25T14:30:00+01:00"), until="2026-11-25T18:00:00+01:00")
    assert summary(out) == [
        ("sent", "outage-started", "E", "email", at("2026-11-25T14:10:00+01:00"), ("s1",)),
        ("sent", "outage-resolved", "E", "email", at("2026-11-25T14:30:00+01:00"), ("r1",)),
    ]
    assert decode_state(shipped.states["E"]).outages == {}


def test_all_clear_during_quiet_hours_is_sent_in_the_morning(shipped):
    known(shipped, customer("S"))
    out = feed(shipped, started("s1", "2026-11-25T20:00:00+01:00"), resolved("r1", "2026-11-25T23:00:00+01:00"),
               until="2026-11-26T12:00:00+01:00")
    assert summary(out) == [
        ("sent", "outage-started", "S", "sms", at("2026-11-25T20:10:00+01:00"), ("s1",)),
        ("quiet_hours", "outage-resolved", "S", "r1"),
        ("sent", "outage-resolved", "S", "sms", at("2026-11-26T08:00:00+01:00"), ("r1",)),
    ]
    assert decode_state(shipped.states["S"]).outages == {}
    # with nothing left of the old outage, the next one is news again
    out = feed(shipped, started("s2", "2026-11-26T14:00:00+01:00", outage_id="OUT-2"),
               until="2026-11-26T15:00:00+01:00")
    assert summary(out) == [("sent", "outage-started", "S", "sms", at("2026-11-26T14:10:00+01:00"), ("s2",))]


def test_outage_started_during_quiet_hours_and_over_by_morning_says_nothing(shipped):
    known(shipped, customer("S"))
    out = feed(shipped, started("s1", "2026-11-25T22:00:00+01:00"), resolved("r1", "2026-11-26T01:00:00+01:00"),
               until="2026-11-26T12:00:00+01:00")
    assert summary(out) == [("quiet_hours", "outage-started", "S", "s1"), ("cancelled", "outage-started", "S", "s1")]


# -- 4. coalescing -------------------------------------------------------------------------------

COALESCE_6H = """\
  - id: order-delayed
    on: order.delayed
    category: service
    channels: [sms, email]
    template: order_delayed
    coalesce: 6h
    quiet_hours: false
    cancel_on: [order.delivered]
"""


@pytest.fixture
def coalescing(tmp_path, renderer, schemas):
    decider = decider_from(rules_file(tmp_path, COALESCE_6H), renderer, schemas)
    known(decider, customer("C1"))
    return decider


D1 = delayed("d1", "2026-11-25T10:00:00+01:00", "2026-11-28T12:00:00+01:00")
D2 = delayed("d2", "2026-11-25T12:00:00+01:00", "2026-11-30T12:00:00+01:00")
D3 = delayed("d3", "2026-11-25T15:00:00+01:00", "2026-12-02T12:00:00+01:00")


@pytest.mark.parametrize("arrivals, event_ids", [
    ([D1, D2, D3], ("d1", "d2", "d3")),
    ([D1, D3, (D2, "2026-11-25T15:05:00+01:00")], ("d1", "d3", "d2")),  # d2 arrives late: d3 still wins
], ids=["in-order", "out-of-order"])
def test_delays_within_the_window_become_one_message_with_the_newest_eta(coalescing, arrivals, event_ids):
    out = feed(coalescing, *arrivals, until="2026-11-25T23:00:00+01:00")
    (sms,) = sent(out)
    assert (sms.channel, at(sms.created_at), sms.event_ids) == ("sms", at("2026-11-25T16:00:00+01:00"), event_ids)
    assert "Wednesday 2 December" in sms.body and "November" not in sms.body
    assert sms.id == notification_id("order-delayed", "ORD-1", "C1", "sms", "d1")
    assert sorted((s.reason, s.event_id) for s in suppressed(out)) == [("coalesced", "d1"), ("coalesced", "d2")]
    assert all(s.detail == "folded into one message with d3" for s in suppressed(out) if s.event_id == "d2")


def test_a_delay_after_the_window_is_a_new_message(coalescing):
    out = feed(coalescing, D1, D2, delayed("d4", "2026-11-25T17:00:00+01:00", "2026-12-04T12:00:00+01:00"),
               until="2026-11-26T12:00:00+01:00")
    assert summary(out) == [
        ("coalesced", "order-delayed", "C1", "d1"),
        ("sent", "order-delayed", "C1", "sms", at("2026-11-25T16:00:00+01:00"), ("d1", "d2")),
        ("sent", "order-delayed", "C1", "sms", at("2026-11-25T23:00:00+01:00"), ("d4",)),
    ]
    assert "Friday 4 December" in sent(out)[1].body


# -- 5. outage.updated ---------------------------------------------------------------------------

@pytest.fixture
def told(shipped):
    """S told by SMS and E by email about OUT-1 (expected end 18:00); N could not be told."""
    for c in (customer("S"), customer("E", sms=False), customer("N", sms=False, email=False)):
        known(shipped, c)
    out = feed(shipped, started("s1", "2026-11-25T14:00:00+01:00"), until="2026-11-25T14:10:00+01:00")
    assert [(n.customer_id, n.channel) for n in sent(out)] == [("E", "email"), ("S", "sms")]
    return shipped


@pytest.mark.parametrize("new_end, message", [
    ("2026-11-25T18:20:00+01:00", None),
    ("2026-11-25T18:30:00+01:00", None),         # exactly min_change is not more than it
    ("2026-11-25T19:30:00+01:00", "19:30"),
    ("2026-11-25T16:30:00+01:00", "16:30"),      # earlier counts too
])
def test_outage_update_only_when_the_end_moves_enough(told, new_end, message):
    out = feed(told, updated("u1", "2026-11-25T14:30:00+01:00", new_end), until="2026-11-25T20:00:00+01:00")
    if message is None:
        moved = abs(at(new_end) - at("2026-11-25T18:00:00+01:00"))
        assert summary(out) == [("coalesced", "outage-updated", c, "u1") for c in ("E", "S")]
        assert {s.detail for s in out} == {f"expected end moved by {moved}, not more than 0:30:00"}
    else:
        assert summary(out) == [("sent", "outage-updated", c, ch, at("2026-11-25T14:30:00+01:00"), ("u1",))
                                for c, ch in (("E", "email"), ("S", "sms"))]
        assert all(message in n.body for n in out)


def test_second_big_move_within_min_interval_is_held_and_the_latest_sent(told):
    out = feed(told, updated("u1", "2026-11-25T14:30:00+01:00", "2026-11-25T19:30:00+01:00"),
               updated("u2", "2026-11-25T15:00:00+01:00", "2026-11-25T21:00:00+01:00"),
               updated("u3", "2026-11-25T15:30:00+01:00", "2026-11-25T22:00:00+01:00"))
    assert summary(out) == [("sent", "outage-updated", "E", "email", at("2026-11-25T14:30:00+01:00"), ("u1",)),
                            ("sent", "outage-updated", "S", "sms", at("2026-11-25T14:30:00+01:00"), ("u1",))] + \
        [("coalesced", "outage-updated", c, u) for u in ("u2", "u3") for c in ("E", "S")]
    assert {s.detail for s in suppressed(out)} == {"within the minimum interval"}
    assert list(told.fire_due(at("2026-11-25T16:29:59+01:00"))) == []
    out = list(told.fire_due(at("2026-11-25T18:00:00+01:00")))
    assert summary(out) == [("sent", "outage-updated", c, ch, at("2026-11-25T16:30:00+01:00"), ("u3",))
                            for c, ch in (("E", "email"), ("S", "sms"))]
    assert all("22:00" in n.body for n in out)


def test_held_update_whose_move_is_undone_is_dropped(told):
    out = feed(told, updated("u1", "2026-11-25T14:30:00+01:00", "2026-11-25T19:30:00+01:00"),
               updated("u2", "2026-11-25T15:00:00+01:00", "2026-11-25T21:00:00+01:00"),
               updated("u3", "2026-11-25T15:30:00+01:00", "2026-11-25T19:40:00+01:00"),
               until="2026-11-25T18:00:00+01:00")
    assert [n.event_ids for n in sent(out)] == [("u1",), ("u1",)]
    assert [(s.reason, s.customer_id, s.event_id) for s in suppressed(out)] == [
        ("coalesced", c, u) for u in ("u2", "u3") for c in ("E", "S")] + [
        ("coalesced", c, "u2") for c in ("E", "S")]  # at 16:30 the outage ends 10 minutes after what they know


def test_held_update_is_dropped_when_the_outage_ends_first(told):
    out = feed(told, updated("u1", "2026-11-25T14:30:00+01:00", "2026-11-25T19:30:00+01:00"),
               updated("u2", "2026-11-25T15:00:00+01:00", "2026-11-25T21:00:00+01:00"),
               resolved("r1", "2026-11-25T15:45:00+01:00"), until="2026-11-25T18:00:00+01:00")
    assert summary(out)[-4:] == [
        ("sent", "outage-resolved", "E", "email", at("2026-11-25T15:45:00+01:00"), ("r1",)),
        ("sent", "outage-resolved", "S", "sms", at("2026-11-25T15:45:00+01:00"), ("r1",)),
        ("cancelled", "outage-updated", "E", "u2"),
        ("cancelled", "outage-updated", "S", "u2"),
    ]


# -- 6. overlapping outages ----------------------------------------------------------------------

@pytest.mark.parametrize("first_over, superseded_detail", [
    ("OUT-1", "still affected by outage OUT-2"),
    ("OUT-2", "covered by the message about outage OUT-1"),
])
def test_overlapping_outages_one_start_and_one_all_clear(shipped, first_over, superseded_detail):
    known(shipped, customer("C1", node_id="N7"))
    known(shipped, customer("C2", postcode="1012ZZ"))
    last_over = {"OUT-1": "OUT-2", "OUT-2": "OUT-1"}[first_over]
    out = feed(shipped, started("s1", "2026-11-25T14:00:00+01:00", "OUT-1", areas=["1012"]),
               started("s2", "2026-11-25T14:20:00+01:00", "OUT-2", areas=["3511"], nodes=["N7"]),
               resolved("r1", "2026-11-25T15:00:00+01:00", first_over),
               resolved("r2", "2026-11-25T16:00:00+01:00", last_over), until="2026-11-25T18:00:00+01:00")
    c2_clear = "2026-11-25T15:00:00+01:00" if first_over == "OUT-1" else "2026-11-25T16:00:00+01:00"
    c2_event = "r1" if first_over == "OUT-1" else "r2"
    assert sorted(summary(out), key=lambda o: (o[2], str(o))) == sorted([
        ("sent", "outage-started", "C1", "sms", at("2026-11-25T14:10:00+01:00"), ("s1",)),
        ("coalesced", "outage-started", "C1", "s2"),
        ("superseded", "outage-resolved", "C1", "r1"),
        ("sent", "outage-resolved", "C1", "sms", at("2026-11-25T16:00:00+01:00"), ("r2",)),
        ("sent", "outage-started", "C2", "sms", at("2026-11-25T14:10:00+01:00"), ("s1",)),
        ("sent", "outage-resolved", "C2", "sms", at(c2_clear), (c2_event,)),
    ], key=lambda o: (o[2], str(o)))
    detail = {(s.reason, s.customer_id): s.detail for s in suppressed(out)}
    assert detail[("coalesced", "C1")] == "already told about outage OUT-1"
    assert detail[("superseded", "C1")] == superseded_detail
    assert decode_state(shipped.states["C1"]).outages == {}


# -- 8. caps -------------------------------------------------------------------------------------

def test_contact_budget_suppresses_the_fourth_but_not_an_essential_message(shipped):
    known(shipped, customer("C1"))
    days = [shipped_order(f"p{i}", f"2026-11-{22 + i}T12:00:00+01:00", order_id=f"ORD-{i}") for i in range(4)]
    out = feed(shipped, *days, started("s1", "2026-11-25T14:00:00+01:00"), until="2026-11-25T15:00:00+01:00")
    assert summary(out) == [
        ("sent", "order-shipped", "C1", "email", at("2026-11-22T12:00:00+01:00"), ("p0",)),
        ("sent", "order-shipped", "C1", "email", at("2026-11-23T12:00:00+01:00"), ("p1",)),
        ("sent", "order-shipped", "C1", "email", at("2026-11-24T12:00:00+01:00"), ("p2",)),
        ("cap_exceeded", "order-shipped", "C1", "p3"),
        ("sent", "outage-started", "C1", "sms", at("2026-11-25T14:10:00+01:00"), ("s1",)),
    ]
    assert out[3].detail == "contact budget of 3 per 7 days, 0:00:00"
    # the outage message counted: a week after the first, three are still in the window
    out = feed(shipped, shipped_order("p5", "2026-11-29T13:00:00+01:00", order_id="ORD-5"),
               shipped_order("p6", "2026-11-30T13:00:00+01:00", order_id="ORD-6"))
    assert summary(out) == [("cap_exceeded", "order-shipped", "C1", "p5"),
                            ("sent", "order-shipped", "C1", "email", at("2026-11-30T13:00:00+01:00"), ("p6",))]


def test_rule_cap_one_cart_reminder_per_week(shipped):
    known(shipped, customer("C1"))
    out = feed(shipped, cart("c1", "2026-11-20T10:00:00+01:00"),
               cart("c2", "2026-11-23T10:00:00+01:00", cart_id="K2"),
               cart("c3", "2026-11-27T09:59:59+01:00", cart_id="K3"),    # due one second inside the week
               cart("c4", "2026-11-27T10:00:00+01:00", cart_id="K4"),    # due exactly a week after the first
               until="2026-11-28T12:00:00+01:00")
    assert summary(out) == [
        ("sent", "cart-reminder", "C1", "email", at("2026-11-20T11:00:00+01:00"), ("c1",)),
        ("cap_exceeded", "cart-reminder", "C1", "c2"),
        ("cap_exceeded", "cart-reminder", "C1", "c3"),
        ("sent", "cart-reminder", "C1", "email", at("2026-11-27T11:00:00+01:00"), ("c4",)),
    ]
    assert out[1].detail == "rule cap of 1 per 7 days, 0:00:00"


NOW = datetime.fromisoformat("2026-11-25T12:00:00+01:00")
DAY = timedelta(days=1)


@pytest.mark.parametrize("sent_at, reached", [
    ([], False),
    ([NOW - DAY, NOW - 2 * DAY], False),
    ([NOW - DAY, NOW - 2 * DAY, NOW - 3 * DAY], True),
    ([NOW - 7 * DAY, NOW - DAY, NOW - 2 * DAY], False),                       # exactly a window ago: out
    ([NOW - 7 * DAY + timedelta(seconds=1), NOW - DAY, NOW - 2 * DAY], True),
    ([NOW, NOW - DAY, NOW - 2 * DAY], True),                                  # now itself: in
    ([NOW + timedelta(seconds=1), NOW - DAY, NOW - 2 * DAY], False),          # later (a replay): not yet
])
def test_cap_reached_boundaries(sent_at, reached):
    assert Cap(3, timedelta(days=7)).reached(sent_at, NOW) is reached


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("10m", 600), ("1h", 3600), (" 7d ", 604800), ("2w", 1209600), (30, 30), (1.5, 1.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["10", "1y", "10 minutes", "-5m", ""])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# -- 9. no duplicates ----------------------------------------------------------------------------

def test_same_event_twice_while_pending_is_one_message(shipped):
    known(shipped, customer("C1"))
    first = cart("c1", "2026-11-25T10:00:00+01:00")
    assert feed(shipped, first, (first, "2026-11-25T10:05:00+01:00")) == []
    assert summary(shipped.fire_due(at("2026-11-25T12:00:00+01:00"))) == [
        ("sent", "cart-reminder", "C1", "email", at("2026-11-25T11:00:00+01:00"), ("c1",))]


@pytest.mark.parametrize("event, rule, key, channel", [
    (shipped_order("p1", "2026-11-25T12:00:00+01:00"), "order-shipped", "ORD-1", "email"),
    (cart("c1", "2026-11-25T12:00:00+01:00"), "cart-reminder", "K1", "email"),
    (delayed("d1", "2026-11-25T12:00:00+01:00", "2026-11-28T12:00:00+01:00"), "order-delayed", "ORD-1", "sms"),
    (started("s1", "2026-11-25T12:00:00+01:00"), "outage-started", "OUT-1", "sms"),
])
def test_redelivered_event_is_a_duplicate(shipped, event, rule, key, channel):
    known(shipped, customer("C1"))
    (first,) = feed(shipped, event, until="2026-11-25T16:00:00+01:00")
    assert first.id == notification_id(rule, key, "C1", channel, event["id"])
    assert first.id in decode_state(shipped.states["C1"]).sent_ids
    out = feed(shipped, (event, "2026-11-25T17:00:00+01:00"), until="2026-11-25T20:00:00+01:00")
    assert summary(out) == [("duplicate", rule, "C1", event["id"])]
    assert out[0].detail == f"already sent: {first.id}"


def test_redelivered_folded_event_is_a_duplicate(shipped):
    known(shipped, customer("C1"))
    d1 = delayed("d1", "2026-11-25T10:00:00+01:00", "2026-11-28T12:00:00+01:00")
    d2 = delayed("d2", "2026-11-25T11:00:00+01:00", "2026-11-30T12:00:00+01:00")
    out = feed(shipped, d1, d2, until="2026-11-25T14:00:00+01:00")
    assert [n.event_ids for n in sent(out)] == [("d1", "d2")]
    out = feed(shipped, (d2, "2026-11-25T15:00:00+01:00"), until="2026-11-25T20:00:00+01:00")
    assert summary(out) == [("duplicate", "order-delayed", "C1", "d2")]
    # a genuinely new delay for the same order is still news
    out = feed(shipped, delayed("d3", "2026-11-25T15:30:00+01:00", "2026-12-02T12:00:00+01:00"),
               until="2026-11-25T20:00:00+01:00")
    assert summary(out) == [("sent", "order-delayed", "C1", "sms", at("2026-11-25T18:30:00+01:00"), ("d3",))]


def test_notification_id_is_deterministic_and_depends_on_every_part():
    parts = ("cart-reminder", "K1", "C1", "email", "c1")
    base = notification_id(*parts)
    assert base == notification_id(*parts) and len(base) == 32 and int(base, 16) >= 0
    variants = [notification_id(*(parts[:i] + ("other",) + parts[i + 1:])) for i in range(len(parts))]
    assert len({base, *variants}) == len(parts) + 1
    # the separator keeps neighbouring parts apart
    assert notification_id("a", "bc", "C1", "sms", "e") != notification_id("ab", "c", "C1", "sms", "e")


# -- 10. opt-out and restart ---------------------------------------------------------------------

@pytest.mark.parametrize("trigger, consents, expected", [
    (cart("c1", "2026-11-25T10:00:00+01:00"), {"sms": False, "email": False},
     [("opted_out", "cart-reminder", "C1", "c1", "email", "email: opted_out")]),
    (started("s1", "2026-11-25T10:00:00+01:00"), {"sms": False, "email": False},
     [("opted_out", "outage-started", "C1", "s1", "sms", "sms: opted_out, email: opted_out")]),
    (started("s1", "2026-11-25T10:00:00+01:00"), {"sms": False, "email": True},
     [("sent", "outage-started", "C1", "email")]),
])
def test_consent_withdrawn_before_the_due_time(shipped, trigger, consents, expected):
    known(shipped, customer("C1"))
    change = upserted("u1", "2026-11-25T10:05:00+01:00", customer("C1", **consents))
    out = feed(shipped, trigger, change, until="2026-11-25T12:00:00+01:00")
    assert [("sent", o.rule, o.customer_id, o.channel) if isinstance(o, Notification)
            else (o.reason, o.rule, o.customer_id, o.event_id, o.channel, o.detail) for o in out] == expected


def test_deleted_customer_gets_nothing_pending(shipped):
    known(shipped, customer("C1"))
    gone = {"id": "g1", "type": "customer.deleted", "occurred_at": "2026-11-25T10:10:00+01:00",
            "customer_id": "C1", "data": {}}
    out = feed(shipped, cart("c1", "2026-11-25T10:00:00+01:00"), gone, until="2026-11-25T12:00:00+01:00")
    assert out == [] and "C1" not in shipped.states and len(shipped.due) == 0
    assert shipped.directory.get("C1") is None and shipped.directory.with_phone("+31612345678") == []
    [statement] = shipped.preferences.get("C1").statements  # no contact data left, and a no to everything
    assert (statement.scope, statement.allow, statement.source) == (Scope(), False, "api")
    assert "+316" not in shipped.preferences.records["C1"].decode() and "@" not in shipped.preferences.records["C1"].decode()


def test_rebuild_due_index_restores_pending_timers(shipped):
    known(shipped, customer("C1"))
    known(shipped, customer("C2", tier="premium"))
    feed(shipped, cart("c1", "2026-11-25T10:00:00+01:00"), cart("c2", "2026-11-25T10:10:00+01:00", "K2", "C2"))
    shipped.due.clear()  # the in-memory index is lost
    assert list(shipped.fire_due(at("2026-11-25T12:00:00+01:00"))) == []
    shipped.rebuild_due_index()
    assert summary(shipped.fire_due(at("2026-11-25T12:00:00+01:00"))) == [
        ("sent", "cart-reminder", "C2", "email", at("2026-11-25T10:40:00+01:00"), ("c2",)),
        ("sent", "cart-reminder", "C1", "email", at("2026-11-25T11:00:00+01:00"), ("c1",)),
    ]


def test_a_held_due_record_indexes_its_entry_again_unless_a_newer_trigger_replaced_it(shipped):
    known(shipped, customer("C1"))
    known(shipped, customer("C2"))
    feed(shipped, cart("c1", "2026-11-25T10:00:00+01:00"), cart("c2", "2026-11-25T10:00:00+01:00", "K2", "C2"))
    in_flight = {d.customer_id: d for d in shipped.due.pop_due(at("2026-11-25T12:00:00+01:00"))}
    feed(shipped, cart("c3", "2026-11-25T10:30:00+01:00", "K2", "C2"))  # C2's reminder: a newer version
    for due in in_flight.values():  # read while the worker catches up after a restart
        shipped.hold(due)
    assert summary(shipped.fire_due(at("2026-11-25T12:00:00+01:00"))) == [
        ("sent", "cart-reminder", "C1", "email", at("2026-11-25T11:00:00+01:00"), ("c1",)),
        ("sent", "cart-reminder", "C2", "email", at("2026-11-25T11:30:00+01:00"), ("c2", "c3"))]


def test_restart_from_recovered_tables_fires_only_owned_timers(shipped, renderer):
    known(shipped, customer("C1"))
    known(shipped, customer("C2"))
    feed(shipped, cart("c1", "2026-11-25T10:00:00+01:00"),
         cart("c2", "2026-11-25T10:20:00+01:00", "K2", "C2", items=(LAMP, CABLE)),
         cart("c3", "2026-11-25T10:30:00+01:00"))
    recovered = Decider(shipped.rules, renderer, CustomerDirectory(copy.deepcopy(shipped.directory.records)),
                        outages=copy.deepcopy(dict(shipped.outages)), states=copy.deepcopy(dict(shipped.states)),
                        due=DueIndex(), preferences=dict(shipped.preferences.records), links=links_for_tests())
    recovered.rebuild_due_index(owns=lambda cid: cid == "C1")
    assert summary(recovered.fire_due(at("2026-11-25T12:00:00+01:00"))) == [
        ("sent", "cart-reminder", "C1", "email", at("2026-11-25T11:30:00+01:00"), ("c1", "c3"))]
    assert list(decode_state(recovered.states["C2"]).pending) == ["cart-reminder|K2"]


# -- 11. tiers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tier, consents, expected", [
    ("basic", {}, [("sent", "email")]),
    ("standard", {}, [("sent", "sms")]),
    ("premium", {}, [("sent", "sms"), ("sent", "email")]),  # premium: SMS and email
    ("premium", {"email": False}, [("sent", "sms")]),
    ("standard", {"sms": False}, [("sent", "email")]),
    ("basic", {"email": False}, [("opted_out", "email")]),  # basic never falls back to SMS
])
def test_order_delayed_channels_per_tier(shipped, tier, consents, expected):
    known(shipped, customer("C1", tier=tier, **consents))
    handled = list(shipped.handle(D1, at(D1["occurred_at"])))
    fired = list(shipped.fire_due(at("2026-11-25T14:00:00+01:00")))
    out = handled + fired
    assert [("sent", o.channel) if isinstance(o, Notification) else (o.reason, o.channel) for o in out] == expected
    if expected[0][0] == "sent":
        assert handled == [] and at(fired[0].created_at) == at("2026-11-25T13:00:00+01:00")
    else:  # refused when the trigger comes in, not three hours later
        assert fired == [] and handled[0].event_id == "d1"
