"""Rules load with line numbers, and every mistake ops can make is named with its line."""

from __future__ import annotations

import textwrap

import pytest

from streams.core.rules import check_rules, load_rules
from streams.errors import RulesInvalid
from streams.settings import ROOT
from tests.conftest import write

GOOD = """\
version: 1
rules:
  - id: order-delayed
    on: order.delayed
    category: service
    when: "event.data.new_eta|eta_start > event.data.old_eta|eta_start"
    channels: [sms, email]
    template: order_delayed
"""


def problems_for(tmp_path, text, renderer, schemas):
    path = write(tmp_path / "rules.yaml", textwrap.dedent(text))
    ruleset, problems = check_rules(path, renderer, schemas)
    return ruleset, [(p.line, p.message) for p in problems], path


def test_shipped_rules_are_valid(renderer, schemas):
    ruleset = load_rules(ROOT / "config" / "rules.yaml", renderer, schemas)
    assert {"outage-started", "outage-resolved", "order-delayed", "cart-reminder"} <= {r.id for r in ruleset.rules}


def test_on_key_is_a_string_not_yaml_1_1_true(tmp_path, renderer, schemas):
    ruleset, problems, _ = problems_for(tmp_path, GOOD, renderer, schemas)
    assert problems == []
    assert ruleset.matching("order.delayed")[0].events == ("order.delayed",)


def test_template_typo_bad_expression_and_wrong_field_are_all_reported_with_lines(tmp_path, renderer, schemas):
    text = """\
    version: 1
    rules:
      - id: order-delayed
        on: order.delayed
        category: service
        channels: [sms]
        template: order_delayd
      - id: cart-reminder
        on: cart.updated
        category: marketing
        when: "event.data.total >> 5"
        channels: [email]
        template: cart_reminder
      - id: order-shipped
        on: order.shipped
        category: service
        when: "event.data.carier == 'PostNL'"
        channels: [email]
        template: order_shipped
    """
    _, problems, _ = problems_for(tmp_path, text, renderer, schemas)
    lines = {line for line, _ in problems}
    assert lines == {7, 11, 17}, problems
    messages = dict(problems)
    assert ("template 'order_delayd' not found (missing sms/en/order_delayd.body.j2, sms/nl/order_delayd.body.j2 in "
            "templates); did you mean 'order_delayed'?") in messages[7]
    assert "condition is not a valid expression" in messages[11]
    assert "no field 'carier'" in messages[17] and "carrier" in messages[17]


def test_schema_errors_point_at_the_offending_key(tmp_path, renderer, schemas):
    text = """\
    version: 1
    rules:
      - id: order-delayed
        on: order.delayd
        category: service
        chanels: [sms]
        template: order_delayed
    """
    _, problems, _ = problems_for(tmp_path, text, renderer, schemas)
    assert (4, ) == tuple(sorted({line for line, m in problems if "order.delayd" in m}))
    assert any("chanels" in m for _, m in problems)


def test_duplicate_ids_and_duplicate_yaml_keys(tmp_path, renderer, schemas):
    _, problems, _ = problems_for(tmp_path, GOOD + GOOD.split("rules:\n")[1], renderer, schemas)
    assert problems and problems[0][0] == 9 and "used twice" in problems[0][1]
    _, problems, _ = problems_for(tmp_path, "version: 1\nversion: 1\nrules: []\n", renderer, schemas)
    assert problems[0][0] == 2 and "YAML" in problems[0][1]


def test_wrong_customer_field_in_condition(tmp_path, renderer, schemas):
    text = GOOD.replace("event.data.new_eta|eta_start > event.data.old_eta|eta_start", "customer.tiers == 'premium'")
    _, problems, _ = problems_for(tmp_path, text, renderer, schemas)
    assert problems == [(6, "rule 'order-delayed': condition uses customer.tiers: no field 'tiers'; "
                            "did you mean 'tier'? (known: consents, critical, email, id, locale, name, node_id, phone, postcode, tier, timezone)")]


def test_template_with_unknown_field_names_the_template_file_and_line(tmp_path, renderer, schemas):
    from streams.core.render import Renderer

    templates = tmp_path / "templates"
    write(templates / "sms/nl/order_delayed.body.j2", "Hallo {{ customer.name }},\n{{ event.data.new_etaa }}")
    write(templates / "sms/en/order_delayed.body.j2", "Hi {{ event.data.new_eta }}")
    path = write(tmp_path / "rules.yaml", GOOD.replace("[sms, email]", "[sms]"))
    _, problems = check_rules(path, Renderer(templates), schemas)
    assert len(problems) == 1
    assert problems[0].file.endswith("sms/nl/order_delayed.body.j2") and problems[0].line == 2
    assert "no field 'new_etaa'" in problems[0].message


def test_load_rules_raises_with_every_problem(tmp_path, renderer, schemas):
    path = write(tmp_path / "rules.yaml", "version: 2\nrules: []\n")
    with pytest.raises(RulesInvalid) as caught:
        load_rules(path, renderer, schemas)
    assert len(caught.value.problems) == 2
    assert str(caught.value).startswith(str(path))


def test_tier_overrides(tmp_path, renderer, schemas):
    text = GOOD + "    tiers:\n      basic: {channels: [email]}\n      premium: {enabled: false}\n"
    ruleset, problems, _ = problems_for(tmp_path, text, renderer, schemas)
    assert problems == []
    rule = ruleset.rules[0]
    assert rule.plan_for("basic").channels == ("email",)
    assert rule.plan_for("standard").channels == ("sms", "email")
    assert rule.plan_for("premium").enabled is False


def with_budget(budget: str) -> str:
    return f"""\
version: 1
defaults:
  budget: {budget}
rules:
  - id: order-delayed
    on: order.delayed
    category: service
    channels: [sms, email]
    template: order_delayed
"""


def test_a_budget_reserve_is_read_from_the_defaults(tmp_path, renderer, schemas):
    ruleset, problems, _ = problems_for(
        tmp_path, with_budget("{count: 3, per: 7d, reserve: {priority: 70, count: 1}}"), renderer, schemas)
    assert problems == []
    budget = ruleset.budget
    assert (budget.count, budget.reserve.priority, budget.reserve.count) == (3, 70, 1)
    assert (budget.allowance(69), budget.allowance(70), budget.allowance(100)) == (2, 3, 3)


def test_a_budget_without_a_reserve_lets_every_priority_use_all_of_it(tmp_path, renderer, schemas):
    ruleset, problems, _ = problems_for(tmp_path, with_budget("{count: 4, per: 7d}"), renderer, schemas)
    assert problems == [] and ruleset.budget.reserve is None and ruleset.budget.allowance(0) == 4


@pytest.mark.parametrize("reserve, wanted", [
    ("{priority: 70, count: 3}", "reserve count 3 leaves nothing of the budget of 3"),
    ("{priority: 70, count: 5}", "reserve count 5 leaves nothing"),
    ("{priority: -1, count: 1}", "priority: -1 is below the least allowed, 0"),
    ("{priority: 2000, count: 1}", "priority: 2000 is above the most allowed, 1000"),
    ("{priority: high, count: 1}", "priority: must be a whole number, not 'high'"),
    ("{count: 1}", "reserve: 'priority' is missing"),
    ("{priority: 70, count: 0}", "count: 0 is below the least allowed, 1"),
])
def test_a_reserve_that_leaves_nothing_or_has_a_bad_priority_is_refused_with_its_line(
        tmp_path, renderer, schemas, reserve, wanted):
    text = f"""\
version: 1
defaults:
  budget:
    count: 3
    per: 7d
    reserve: {reserve}
rules:
  - id: order-delayed
    on: order.delayed
    category: service
    channels: [sms, email]
    template: order_delayed
"""
    ruleset, problems, _ = problems_for(tmp_path, text, renderer, schemas)
    assert ruleset is None
    assert [line for line, message in problems if wanted in message] == [6], problems
    assert all("budget" in message for _, message in problems), problems


# -- dedupe -------------------------------------------------------------------------------------------

def test_a_rule_dedupes_by_default_on_the_event_fields_its_templates_show(tmp_path, renderer, schemas):
    ruleset, problems, _ = problems_for(tmp_path, GOOD, renderer, schemas)
    assert problems == []
    rule = ruleset.get("order-delayed")
    # The templates alias event.data as d and read d.get("reason"): both are followed.
    assert rule.dedupe == ("data.new_eta", "data.old_eta", "data.order_id", "data.reason")
    assert rule.dedupe_window.days == 7


def test_dedupe_paths_and_window_are_read_from_the_rule_and_the_defaults(tmp_path, renderer, schemas):
    text = GOOD.replace("rules:\n", "defaults:\n  dedupe_window: 2d\nrules:\n") + (
        "    dedupe: [data.order_id, data.new_eta]\n"
        "  - id: shipped\n    on: order.shipped\n    category: service\n    channels: [email]\n"
        "    template: order_shipped\n"
        "    dedupe: false\n")
    ruleset, problems, _ = problems_for(tmp_path, text, renderer, schemas)
    assert problems == []
    delayed = ruleset.get("order-delayed")
    assert delayed.dedupe == ("data.order_id", "data.new_eta") and delayed.dedupe_window.days == 2
    assert ruleset.get("shipped").dedupe is None


def test_a_dedupe_path_the_event_does_not_have_is_refused_with_its_line(tmp_path, renderer, schemas):
    text = GOOD + "    dedupe:\n      - data.order_id\n      - data.new_date\n"
    _, problems, _ = problems_for(tmp_path, text, renderer, schemas)
    assert len(problems) == 1
    line, message = problems[0]
    assert line == 11 and "dedupe path data.new_date: no field 'new_date'" in message and "order.delayed" in message


def test_dedupe_on_an_outage_rule_and_a_bad_window_are_refused(tmp_path, renderer, schemas):
    outage = ("version: 1\nrules:\n  - id: outage-started\n    on: outage.started\n    category: service\n"
              "    channels: [sms]\n"
              "    template: outage_started\n    dedupe: [data.outage_id]\n")
    _, problems, _ = problems_for(tmp_path, outage, renderer, schemas)
    assert [(line, "dedupe is for customer rules" in m) for line, m in problems] == [(8, True)]
    _, problems, _ = problems_for(tmp_path, GOOD + "    dedupe_window: soon\n", renderer, schemas)
    assert [line for line, _ in problems] == [9]


def test_a_rule_without_a_category_is_refused_with_the_reason_at_its_line(tmp_path, renderer, schemas):
    text = GOOD.replace("    category: service\n", "", 1)
    _, problems, _ = problems_for(tmp_path, text, renderer, schemas)
    [(line, message)] = problems
    assert line == 3 and "has no category" in message
    assert "category: service" in message and "category: marketing" in message and "marketing consent" in message
    _, problems, _ = problems_for(tmp_path, GOOD.replace("category: service", "category: promo"), renderer, schemas)
    assert problems and "promo" in problems[0][1]
