"""Quiet hours: the customer's own night, across midnight and daylight-saving changes, and per rule."""

from __future__ import annotations

from datetime import time, timedelta, timezone

import pytest

from streams.core.policy import QuietHours
from tests.fakes import known
from tests.core.test_policy import (at, cart, checkout, customer, decider_from, feed, rules_file, shipped_order,
                                    summary)
from tests.core.test_policy import shipped  # noqa: F401  (fixture)

NIGHT = QuietHours(time(21, 0), time(8, 0))


@pytest.mark.parametrize("window, moment, tz, end", [
    (NIGHT, "2026-11-25T22:30:00+01:00", "Europe/Amsterdam", "2026-11-26T08:00:00+01:00"),
    (NIGHT, "2026-11-25T23:50:00+01:00", "Europe/Amsterdam", "2026-11-26T08:00:00+01:00"),
    (NIGHT, "2026-11-26T02:00:00+01:00", "Europe/Amsterdam", "2026-11-26T08:00:00+01:00"),
    (NIGHT, "2026-11-25T21:00:00+01:00", "Europe/Amsterdam", "2026-11-26T08:00:00+01:00"),
    (NIGHT, "2026-11-25T20:59:59+01:00", "Europe/Amsterdam", None),
    (NIGHT, "2026-11-26T08:00:00+01:00", "Europe/Amsterdam", None),
    (NIGHT, "2026-11-26T07:59:59+01:00", "Europe/Amsterdam", "2026-11-26T08:00:00+01:00"),
    # 25 October 2026: clocks go back at 03:00 CEST; the night is an hour longer, still ending at 08:00
    (NIGHT, "2026-10-24T23:30:00+02:00", "Europe/Amsterdam", "2026-10-25T08:00:00+01:00"),
    (NIGHT, "2026-10-25T02:30:00+02:00", "Europe/Amsterdam", "2026-10-25T08:00:00+01:00"),
    (NIGHT, "2026-10-25T02:30:00+01:00", "Europe/Amsterdam", "2026-10-25T08:00:00+01:00"),
    # 29 March 2026: clocks go forward at 02:00 CET
    (NIGHT, "2026-03-28T22:00:00+01:00", "Europe/Amsterdam", "2026-03-29T08:00:00+02:00"),
    (NIGHT, "2026-03-29T03:30:00+02:00", "Europe/Amsterdam", "2026-03-29T08:00:00+02:00"),
    # the customer's own night
    (NIGHT, "2026-11-25T22:30:00+01:00", "America/New_York", None),                        # 16:30 there
    (NIGHT, "2026-11-26T03:30:00+01:00", "America/New_York", "2026-11-26T08:00:00-05:00"),  # 21:30 there
    (NIGHT, "2026-11-25T13:30:00+01:00", "Asia/Tokyo", "2026-11-26T08:00:00+09:00"),        # 21:30 there
    (NIGHT, "2026-11-25T22:30:00+01:00", None, "2026-11-26T08:00:00+01:00"),                 # default zone
    # a window within one day
    (QuietHours(time(12), time(14)), "2026-11-25T13:00:00+01:00", "Europe/Amsterdam", "2026-11-25T14:00:00+01:00"),
    (QuietHours(time(12), time(14)), "2026-11-25T12:00:00+01:00", "Europe/Amsterdam", "2026-11-25T14:00:00+01:00"),
    (QuietHours(time(12), time(14)), "2026-11-25T14:00:00+01:00", "Europe/Amsterdam", None),
    (QuietHours(time(12), time(14)), "2026-11-25T11:59:00+01:00", "Europe/Amsterdam", None),
    (QuietHours(time(12), time(14)), "2026-11-25T23:00:00+01:00", "Europe/Amsterdam", None),
    # start == end: no quiet hours at all
    (QuietHours(time(9), time(9)), "2026-11-25T09:00:00+01:00", "Europe/Amsterdam", None),
    (QuietHours(time(0), time(0)), "2026-11-25T03:00:00+01:00", "Europe/Amsterdam", None),
])
def test_deferral(window, moment, tz, end):
    result = window.deferral(at(moment), tz)
    assert result == (at(end) if end else None)
    if result is not None:  # exact instant, expressed in the zone of the moment given
        assert result.utcoffset() == at(moment).utcoffset()


def test_deferral_keeps_a_utc_moment_in_utc():
    end = NIGHT.deferral(at("2026-10-24T21:30:00+00:00"), "Europe/Amsterdam")
    assert end == at("2026-10-25T07:00:00+00:00") and end.tzinfo == timezone.utc


@pytest.mark.parametrize("due, tz, send", [
    ("2026-11-25T22:30:00+01:00", "Europe/Amsterdam", "2026-11-26T08:00:00+01:00"),
    ("2026-11-25T23:50:00+01:00", "Europe/Amsterdam", "2026-11-26T08:00:00+01:00"),
    ("2026-11-26T02:00:00+01:00", "Europe/Amsterdam", "2026-11-26T08:00:00+01:00"),
    ("2026-11-25T20:59:00+01:00", "Europe/Amsterdam", None),
    ("2026-10-24T23:30:00+02:00", "Europe/Amsterdam", "2026-10-25T08:00:00+01:00"),
    ("2026-03-28T22:00:00+01:00", "Europe/Amsterdam", "2026-03-29T08:00:00+02:00"),
    ("2026-11-25T22:30:00+01:00", "America/New_York", None),
    ("2026-11-26T03:30:00+01:00", "America/New_York", "2026-11-26T08:00:00-05:00"),
], ids=["22:30", "23:50", "02:00", "20:59", "dst-back", "dst-forward", "new-york-afternoon", "new-york-night"])
def test_message_due_at_night_is_deferred_to_the_morning(shipped, due, tz, send):  # noqa: F811
    known(shipped, customer("C1", tz=tz))
    out = feed(shipped, shipped_order("p1", due))
    if send is None:
        assert summary(out) == [("sent", "order-shipped", "C1", "email", at(due), ("p1",))]
        return
    assert summary(out) == [("quiet_hours", "order-shipped", "C1", "p1")]
    assert at(out[0].detail.removeprefix("deferred to ")) == at(send)
    assert list(shipped.fire_due(at(send) - timedelta(seconds=1))) == []
    assert summary(shipped.fire_due(at(send) + timedelta(days=1))) == [
        ("sent", "order-shipped", "C1", "email", at(send), ("p1",))]


def test_held_message_falling_due_at_night_waits_for_the_morning(shipped):  # noqa: F811
    known(shipped, customer("C1"))
    out = feed(shipped, cart("c1", "2026-11-25T21:00:00+01:00"), cart("c2", "2026-11-25T21:30:00+01:00"),
               until="2026-11-26T07:59:59+01:00")
    assert summary(out) == [("coalesced", "cart-reminder", "C1", "c1"), ("quiet_hours", "cart-reminder", "C1", "c2")]
    assert at(out[1].at) == at("2026-11-25T22:30:00+01:00")
    assert at(out[1].detail.removeprefix("deferred to ")) == at("2026-11-26T08:00:00+01:00")
    assert summary(shipped.fire_due(at("2026-11-26T12:00:00+01:00"))) == [
        ("sent", "cart-reminder", "C1", "email", at("2026-11-26T08:00:00+01:00"), ("c1", "c2"))]


def test_checkout_during_the_night_cancels_the_deferred_reminder(shipped):  # noqa: F811
    known(shipped, customer("C1"))
    out = feed(shipped, cart("c1", "2026-11-25T21:30:00+01:00"), checkout("x1", "2026-11-26T07:00:00+01:00"),
               until="2026-11-26T12:00:00+01:00")
    assert summary(out) == [("quiet_hours", "cart-reminder", "C1", "c1"), ("cancelled", "cart-reminder", "C1", "c1")]


SHIPPED_RULE = """\
  - id: order-shipped
    on: order.shipped
    category: service
    channels: [email]
    template: order_shipped
"""


@pytest.mark.parametrize("extra, defaults, due, send", [
    ("    urgent: true\n", "", "2026-11-25T22:30:00+01:00", None),
    ("    urgent: true\n", "", "2026-11-26T03:00:00+01:00", None),
    ("    quiet_hours: false\n", "", "2026-11-26T03:00:00+01:00", None),
    ('    quiet_hours: {start: "22:00", end: "07:00"}\n', "", "2026-11-25T21:30:00+01:00", None),
    ('    quiet_hours: {start: "22:00", end: "07:00"}\n', "", "2026-11-25T22:30:00+01:00", "2026-11-26T07:00:00+01:00"),
    ("", 'defaults:\n  quiet_hours: {start: "20:00", end: "09:00"}\n', "2026-11-25T20:30:00+01:00",
     "2026-11-26T09:00:00+01:00"),
    ('    quiet_hours: {start: "12:00", end: "14:00"}\n', 'defaults:\n  quiet_hours: {start: "20:00", end: "09:00"}\n',
     "2026-11-25T20:30:00+01:00", None),   # the rule's own window replaces the default
    ('    quiet_hours: {start: "12:00", end: "14:00"}\n', "", "2026-11-25T13:00:00+01:00", "2026-11-25T14:00:00+01:00"),
    ("", "", "2026-11-25T22:30:00+01:00", "2026-11-26T08:00:00+01:00"),   # built-in default 21:00-08:00
], ids=["urgent-evening", "urgent-night", "off", "own-window-before", "own-window-inside", "defaults",
        "rule-overrides-defaults", "same-day-window", "built-in"])
def test_quiet_hours_settings(tmp_path, renderer, schemas, extra, defaults, due, send):
    decider = decider_from(rules_file(tmp_path, SHIPPED_RULE + extra, defaults), renderer, schemas)
    known(decider, customer("C1"))
    out = feed(decider, shipped_order("p1", due), until="2026-11-27T00:00:00+01:00")
    if send is None:
        assert summary(out) == [("sent", "order-shipped", "C1", "email", at(due), ("p1",))]
    else:
        assert summary(out) == [("quiet_hours", "order-shipped", "C1", "p1"),
                                ("sent", "order-shipped", "C1", "email", at(send), ("p1",))]
        assert out[0].detail == f"deferred to {at(send).isoformat()}"
