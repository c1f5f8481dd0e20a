"""rules check reports every problem at once, at its own key's line, in words an ops person reads."""

from __future__ import annotations

import shutil
from functools import lru_cache
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from ruamel.yaml import YAML

from streams.core.render import Renderer
from streams.core.rules import check_rules
from streams.settings import ROOT
from tests.conftest import write

FIVE_MISTAKES = """\
version: 1
rules:
  - id: order-delayed
    on: order.delayed
    category: service
    channels: [sms]
    tempalte: order_delayed
  - id: cart-reminder
    on: cart.updated
    category: marketing
    when: "event.data.total = 5"
    channels: [email]
    template: cart_reminder
  - id: order-shipped
    on: order.shipped
    category: service
    channels: [sms]
    template: order_shipped
  - id: outage-started
    on: outage.started
    category: service
    when: "customer.tier == 'gold'"
    channels: [sms]
    template: outage_started
"""


@pytest.fixture(scope="module")
def templates():
    return ROOT / "templates"  # read only


@pytest.fixture
def own_templates(tmp_path):
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    return folder


def with_condition(when: str) -> str:
    return f"""\
    version: 1
    rules:
      - id: order-delayed
        on: order.delayed
        category: service
        when: "{when}"
        channels: [sms]
        template: order_delayed
    """


def check(tmp_path, text, templates, schemas):
    path = write(tmp_path / "rules.yaml", textwrap.dedent(text))
    _, problems = check_rules(path, Renderer(templates), schemas)
    return path, [(p.file, p.line, p.message) for p in problems]


def test_five_kinds_of_mistake_are_all_reported_in_one_run_with_their_lines(tmp_path, own_templates, schemas):
    sms = own_templates / "sms" / "nl" / "order_shipped.body.j2"
    sms.write_text(sms.read_text() + "\n{{ support_url }}\n")  # an undefined variable, at the last line
    email = own_templates / "email" / "en" / "cart_reminder.subject.j2"
    email.write_text("{{ event.data.cart_id }\n")  # a typo: one brace short
    path, problems = check(tmp_path, FIVE_MISTAKES, own_templates, schemas)
    rules_file = str(path)
    shown = {(file, line): message for file, line, message in problems}
    assert shown[(rules_file, 7)] == "rule 'order-delayed': 'tempalte' is not a rule field; did you mean 'template'?"
    assert shown[(rules_file, 11)] == ("rule 'cart-reminder': condition is not a valid expression: "
                                       "'=' sets a value; to compare, write '=='")
    assert shown[(rules_file, 22)] == ("rule 'outage-started': condition compares customer.tier with 'gold', which it "
                                       "never is (its values: basic, standard, premium)")
    undefined_line = len(sms.read_text().splitlines())
    assert shown[(str(sms), undefined_line)] == "undefined variable 'support_url'"
    assert (str(email), 1) in shown and "'}'" in shown[(str(email), 1)]
    assert len(problems) == 5, problems


def test_a_misspelt_key_is_not_also_reported_missing_and_the_rest_of_the_rule_is_checked(tmp_path, templates,
                                                                                          schemas):
    text = """\
    version: 1
    rules:
      - id: order-delayed
        on: order.delayed
        category: service
        when: "event.data.carier == 'PostNL'"
        channels: [sms]
        tempalte: order_delayed
    """
    _, problems = check(tmp_path, text, templates, schemas)
    assert [(line, message.split(": ", 1)[1][:40]) for _, line, message in problems] == [
        (6, "condition uses event.data.carier: no fie"), (8, "'tempalte' is not a rule field; did you ")]


@pytest.mark.parametrize(("field", "value", "line", "words"), [
    ("quiet_hours", '{start: "9pm", end: "08:00"}', 8,
     "quiet_hours.start: '9pm' is not a time of day: write HH:MM on the 24-hour clock, e.g. 21:00"),
    ("wait", "soon", 8, "wait: 'soon' is not a duration: write a number and a unit: 90s, 10m, 3h, 7d (w for weeks)"),
    ("channels", "[sms, fax]", 6, "channels.1: 'fax' is not a channel (sms, email)"),
    ("priority", "high", 8, "priority: must be a whole number, not 'high'"),
    ("cap", "{count: 2}", 8, "cap: 'per' is missing"),
    ("tiers", "{premum: {wait: 1h}}", 8, "'premum' is not a field of tiers; did you mean 'premium'?"),
    ("on", "order.delayd", 4, "on: 'order.delayd' is not an event type; did you mean 'order.delayed'?"),
    ("channel_mode", "First", 8, "channel_mode: 'First' is not one of 'first', 'all'; did you mean 'first'?"),
])
def test_each_schema_problem_is_said_in_words_at_its_key(tmp_path, templates, schemas, field, value, line, words):
    base = """\
    version: 1
    rules:
      - id: order-delayed
        on: order.delayed
        category: service
        channels: [sms]
        template: order_delayed
    """
    text = textwrap.dedent(base)
    if f"    {field}:" in text:
        text = "\n".join(f"    {field}: {value}" if row.startswith(f"    {field}:") else row
                         for row in text.splitlines()) + "\n"
    else:
        text += f"    {field}: {value}\n"
    _, problems = check(tmp_path, text, templates, schemas)
    assert any(found == line and message.startswith(f"rule 'order-delayed': {words.split(' (')[0].strip()}")
               for _, found, message in problems), problems
    assert all("regex" not in m and "^" not in m and "was expected" not in m for _, _, m in problems), problems


@pytest.mark.parametrize(("when", "words"), [
    ("customer.tier == premium", "compares customer.tier with premium, a name nothing defines; write 'premium' in quotes"),
    ("customer.tier == 'Premium'", "compares customer.tier with 'Premium', which it never is (its values: basic, "
                                   "standard, premium); did you mean 'premium'?"),
    ("customer.tier in ['gold', 'basic']", "compares customer.tier with 'gold', which it never is"),
    ("'silver' != customer.tier", "compares customer.tier with 'silver', which it never is"),
    ("event.data.new_eta && customer.critical", "write 'and' instead of '&&'"),
    ("(customer.critical", "is not a valid expression: the brackets do not pair up"),
    ("customer.critical == true or nosuch", "'nosuch' is not a field or a value: text needs quotes ('nosuch')"),
])
def test_a_condition_that_cannot_mean_what_it_says_is_refused(tmp_path, templates, schemas, when, words):
    _, problems = check(tmp_path, with_condition(when), templates, schemas)
    assert [line for _, line, _ in problems] == [6], problems
    assert words in problems[0][2]


@pytest.mark.parametrize("when", [
    "customer.tier == 'premium'", "customer.tier in ['basic', 'standard']", "customer.tier in 'premium standard'",
    "customer.tier|lower == 'premium'", "'x' in event.data.reason", "event.data.reason == 'weather'",
])
def test_comparisons_that_can_be_true_pass(tmp_path, templates, schemas, when):
    _, problems = check(tmp_path, with_condition(when), templates, schemas)
    assert problems == []


_SHIPPED = YAML(typ="safe").load((ROOT / "config" / "rules.yaml").read_text())
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.text(max_size=12),
                    st.lists(st.text(max_size=6), max_size=3), st.dictionaries(st.text(max_size=6), st.integers(),
                                                                                max_size=2))


_TWO_RULES = [rule for rule in _SHIPPED["rules"] if rule["id"] in ("outage-started", "cart-reminder")]


@lru_cache(maxsize=1)
def _renderer(folder) -> Renderer:
    """One for every example: the samples' renders are remembered per renderer."""
    return Renderer(folder)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mangled_rules_file_gives_problems_never_an_exception(tmp_path, templates, schemas, data):
    """Keys renamed, dropped or given values of any kind: check_rules answers with problems, never raises."""
    renderer = _renderer(templates)
    document = {"version": 1, "defaults": dict(_SHIPPED.get("defaults") or {}),
                "rules": [dict(rule) for rule in _TWO_RULES]}
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from([document["defaults"], *document["rules"]]))
        key = data.draw(st.sampled_from(sorted(target) or ["id"]))
        how = data.draw(st.sampled_from(["value", "drop", "rename"]))
        if how == "value":
            target[key] = data.draw(_VALUES)
        elif how == "drop":
            target.pop(key, None)
        else:
            target[key + data.draw(st.sampled_from(["s", "x", "_"]))] = target.pop(key, None)
    path = tmp_path / "mangled.yaml"
    yaml = YAML()
    with path.open("w") as out:
        yaml.dump(document, out)
    _, problems = check_rules(path, renderer, schemas)
    assert all(p.message and p.file for p in problems)


def test_a_slip_in_a_condition_does_not_hide_what_else_is_wrong_with_it(tmp_path, templates, schemas):
    text = """\
    version: 1
    rules:
      - id: cart-reminder
        on: cart.updated
        category: marketing
        when: "event.data.total = 50 and customer.tier == 'gold' && event.data.totl > 1"
        channels: [email]
        template: cart_reminder
    """
    _, problems = check(tmp_path, text, templates, schemas)
    messages = [message for _, line, message in problems if line == 6]
    assert len(messages) == len(problems) == 3, problems
    assert "'=' sets a value; to compare, write '=='" in messages[0]
    assert any("'gold', which it never is" in m for m in messages)
    assert any("no field 'totl'; did you mean 'total'?" in m for m in messages)


@pytest.mark.parametrize(("text", "expected"), [
    ("version: 1\nrules:\n  - 5\n", [(3, "rule number 1: must be a mapping (key: value lines), not 5")]),
    ("version: 1\nrules:\n  - id: a\n    on: order.delayed\n    category: service\n    channels: sms\n"
     "    template: order_delayed\n", [(6, "rule 'a': channels: must be a list, not 'sms'; write [sms]")]),
    ("version: 1\nrules:\n  - id: a\n    on: order.delayed\n    category: service\n    channels: [sms]\n"
     "    template: order_delayed\n    cancel_on: [{on: order.placed, match: all}]\n",
     [(8, "rule 'a': cancel_on.0.match: 'all' is not one of 'key', 'customer'")]),
    ("version: 2\nrules:\n  - id: a\n    on: order.delayed\n    category: service\n    channels: [sms]\n"
     "    template: order_delayed\n", [(1, "version: must be 1, not 2")]),
])
def test_odd_shapes_are_said_plainly(tmp_path, templates, schemas, text, expected):
    _, problems = check(tmp_path, text, templates, schemas)
    assert [(line, message) for _, line, message in problems] == expected


def test_a_file_that_is_not_text_is_one_problem(tmp_path, templates, schemas):
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"\x00\xff\xfe rules")
    _, problems = check_rules(path, Renderer(templates), schemas)
    assert [p.message for p in problems] == ["not UTF-8 text (byte 1): a rules file is YAML text"]
