"""Rules check tries every condition and template on sample records before anything starts: what cannot render,
is unsafe, names something undefined or runs over its budget is refused with file, line and a plain message."""

from __future__ import annotations

import re
import shutil
import textwrap

import pytest

from streams.core.render import Renderer
from streams.core.rules import check_rules
from streams.settings import ROOT
from tests.conftest import write

RULES = """\
version: 1
rules:
  - id: order-delayed
    on: order.delayed
    category: service
    when: "event.data.new_eta > event.data.old_eta"
    channels: [sms]
    template: order_delayed
"""
UNCONDITIONAL = RULES.replace('    when: "event.data.new_eta > event.data.old_eta"\n', "")

# Each is line 2 of sms/nl/order_delayed.body.j2; each passed the check before it rendered anything.
BAD_TEMPLATES = {
    "lipsum": ("{{ lipsum(200000)|length }}", "over budget: lipsum"),
    "replace in a 99,000-step loop": ("{% set ns = namespace(s='ab') %}{% for i in range(99) %}"
                                      "{% for j in range(1000) %}{% set ns.s = ns.s|replace('a', 'aa') %}"
                                      "{% endfor %}{% endfor %}{{ ns.s|length }}", "over budget: |replace"),
    "center": ("{{ 'a'|center(1000000000) }}", "over budget: |center"),
    "%": ("{{ '%0999999999d' % 1 }}", "over budget: '%'"),
    "__class__": ("{{ event.__class__ }}", "unsafe attribute access: '__class__'"),
    "attr filter": ("{{ event|attr('__class__') }}", "unsafe attribute access: '__class__'"),
    "mutation": ("{% set x = event.data.update({'a': 1}) %}", r"may not change data: \.update\(\)"),
    "include /etc/passwd": ("{% include '/etc/passwd' %}", "outside the templates folder"),
    "include outside": ("{% include '../../config/rules.yaml' %}", "outside the templates folder"),
    "import outside": ("{% import '../email/../../x.j2' as x %}", "outside the templates folder"),
    "missing include": ("{% include 'sms/nl/nope.j2' %}", "refers to missing template 'sms/nl/nope.j2'"),
    "computed include": ("{% include event.data.reason %}", "named at run time"),
    "undefined variable": ("{{ nosuchvar }}", "undefined variable 'nosuchvar'"),
    # Only the largest sample (a reason of 500 characters) takes it over the loop budget.
    "over budget on the largest event": ("{% for c in event.data.reason %}{% for i in range(300) %}{% endfor %}"
                                         "{% endfor %}", r"over budget: more than 100000 loop steps .*largest"),
}


@pytest.fixture
def templates(tmp_path):
    return shutil.copytree(ROOT / "templates", tmp_path / "templates")


def refused(tmp_path, templates, schemas, rules: str = RULES):
    path = write(tmp_path / "rules.yaml", textwrap.dedent(rules))
    ruleset, problems = check_rules(path, Renderer(templates), schemas)
    return ruleset, problems, path


@pytest.mark.parametrize(("source", "message"), BAD_TEMPLATES.values(), ids=BAD_TEMPLATES.keys())
def test_bad_template_is_refused_with_file_and_line(tmp_path, templates, schemas, source, message):
    bad = write(templates / "sms/nl/order_delayed.body.j2", "{{ brand }}: je bestelling\n" + source + "\n")
    ruleset, problems, _ = refused(tmp_path, templates, schemas, UNCONDITIONAL)
    assert ruleset is None
    assert [(p.file, p.line) for p in problems] == [(str(bad), 2)], problems
    assert re.search(message, problems[0].message), problems[0].message


# Each is the rule's when: (line 6); the last is fine on the example but not on a customer without 'critical'.
BAD_CONDITIONS = {
    "lipsum": ("lipsum(200000)|length > 0", "over budget: lipsum"),
    "center": ("'a'|center(1000000000) == 'a'", "over budget: |center"),
    "undefined": ("nosuch > 0", "'nosuch' is not a field or a value: text needs quotes"),
    "__class__": ("event.__class__ is defined", "unsafe attribute access: '__class__'"),
    "fails on the smallest customer": ("customer.critical", "fails on the smallest order.delayed sample: .*critical"),
}


@pytest.mark.parametrize(("when", "message"), BAD_CONDITIONS.values(), ids=BAD_CONDITIONS.keys())
def test_bad_condition_is_refused_at_its_line(tmp_path, templates, schemas, when, message):
    ruleset, problems, path = refused(tmp_path, templates, schemas,
                                      RULES.replace("event.data.new_eta > event.data.old_eta", when))
    assert ruleset is None
    assert [(p.file, p.line) for p in problems] == [(str(path), 6)], problems
    assert re.search(message, problems[0].message), problems[0].message


def test_a_sample_the_condition_turns_away_is_not_rendered(tmp_path, templates, schemas):
    # The template would run over on a 500-character reason, but the condition lets only short reasons through.
    write(templates / "sms/nl/order_delayed.body.j2", BAD_TEMPLATES["over budget on the largest event"][0])
    short_reasons = RULES.replace("event.data.new_eta > event.data.old_eta", "event.data.reason|length < 100")
    ruleset, problems, _ = refused(tmp_path, templates, schemas, short_reasons)
    assert problems == [] and ruleset is not None


def test_a_problem_in_a_template_two_rules_use_is_reported_once(tmp_path, templates, schemas):
    bad = write(templates / "sms/nl/order_delayed.body.j2", "x\n{{ lipsum(200000) }}")
    second = UNCONDITIONAL.split("rules:\n")[1].replace("id: order-delayed", "id: order-delayed-again")
    _, problems, _ = refused(tmp_path, templates, schemas, UNCONDITIONAL + second)
    assert [(p.file, p.line) for p in problems] == [(str(bad), 2)]


def test_samples_are_valid_and_as_large_as_the_schemas_allow(schemas):
    from streams.core.events import EVENT_TYPES
    from streams.core.rules import SAMPLE_ITEMS, samples

    for name in ["customer.json", *(f"events/{t}.json" for t in EVENT_TYPES)]:
        found = samples(schemas, name)
        assert set(found) == {"example", "largest", "smallest"}, name
        assert all(schemas.problems(name, record) == [] for record in found.values()), name
    customers = samples(schemas, "customer.json")
    assert len(customers["largest"]["name"]) == 200 and "critical" not in customers["smallest"]
    cart = samples(schemas, "events/cart.updated.json")
    assert len(cart["largest"]["data"]["items"]) == SAMPLE_ITEMS and cart["smallest"]["data"]["items"] == []
    assert all(len(item["name"]) == 200 for item in cart["largest"]["data"]["items"])
    outage = samples(schemas, "events/outage.started.json")
    assert len(set(outage["largest"]["data"]["areas"])) == SAMPLE_ITEMS and "customer_id" not in outage["largest"]
