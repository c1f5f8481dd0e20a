"""``streams.tools.plan``: the plan of an outage from files, before it is published. No broker."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import orjson
import pytest

from streams.core.config import load_config
from streams.errors import ConfigError, EventError
from streams.settings import Settings
from streams.tools.customer_files import write_customer_csv
from streams.tools.plan import about, duration, plan_outage, plan_outage_files
from tests.conftest import write
from tests.core.test_decider import order_delayed, outage
from tests.core.test_fanout_plan import COSTED_RULES, area_customers
from tests.fakes import upsert_event

ORDER_ONLY_RULES = """\
version: 1
rules:
  - id: order-delayed
    on: order.delayed
    category: service
    channels: [sms, email]
    template: order_delayed
"""


def settings_for(tmp_path, rules: str = COSTED_RULES, **changes) -> Settings:
    return replace(Settings(), rules_file=write(tmp_path / "rules.yaml", rules), **changes)


def planned(tmp_path, **changes):
    settings = settings_for(tmp_path, **changes)
    customers = [upsert_event(c) for c in area_customers()]
    return plan_outage(load_config(settings), outage(), customers, settings)


def test_plan_outage_counts_channels_tiers_segments_and_cost(tmp_path):
    plan = planned(tmp_path, sms_rate=2.0, email_rate=100.0)
    assert plan.customers == 8 and plan.rules == ("outage-started",)
    assert plan.fanout.tiers("sms") == {"standard": 2, "premium": 1}
    assert plan.fanout.tiers("email") == {"standard": 2, "premium": 1}
    assert plan.fanout.sms_segments == 3 and plan.fanout.total_cost == Decimal("0.243")
    assert plan.seconds == 1.5 and plan.channel_seconds("email") == 0.03 and not plan.over_limit


def test_lines_show_recipients_per_tier_cost_and_time(tmp_path):
    lines = planned(tmp_path).lines()
    text = "\n".join(lines)
    assert "SMS: 3 recipients (standard 2, premium 1), 3 segments" in lines
    assert "Email: 3 recipients (standard 2, premium 1)" in lines
    assert "not told, their tier has the rule disabled: 1" in lines
    assert "cost: EUR 0.24 (SMS EUR 0.24, email under EUR 0.01)" in lines
    assert "time: about 3 s at 1 SMS segments/s" in text and "WARNING" not in text


def test_without_defaults_cost_the_lines_say_where_to_set_it(tmp_path):
    uncosted = COSTED_RULES.split("  cost:")[0] + "rules:" + COSTED_RULES.split("rules:", 1)[1]
    settings = settings_for(tmp_path, uncosted)
    plan = plan_outage(load_config(settings), outage(), [upsert_event(c) for c in area_customers()], settings)
    assert f"cost: not configured (set defaults.cost in {settings.rules_file})" in plan.lines()
    assert plan.to_dict()["cost"] is None


def test_over_the_fanout_limit_the_plan_says_what_to_do(tmp_path):
    plan = planned(tmp_path, sms_rate=0.001, fanout_limit=600.0)  # 3 segments at one per 1000 s
    assert plan.over_limit and plan.bottleneck == "sms"
    warning = plan.lines()[-1]
    assert warning.startswith("WARNING: the fan-out needs about 50 min, more than the limit of 10 min")
    assert "raise FOREWARN_SMS_RATE (now 0.001 segments/s) with the provider" in warning
    assert "narrow the rule outage-started" in warning


def test_time_reads_in_hours_and_minutes():
    assert about(7500) == "about 2 h 05 min" and duration(3600) == "1 h 00 min"
    assert about(720) == "about 12 min" and about(40.2) == "about 40 s" and about(0.03) == "under a second"
    assert about(0) == "about 0 s"


def test_to_dict_is_json_ready_with_money_as_decimal_strings(tmp_path):
    figures = orjson.loads(orjson.dumps(planned(tmp_path).to_dict()))
    assert figures["cost"] == {"currency": "EUR", "total": "0.243", "sms": "0.24", "email": "0.003"}
    assert figures["recipients"]["sms"] == {"total": 3, "by_tier": {"standard": 2, "premium": 1}}
    assert figures["sms_segments"] == 3 and figures["unreachable"] == 1 and figures["over_limit"] is False


def test_an_order_event_is_a_config_error(tmp_path):
    settings = settings_for(tmp_path)
    with pytest.raises(ConfigError, match="only an outage.started event fans out, not 'order.delayed'"):
        plan_outage(load_config(settings), order_delayed(), [], settings)


def test_rules_without_an_area_rule_are_a_config_error(tmp_path):
    settings = settings_for(tmp_path, ORDER_ONLY_RULES)
    with pytest.raises(ConfigError, match="no enabled rule with audience 'area' on outage.started"):
        plan_outage(load_config(settings), outage(), [], settings)


def test_plan_from_files_counts_rejected_customer_rows(tmp_path):
    settings = settings_for(tmp_path)
    outage_file = write(tmp_path / "outage.json", orjson.dumps(outage(), option=orjson.OPT_INDENT_2).decode())
    customers = write_customer_csv(tmp_path / "customers.csv", [
        ["C1", "Sanne", "+31612345678", "c1@example.nl", "nl", "Europe/Amsterdam", "standard", "1012AB", "",
         "false", "true", "true", "false", "false"],
        ["C2", "Daan", "", "c2@example.nl", "nl", "Europe/Amsterdam", "premium", "1012JS", "",  # no phone: refused
         "false", "true", "true", "false", "false"],
        ["C3", "Oliver", "+31634567890", "c3@example.com", "en", "Europe/Amsterdam", "premium", "1012LG", "",
         "false", "true", "true", "false", "false"]])
    plan = plan_outage_files(settings, outage_file, customers)
    assert plan.customers == 2 and plan.rejected.count == 1
    assert plan.rejected.first[0].line == 3 and str(plan.rejected.first[0]).startswith(f"{customers}:3: ")
    assert dict(plan.fanout.recipients) == {"sms": 2, "email": 1}  # C1 on SMS, C3 (premium) on both
    assert "customers loaded: 2, 1 row rejected" in plan.lines()


def test_an_invalid_outage_file_is_an_event_error_naming_it(tmp_path):
    settings = settings_for(tmp_path)
    broken = write(tmp_path / "outage.json", '{"type": "outage.started"')
    customers = write(tmp_path / "customers.jsonl", "")
    with pytest.raises(EventError, match=f"{broken}: not JSON"):
        plan_outage_files(settings, broken, customers)
