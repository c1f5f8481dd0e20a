from __future__ import annotations

from datetime import datetime, timezone

from streams.core.decider import Decider, Notification
from streams.core.directory import CustomerDirectory
from streams.core.fanout_plan import plan_fanout
from streams.core.rules import load_rules
from streams.settings import ROOT
from tests.fakes import known, links_for_tests
from tests.core.test_decider import customer, outage


def test_plan_counts_what_the_fan_out_will_send(renderer, schemas):
    rules = load_rules(ROOT / "config" / "rules.yaml", renderer, schemas)
    decider = Decider(rules, renderer, CustomerDirectory(), links=links_for_tests())
    for c in [customer("S1"), customer("S2", locale="en"), customer("E1", sms=False), customer("P1", tier="premium"),
              customer("B1", tier="basic"), customer("N1", sms=False, email=False), customer("X1", "2000AA")]:
        known(decider, c)
    event = outage()
    plan = plan_fanout(decider, event)
    assert dict(plan.recipients) == {"sms": 3, "email": 3} and plan.unreachable == 1
    assert plan.sms_segments == 3  # one segment each
    assert plan.seconds(sms_rate=1.0, email_rate=100.0) == 3.0
    assert "3 SMS (3 segments), 3 emails, 1 unreachable" in plan.describe(1.0, 100.0)

    start = datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)
    outcomes = list(decider.handle(event, start)) + list(decider.fire_due(datetime(2026, 11, 25, 14, 0, tzinfo=timezone.utc)))
    sent = [o.channel for o in outcomes if isinstance(o, Notification)]
    assert sorted(sent) == ["email"] * 3 + ["sms"] * 3


def test_a_copy_that_does_not_render_is_planned_as_one_segment_not_a_crash():
    from streams.errors import TemplateError

    class Refusing:
        def render(self, *args, **kwargs):
            raise TemplateError("over budget", "templates/sms/nl/outage_started.body.j2", 3)

    from streams.core.fanout_plan import _segments

    class Decider:
        renderer = Refusing()

    event = {"type": "outage.started", "data": {"outage_id": "OUT-1"}}
    assert _segments(Decider(), "nl", "outage_started", event, {"id": "C1"}) == 1


# A rules file of one outage rule, with prices and the basic tier left out.
COSTED_RULES = """\
version: 1
defaults:
  locale: nl
  cost:
    currency: EUR
    sms: {"+31": 0.07, default: 0.1}
    email: 0.001
rules:
  - id: outage-started
    on: outage.started
    category: service
    audience: area
    channels: [sms, email]
    template: outage_started
    tiers:
      basic: {enabled: false}
      premium: {channels: [sms, email], channel_mode: all}
"""


def area_customers() -> list[dict]:
    """Seven in area 1012 (one without a phone, one without SMS consent, one basic, one unreachable), one outside."""
    no_phone = customer("NP")
    del no_phone["phone"]
    return [customer("S1"), customer("S2", locale="en", phone="+32470123456"), customer("E1", sms=False), no_phone,
            customer("P1", tier="premium"), customer("B1", tier="basic"), customer("N1", sms=False, email=False),
            customer("X1", "2000AA")]


def test_plan_counts_recipients_by_channel_and_tier_and_prices_them(renderer, schemas, tmp_path):
    from decimal import Decimal

    from tests.conftest import write

    rules = load_rules(write(tmp_path / "rules.yaml", COSTED_RULES), renderer, schemas)
    decider = Decider(rules, renderer, CustomerDirectory(), links=links_for_tests())
    known(decider, *area_customers())
    plan = plan_fanout(decider, outage())
    assert plan.tiers("sms") == {"standard": 2, "premium": 1}  # S1, S2; P1 on both channels
    assert plan.tiers("email") == {"standard": 2, "premium": 1}  # E1 (no SMS consent), NP (no phone); P1
    assert dict(plan.recipients) == {"sms": 3, "email": 3}  # the per-channel totals callers read
    assert plan.tier_disabled == 1 and plan.unreachable == 1  # B1 is left out by its tier, N1 has no channel
    assert plan.sms_segments == 3 and plan.rules == ("outage-started",)
    # +31 at 0.07 a segment (S1, P1), +32 falls to the default 0.1 (S2); email 0.001 each
    assert plan.cost == {"sms": Decimal("0.24"), "email": Decimal("0.003")}
    assert plan.total_cost == Decimal("0.243") and plan.shown_cost() == "EUR 0.24"
    assert "3 SMS (3 segments), 3 emails, 1 unreachable, cost about EUR 0.24;" in plan.describe(1.0, 100.0)


def test_without_defaults_cost_the_plan_says_cost_is_not_configured(renderer, schemas, tmp_path):
    from tests.conftest import write

    uncosted = COSTED_RULES.replace("  cost:\n    currency: EUR\n    sms: {\"+31\": 0.07, default: 0.1}\n"
                                    "    email: 0.001\n", "")
    assert "cost" not in uncosted
    rules = load_rules(write(tmp_path / "rules.yaml", uncosted), renderer, schemas)
    decider = Decider(rules, renderer, CustomerDirectory(), links=links_for_tests())
    known(decider, *area_customers())
    plan = plan_fanout(decider, outage())
    assert not plan.cost_configured and plan.total_cost is None and plan.shown_cost("sms") is None
    assert "cost" not in plan.describe(1.0, 100.0)
    assert dict(plan.recipients) == {"sms": 3, "email": 3}


def test_an_event_no_area_rule_fans_out_has_no_plan(renderer, schemas):
    from tests.core.test_decider import order_delayed

    rules = load_rules(ROOT / "config" / "rules.yaml", renderer, schemas)
    decider = Decider(rules, renderer, CustomerDirectory(), links=links_for_tests())
    assert plan_fanout(decider, order_delayed()) is None  # not a KeyError on its missing outage_id
    assert plan_fanout(decider, outage("outage.updated")) is None  # audience 'told': no fan-out to an area
