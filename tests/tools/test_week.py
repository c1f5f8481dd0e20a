"""A generated week through the simulator: restraint holds for every customer."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

import orjson
import pytest

from streams.core.config import load_config
from streams.tools.generate import WeekSpec, generate_week
from streams.settings import Settings
from streams.tools.simulate import simulate


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    out = tmp_path_factory.mktemp("week")
    customers, events = generate_week(WeekSpec(customers=2_000, postcodes=100, outages=12, seed=7), out)
    config = load_config(Settings.from_env())
    report = simulate(config, customers, events, out / "sim")
    read = lambda name: [orjson.loads(line) for line in (out / "sim" / name).read_bytes().splitlines()]  # noqa: E731
    zones = {c["customer_id"]: c["timezone"] for c in map(orjson.loads, customers.read_bytes().splitlines())}
    return config, report, read("notifications.jsonl"), read("suppressed.jsonl"), [
        orjson.loads(line) for line in events.read_bytes().splitlines()], zones


def test_every_input_is_accepted_and_every_id_is_unique(week):
    _, report, sent, _, events, _ = week
    assert report.rejected == 0 and report.events == len(events)
    assert len({n["id"] for n in sent}) == len(sent) > 1000


def test_non_essential_contacts_never_exceed_the_budget(week):
    config, report, sent, suppressed, _, _ = week
    budget = config.rules.budget
    assert report.most_contacts(budget.per, essential=False) <= budget.count
    assert any(s["reason"] == "cap_exceeded" for s in suppressed)
    assert not any(s["reason"] == "cap_exceeded" and config.rules.get(s["rule"]).essential for s in suppressed)


def test_at_most_one_cart_reminder_per_customer_per_week(week):
    _, _, sent, _, _, _ = week
    reminders = Counter(n["customer_id"] for n in sent if n["rule"] == "cart-reminder")
    assert reminders and max(reminders.values()) == 1


def test_no_message_in_quiet_hours_in_the_customers_own_time_zone(week):
    from zoneinfo import ZoneInfo

    _, _, sent, suppressed, _, zones = week
    assert {"Europe/Amsterdam", "Europe/London"} <= set(zones.values())
    for n in sent:
        local = datetime.fromisoformat(n["created_at"]).astimezone(ZoneInfo(zones[n["customer_id"]]))
        assert 8 <= local.hour < 21, n
    assert any(s["reason"] == "quiet_hours" for s in suppressed)


def test_blips_reach_nobody_and_every_resolved_customer_was_told(week):
    _, _, sent, _, events, _ = week
    started = {e["data"]["outage_id"]: datetime.fromisoformat(e["occurred_at"]) for e in events if e["type"] == "outage.started"}
    resolved = {e["data"]["outage_id"]: datetime.fromisoformat(e["occurred_at"]) for e in events if e["type"] == "outage.resolved"}
    blips = {o for o in started if resolved[o] - started[o] < timedelta(minutes=5)}
    assert blips
    told = defaultdict(set)
    for n in sent:
        if n["rule"] == "outage-started":
            told[n["key"]].add((n["customer_id"], n["channel"]))
    assert not blips & set(told)
    for n in sent:
        if n["rule"] == "outage-resolved":
            assert any(c == n["customer_id"] for key in told for c, _ in told[key]), n
