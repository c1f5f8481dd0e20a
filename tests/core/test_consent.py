"""Preferences: statements with provenance, the newest one wins; marketing needs its own yes."""

from __future__ import annotations

import pytest

from streams.core.consent import (MARKETING, NO_MARKETING_CONSENT, OPTED_OUT, SERVICE, PreferenceBook,
                                  PreferenceChange, Preferences, Scope, Statement, decode)
from streams.core.events import Schemas

T1, T2, T3 = "2026-11-25T10:00:00+00:00", "2026-11-25T11:00:00+00:00", "2026-11-25T12:00:00+00:00"
CRM = {"sms": True, "email": True, "marketing": {"email": True}}


def said(scope: Scope, allow: bool, at: str, source: str = "support") -> Statement:
    return Statement(scope, allow, at, source)


def preferences(*statements: Statement, crm: dict | None = CRM, crm_at: str = T1) -> Preferences:
    prefs = Preferences("C1")
    if crm is not None:
        prefs.from_crm(crm, crm_at)
    for statement in statements:
        prefs.state(statement)
    return prefs


@pytest.mark.parametrize("statements, channel, category, expected", [
    ((), "sms", SERVICE, None),
    ((), "email", MARKETING, None),
    ((), "sms", MARKETING, NO_MARKETING_CONSENT),  # the CRM gave marketing consent for email only
    ((said(Scope("sms"), False, T2, "sms-stop"),), "sms", SERVICE, OPTED_OUT),
    ((said(Scope("sms"), False, T2, "sms-stop"),), "email", SERVICE, None),  # a STOP is about SMS only
    ((said(Scope("sms"), False, T2), said(Scope("sms"), True, T3, "sms-stop")), "sms", SERVICE, None),  # START
    ((said(Scope("email", MARKETING), False, T2, "unsubscribe-link"),), "email", MARKETING, OPTED_OUT),
    ((said(Scope("email", MARKETING), False, T2, "unsubscribe-link"),), "email", SERVICE, None),
    ((said(Scope("email", rule="cart-reminder"), False, T2),), "email", MARKETING, OPTED_OUT),
    # A yes to email in general after an unsubscribe is not marketing consent: that needs its own yes.
    ((said(Scope("email", MARKETING), False, T2), said(Scope("email"), True, T3)), "email", MARKETING,
     NO_MARKETING_CONSENT),
    ((said(Scope("email", MARKETING), False, T2), said(Scope("email", MARKETING), True, T3)), "email", MARKETING,
     None),
    # At the same moment, the no wins.
    ((said(Scope("sms"), True, T2), said(Scope(), False, T2)), "sms", SERVICE, OPTED_OUT),
])
def test_the_newest_statement_covering_a_message_decides(statements, channel, category, expected):
    assert preferences(*statements).withheld(channel, category, "cart-reminder") == expected


def test_an_older_statement_arriving_late_does_not_undo_a_newer_one():
    prefs = preferences(said(Scope("sms"), False, T3, "sms-stop"))
    assert not prefs.state(said(Scope("sms"), True, T2))
    assert prefs.withheld("sms", SERVICE, "outage-started") == OPTED_OUT


def test_a_crm_upsert_that_repeats_its_consent_does_not_undo_a_stop():
    prefs = preferences(said(Scope("sms"), False, T2, "sms-stop"))
    assert not prefs.from_crm(CRM, T3)  # the same answer again, later: no news
    assert prefs.withheld("sms", SERVICE, "outage-started") == OPTED_OUT


def test_a_crm_that_changes_its_answer_or_dates_a_renewed_consent_is_news():
    prefs = preferences(said(Scope("sms"), False, T2, "sms-stop"))
    assert prefs.from_crm({**CRM, "sms": True, "updated_at": T3}, T3)  # renewed in the shop, dated after the STOP
    assert prefs.withheld("sms", SERVICE, "outage-started") is None
    prefs = preferences(said(Scope("sms"), False, T2, "sms-stop"))
    assert prefs.from_crm({**CRM, "sms": False}, T2)
    assert prefs.from_crm({**CRM, "sms": True}, T3)  # the CRM said no, then yes again: that yes is news
    assert prefs.withheld("sms", SERVICE, "outage-started") is None


def test_a_dated_crm_consent_older_than_the_opt_out_loses():
    prefs = preferences(said(Scope("sms"), False, T2, "sms-stop"))
    prefs.from_crm({**CRM, "updated_at": T1}, T3)
    assert prefs.withheld("sms", SERVICE, "outage-started") == OPTED_OUT


def test_the_book_keeps_compact_json_and_forgets():
    book = PreferenceBook()
    assert book.withheld("C9", "email", MARKETING, "cart-reminder") == NO_MARKETING_CONSENT  # never asked
    assert book.withheld("C9", "email", SERVICE, "order-shipped") is None
    assert book.from_crm("C9", CRM, T1) and not book.from_crm("C9", CRM, T2)
    assert decode(book.records["C9"], "C9").withheld("email", MARKETING, "cart-reminder") is None
    assert Schemas().problems("preferences.json", __import__("orjson").loads(book.records["C9"])) == []
    book.forget("C9", T2)
    assert book.withheld("C9", "email", SERVICE, "order-shipped") == OPTED_OUT  # nothing queued or parked goes
    assert [s.detail for s in book.get("C9").statements] == ["forgotten (customer.deleted)"] and not book.get("C9").crm
    assert book.from_crm("C9", CRM, T3)  # signed up again, later: the CRM's consents hold once more
    assert book.withheld("C9", "email", SERVICE, "order-shipped") is None


def test_a_consent_record_round_trips_and_bad_ones_are_refused():
    change = PreferenceChange((said(Scope("sms"), False, T2, "sms-stop"),), phone="+31612345678")
    record = change.to_record()
    assert Schemas().problems("consent.json", record) == []
    assert PreferenceChange.of(record, 3) == PreferenceChange(change.statements, None, "+31612345678", 3)
    for bad in ({"statements": []} | {"customer_id": None},
                {"customer_id": "C1", "statements": [{**record["statements"][0], "source": "rumour"}]},
                {"customer_id": "C1", "statements": [{**record["statements"][0], "at": "yesterday"}]},
                {"customer_id": "C1", "statements": [{**record["statements"][0], "allow": "no"}]},
                {"customer_id": "C1"}):
        with pytest.raises(ValueError):
            PreferenceChange.of(bad)
