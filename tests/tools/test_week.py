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


def test_customers_contact_support_about_outages_orders_and_other_things(week):
    _, _, _, _, events, zones = week
    contacts = [e for e in events if e["type"] == "support.contacted"]
    assert {c["data"]["topic"] for c in contacts} >= {"outage", "other"}
    assert {c["data"]["topic"] for c in contacts} & {"order", "delivery"}
    assert all(c["customer_id"] in zones for c in contacts)
    outages = {e["data"]["outage_id"] for e in events if e["type"] == "outage.started"}
    linked = [c["data"]["outage_id"] for c in contacts if "outage_id" in c["data"]]
    assert linked and set(linked) <= outages
    assert any(c["data"]["topic"] == "outage" and "outage_id" not in c["data"] for c in contacts)


def test_support_contacts_are_deterministic_and_leave_every_other_event_as_it_was(tmp_path):
    spec = WeekSpec(customers=300, postcodes=20, outages=5, seed=3)
    first = generate_week(spec, tmp_path / "a")[1].read_bytes()
    assert generate_week(spec, tmp_path / "b")[1].read_bytes() == first
    without = generate_week(replace(spec, support=False), tmp_path / "c")[1].read_bytes()
    contacts = [line for line in first.splitlines() if b'"support.contacted"' in line]
    assert contacts and [line for line in first.splitlines() if line not in contacts] == without.splitlines()
    other_seed = generate_week(replace(spec, seed=4), tmp_path / "d")[1].read_bytes()
    assert [line for line in other_seed.splitlines() if b'"support.contacted"' in line] != contacts


def test_the_deflection_report_of_the_week_compares_customers_told_and_not_told(week_files):
    from streams.tools.deflection import lines, report_from_simulation

    _, customers, events = week_files
    rows = report_from_simulation(load_config(Settings.from_env()), customers, events, timedelta(days=3))
    by_rule = {row.rule: row for row in rows}
    assert "cart-reminder" not in by_rule  # support contacts are about outages and orders
    started = by_rule["outage-started"]
    assert started.told > 0 and started.not_told > 0
    # The generator's model: those it expects not to be told call more often.
    assert started.not_told_share > started.told_share and started.difference > 0
    table = lines(rows)
    assert table[0].split()[:3] == ["rule", "told", "called"] and len(table) == len(rows) + 1
    shown = next(line for line in table if line.startswith("outage-started "))
    assert f"{100 * started.difference:+.1f} points" in shown and f" {started.told} " in shown
