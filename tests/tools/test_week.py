"""A generated week through the simulator: restraint holds for every customer."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
import pytest

from streams.core.config import load_config
from streams.tools.generate import WeekSpec, generate_week
from streams.settings import ROOT, Settings
from streams.tools.simulate import simulate

SHIPPED_BUDGET = "budget: {count: 3, per: 7d}"
RESERVED_BUDGET = "budget: {count: 3, per: 7d, reserve: {priority: 70, count: 1}}"

pytestmark = pytest.mark.xdist_group("week")  # one xdist worker: the week is generated and simulated once


@pytest.fixture(scope="module")
def week_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("week")
    return out, *generate_week(WeekSpec(customers=2_000, postcodes=100, outages=12, seed=7), out)


@pytest.fixture(scope="module")
def week(week_files):
    out, customers, events = week_files
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


def budget_held(suppressed: list[dict]) -> list[dict]:
    return [s for s in suppressed if s["reason"] == "cap_exceeded" and s["detail"].startswith("contact budget of")]


def contacts_in_order(sent: list[dict]) -> list[tuple[str, datetime, str]]:
    """(customer, moment, rule) per contact, in the order decided; a message on two channels is one contact."""
    seen, found = set(), []
    for n in sent:
        contact = (n["customer_id"], datetime.fromisoformat(n["created_at"]), f"{n['rule']}|{n['key']}")
        if contact not in seen:
            seen.add(contact)
            found.append((contact[0], contact[1], n["rule"]))
    return found


def test_the_report_counts_budget_use_per_priority(week):
    config, report, sent, suppressed, _, _ = week
    assert sum(t.contacts for t in report.by_band.values()) == len(contacts_in_order(sent))
    assert sum(t.held_by_budget for t in report.by_band.values()) == len(budget_held(suppressed)) > 0
    lines = report.budget_use(config.rules.budget)
    assert lines[0].startswith("priority 100 (essential, never held back):") and "0 held back" in lines[0]
    assert any(line.startswith("priority 30 (may use all 3):") for line in lines)


@pytest.fixture(scope="module")
def reserved_week(week_files):
    out, customers, events = week_files
    shipped = (ROOT / "config" / "rules.yaml").read_text(encoding="utf-8")
    assert SHIPPED_BUDGET in shipped
    rules = out / "rules_reserved.yaml"
    rules.write_text(shipped.replace(SHIPPED_BUDGET, RESERVED_BUDGET), encoding="utf-8")
    config = load_config(replace(Settings.from_env(), rules_file=rules))
    report = simulate(config, customers, events, out / "sim_reserved")
    read = lambda name: [orjson.loads(line) for line in (out / "sim_reserved" / name).read_bytes().splitlines()]  # noqa: E731
    return config, report, read("notifications.jsonl"), read("suppressed.jsonl")


def test_with_a_reserve_low_priorities_leave_the_last_contact_to_high_ones(week, reserved_week):
    config, report, sent, suppressed = reserved_week
    rules, window = config.rules, config.rules.budget.per
    earlier: dict[str, list[datetime]] = defaultdict(list)
    for customer_id, moment, rule_id in contacts_in_order(sent):
        rule = rules.get(rule_id)
        if not rule.essential:
            before = sum(1 for at in earlier[customer_id] if moment - window < at <= moment)
            assert before < (2 if rule.priority < 70 else 3), (customer_id, moment, rule_id)
        earlier[customer_id].append(moment)
    held = Counter(s["rule"] for s in budget_held(suppressed))
    held_without = Counter(s["rule"] for s in budget_held(week[3]))
    assert held["order-delayed"] < held_without["order-delayed"]
    assert held["order-shipped"] > held_without["order-shipped"]
    assert any("reserved for priority >= 70" in s["detail"] for s in budget_held(suppressed))
    assert any(line.startswith("priority 30 (up to 2 of 3, the rest reserved):")
               for line in report.budget_use(rules.budget))
