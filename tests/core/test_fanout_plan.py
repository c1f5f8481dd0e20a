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
