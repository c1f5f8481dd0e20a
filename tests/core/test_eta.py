"""ETAs as carriers give them: a date, a timestamp with offset, or a window {from, to}.

The schema takes all three and refuses junk in words; the ``eta`` filter says each naturally in the
customer's locale and zone; comparisons and the range checks accept every form.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from streams.core.eta import Window, eta_start, parse_eta
from streams.core.events import parse_event
from streams.core.render import Renderer
from streams.errors import EventError

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"

# Wednesday 3 December 2025; Amsterdam is UTC+1 then.
DATE = "2025-12-03"
STAMP = "2025-12-03T14:00:00+01:00"
WINDOW = {"from": "2025-12-03T14:00:00+01:00", "to": "2025-12-03T16:00:00+01:00"}
NIGHT = {"from": "2025-12-03T21:00:00Z", "to": "2025-12-04T09:00:00Z"}  # 22:00 to 10:00 in Amsterdam
IN_WORDS = ("must be a date like 2026-12-03, a timestamp with offset like 2026-12-03T14:00:00+01:00, "
            "or a window {from, to}")


def example(event_type: str) -> dict:
    schema = json.loads((ROOT / "schemas" / "events" / f"{event_type}.json").read_text(encoding="utf-8"))
    return copy.deepcopy(schema["examples"][0])


def delayed(new_eta, old_eta="2025-12-01T18:00:00+01:00") -> dict:
    event = example("order.delayed")
    event["data"].update(new_eta=new_eta, old_eta=old_eta)
    return event


def refusal(event: dict) -> str:
    with pytest.raises(EventError) as caught:
        parse_event(orjson.dumps(event))
    return str(caught.value)


# --------------------------------------------------------------------------- schema and event checks

@pytest.mark.parametrize("eta", [DATE, STAMP, "2025-12-03T13:00:00Z", WINDOW, NIGHT], ids=repr)
def test_every_eta_form_is_accepted_for_delayed_and_shipped_orders(eta):
    assert parse_event(orjson.dumps(delayed(eta, old_eta=eta)))["data"]["new_eta"] == eta
    shipped = example("order.shipped")
    shipped["data"]["eta"] = eta
    assert parse_event(orjson.dumps(shipped))["data"]["eta"] == eta


@pytest.mark.parametrize("junk", ["3 december", "2025-12-03T14:00:00", "2025-12-03 14:00:00+01:00", 20251203, [DATE]],
                         ids=repr)
def test_junk_is_refused_in_words_not_as_a_regex(junk):
    reason = refusal(delayed(junk))
    assert f"data/new_eta: {junk!r} {IN_WORDS}" in reason
    assert "\\d" not in reason and "does not match" not in reason


def test_a_window_with_a_bad_end_names_the_end_and_the_form_it_needs():
    reason = refusal(delayed({"from": "2025-12-03T14:00:00+01:00", "to": "2025-12-03T16:00"}))
    assert "data/new_eta/to: '2025-12-03T16:00' must be a timestamp with offset like 2026-12-03T14:00:00+01:00" in reason


@pytest.mark.parametrize("window", [{"from": WINDOW["from"]}, {**WINDOW, "until": WINDOW["to"]}], ids=repr)
def test_a_window_needs_exactly_from_and_to(window):
    assert refusal(delayed(window)).startswith("schema: data/new_eta")


def test_an_occurred_at_without_offset_is_refused_in_words_too():
    event = delayed(DATE)
    event["occurred_at"] = "2025-11-25T09:05:00"
    assert "occurred_at: '2025-11-25T09:05:00' must be a timestamp with offset like" in refusal(event)


@pytest.mark.parametrize("eta", ["2125-12-03", "1999-12-31", {"from": "2125-12-03T14:00:00Z", "to": "2125-12-03T16:00:00Z"}],
                         ids=repr)
def test_dates_and_windows_outside_2000_to_2100_are_refused(eta):
    assert "is outside 2000 to 2100" in refusal(delayed(eta))


def test_a_date_that_is_not_on_the_calendar_is_refused():
    assert "not a calendar date: '2025-02-30'" in refusal(delayed("2025-02-30"))


def test_a_window_that_ends_before_it_starts_is_refused():
    backwards = {"from": WINDOW["to"], "to": WINDOW["from"]}
    assert "window ends before it starts" in refusal(delayed(backwards))


# --------------------------------------------------------------------------- the eta filter

@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def say(renderer: Renderer, eta, locale: str, tz: str = "Europe/Amsterdam") -> str:
    return renderer.env.from_string("{{ eta|eta }}").render(eta=eta, locale=locale, tz=tz)


@pytest.mark.parametrize(("eta", "nl", "en"), [
    (DATE, "woensdag 3 december", "Wednesday 3 December"),
    (STAMP, "woensdag 3 december", "Wednesday 3 December"),
    (WINDOW, "woensdag 3 december tussen 14:00 en 16:00", "Wednesday 3 December between 14:00 and 16:00"),
    (NIGHT, "tussen woensdag 3 december 22:00 en donderdag 4 december 10:00",
     "between Wednesday 3 December 22:00 and Thursday 4 December 10:00"),
], ids=["date", "timestamp", "window", "overnight window"])
def test_the_eta_filter_says_each_form_naturally(renderer, eta, nl, en):
    assert say(renderer, eta, "nl") == nl
    assert say(renderer, eta, "en") == en


def test_the_eta_filter_says_a_timestamp_exactly_as_the_date_filter_does(renderer):
    for stamp in (STAMP, "2025-12-03T23:30:00Z", "2025-12-03T12:00:00"):  # the last: naive, read as UTC
        for locale in ("nl", "en"):
            as_date = renderer.env.from_string("{{ v|date }}").render(v=stamp, locale=locale, tz="Europe/Amsterdam")
            assert say(renderer, stamp, locale) == as_date


def test_a_window_is_said_in_the_customers_zone(renderer):
    utc = {"from": "2025-12-03T13:00:00Z", "to": "2025-12-03T15:00:00Z"}
    assert say(renderer, utc, "en", tz="Europe/Amsterdam") == "Wednesday 3 December between 14:00 and 16:00"
    assert say(renderer, utc, "en", tz="America/New_York") == "Wednesday 3 December between 08:00 and 10:00"


# --------------------------------------------------------------------------- comparisons

def test_eta_start_compares_a_window_by_its_from_and_a_date_by_its_start_of_day():
    amsterdam = ZoneInfo("Europe/Amsterdam")
    assert eta_start(WINDOW) == datetime(2025, 12, 3, 13, tzinfo=timezone.utc)
    assert eta_start(DATE) == datetime(2025, 12, 3, tzinfo=timezone.utc)
    assert eta_start(DATE, amsterdam) == datetime(2025, 12, 2, 23, tzinfo=timezone.utc)
    assert eta_start(DATE, amsterdam) < eta_start(STAMP) == eta_start(WINDOW) < eta_start("2025-12-04")


def test_parse_eta_refuses_what_is_not_an_eta():
    assert parse_eta(WINDOW) == Window(datetime.fromisoformat(WINDOW["from"]), datetime.fromisoformat(WINDOW["to"]))
    for junk in ("2025-12-03T14:00:00", "soon", {"from": STAMP}, 3):
        with pytest.raises(ValueError):
            parse_eta(junk)


# --------------------------------------------------------------------------- the shipped order templates

def customer(locale: str) -> dict:
    return {"id": "C1009", "name": "Sanne de Vries", "phone": "+31612345678", "email": "sanne@example.nl",
            "locale": locale, "timezone": "Europe/Amsterdam", "tier": "standard"}


@pytest.mark.parametrize(("locale", "eta", "said"), [
    ("nl", DATE, "Nieuwe verwachte bezorgdatum: woensdag 3 december"),
    ("en", DATE, "New expected delivery date: Wednesday 3 December"),
    ("nl", WINDOW, "Nieuwe verwachte bezorgdatum: woensdag 3 december tussen 14:00 en 16:00"),
    ("en", WINDOW, "New expected delivery date: Wednesday 3 December between 14:00 and 16:00"),
])
def test_order_delayed_templates_say_a_date_or_window_eta(renderer, locale, eta, said):
    event = parse_event(orjson.dumps(delayed(eta, old_eta="2025-12-01")))  # as it comes in
    sms = renderer.render("sms", locale, "order_delayed", event=event, customer=customer(locale))
    email = renderer.render("email", locale, "order_delayed", event=event, customer=customer(locale))
    assert said + "." in sms.body
    assert said in email.body and said.split(": ")[1] in email.html
    assert ("maandag 1 december" if locale == "nl" else "Monday 1 December") in email.body


@pytest.mark.parametrize("locale", ["nl", "en"])
def test_order_shipped_templates_say_a_window_eta(renderer, locale):
    event = example("order.shipped")
    event["data"]["eta"] = WINDOW
    said = "woensdag 3 december tussen 14:00 en 16:00" if locale == "nl" else "Wednesday 3 December between 14:00 and 16:00"
    for channel in ("sms", "email"):
        assert said in renderer.render(channel, locale, "order_shipped", event=event, customer=customer(locale)).body


@pytest.mark.parametrize(("new_eta", "later"), [
    (WINDOW, True),  # from 14:00 Amsterdam, after 13:00 Amsterdam
    ("2025-12-03T11:59:00Z", False),  # 12:59 in Amsterdam
    ("2025-12-04", True),
    ("2025-12-03", False),  # starts at midnight in the customer's zone
], ids=repr)
def test_a_condition_compares_etas_of_any_form_by_when_they_start(renderer, new_eta, later):
    condition = renderer.compile_expression("event.data.new_eta|eta_start > event.data.old_eta|eta_start")
    event = parse_event(orjson.dumps(delayed(new_eta, old_eta="2025-12-03T13:00:00+01:00")))
    assert condition(event=event, customer=customer("nl")) is later
