"""The commands an ops person runs before merging a rule change: preview, simulate --against, plan, and --help."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import cli
from streams.settings import ROOT, settings_help
from tests.conftest import write

runner = CliRunner()
DEMO = ROOT / "config" / "demo"
SHIPPED = (ROOT / "config" / "rules.yaml").read_text()


def demo_line(kind: str) -> bytes:
    return next(line for line in DEMO.joinpath("events.jsonl").read_bytes().splitlines() if kind.encode() in line)


def customer(tmp_path, **changes):
    record = orjson.loads(DEMO.joinpath("customers.jsonl").read_bytes().splitlines()[0])
    record.update(changes)
    return write(tmp_path / "customer.json", orjson.dumps(record).decode())


def run_preview(tmp_path, rule, event_kind, *extra, rules=None, **changes):
    args = ["preview", rule, "--event", str(write(tmp_path / "event.json", demo_line(event_kind).decode())),
            "--customer", str(customer(tmp_path, **changes)), *extra]
    if rules is not None:
        args += ["--rules", str(write(tmp_path / "rules.yaml", rules))]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_preview_tells_the_wait_then_quiet_hours_and_when_it_is_sent(tmp_path):
    output = run_preview(tmp_path, "order-delayed", "order.delayed", "--at", "2026-12-08T22:30:00+01:00")
    assert "coalesces 3 h 00 min" in output
    assert "it is quiet hours: held until 08:00 Wednesday 09 December 2026" in output
    assert "sent by sms to +31612345678 at 08:00 Wednesday 09 December 2026" in output
    assert "bezorgdatum" in output and "1 segment(s), GSM-7" in output


def test_preview_honours_a_tier_switched_off(tmp_path):
    rules = SHIPPED.replace("""      premium:
        channels: [sms, email]
        channel_mode: all
        wait: 5m""", """      premium:
        enabled: false""")
    output = run_preview(tmp_path, "outage-started", "outage.started", rules=rules, tier="premium")
    assert "this rule is off for the tier (tiers.premium.enabled: false)" in output
    assert "nothing is sent" in output and "sent by" not in output


def test_preview_says_a_false_condition_and_sends_nothing(tmp_path):
    rules = SHIPPED.replace('when: "event.data[\'items\'] | length > 0 and event.data.total > 0"',
                            'when: "event.data.total > 100000"')
    output = run_preview(tmp_path, "cart-reminder", "cart.updated", rules=rules)
    assert "condition 'event.data.total > 100000' is false" in output
    assert "nothing is sent: the condition is false" in output


def test_preview_counts_the_history_against_the_cap(tmp_path):
    cart = orjson.loads(demo_line("cart.updated"))
    record = orjson.loads(DEMO.joinpath("customers.jsonl").read_bytes().splitlines()[0])
    earlier = {**cart, "id": "earlier-cart", "customer_id": record["customer_id"],
               "occurred_at": "2026-12-01T10:00:00+01:00",
               "data": {**cart["data"], "cart_id": "CART-EARLIER"}}
    history = write(tmp_path / "history.jsonl", orjson.dumps(earlier).decode() + "\n")
    output = run_preview(tmp_path, "cart-reminder", "cart.updated", "--history", str(history),
                         "--at", "2026-12-03T10:00:00+01:00", consents={"sms": True, "email": True,
                                                                        "marketing": {"email": True}})
    assert "cap: 1 per 7d; 1 of this rule's messages to this customer in the history given" in output
    assert "contact budget: 3 per 7d for all rules; 1 message(s)" in output
    assert "held back" in output and "cap_exceeded" in output and "sent by" not in output


def test_preview_of_an_unknown_rule_is_one_plain_line(tmp_path):
    result = runner.invoke(cli, ["preview", "no-such-rule", "--event",
                                 str(write(tmp_path / "e.json", demo_line("order.delayed").decode())),
                                 "--customer", str(customer(tmp_path))])
    assert result.exit_code == 2 and "no rule 'no-such-rule'" in result.output


def test_simulate_against_other_rules_shows_per_rule_differences_and_changed_customers(tmp_path):
    # Last week's rules had the cart reminder switched off; today's have it on.
    old = SHIPPED.replace("    category: marketing\n", "    category: marketing\n    enabled: false\n")
    assert old != SHIPPED
    old_rules = write(tmp_path / "old.yaml", old)
    args = ["simulate", "--customers", str(DEMO / "customers.jsonl"), "--events", str(DEMO / "events.jsonl"),
            "--against", str(old_rules), "--out", str(tmp_path / "sim")]
    result = runner.invoke(cli, args + ["--json"])
    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.output)
    cart = next(rule for rule in figures["rules"] if rule["rule"] == "cart-reminder")
    assert cart["sent"][0] < cart["sent"][1]
    assert figures["customers_changed"] >= 1
    changed = figures["sample"][0]
    assert len(changed["after"]) > len(changed["before"])
    assert any(message["rule"] == "cart-reminder" and message["text"] for message in changed["after"])
    unchanged = next(rule for rule in figures["rules"] if rule["rule"] == "outage-started")
    assert unchanged["sent"][0] == unchanged["sent"][1] and unchanged["cost"][0] == unchanged["cost"][1]
    shown = runner.invoke(cli, args)
    assert shown.exit_code == 0 and "changed" in shown.output and "would get different messages" in shown.output


def test_simulate_prices_what_it_sends(tmp_path):
    result = runner.invoke(cli, ["simulate", "--customers", str(DEMO / "customers.jsonl"), "--events",
                                 str(DEMO / "events.jsonl"), "--out", str(tmp_path / "sim"), "--json"])
    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.output)
    outage = figures["rules"]["outage-started"]
    assert figures["currency"] == "EUR" and outage["sms_segments"] >= outage["sent_by_channel"]["sms"]
    sms_cost = outage["sms_segments"] * 0.085  # the demo's numbers are Dutch
    email_cost = outage["sent_by_channel"].get("email", 0) * 0.0009
    assert float(outage["cost"]) == pytest.approx(sms_cost + email_cost)


def test_simulate_needs_files_or_kafka(tmp_path):
    result = runner.invoke(cli, ["simulate", "--events", str(DEMO / "events.jsonl")])
    assert result.exit_code == 2 and "--customers and --events" in result.output


def test_plan_of_an_outage_from_a_customers_file(tmp_path):
    outage = write(tmp_path / "outage.json", demo_line("outage.started").decode())
    result = runner.invoke(cli, ["plan", str(outage), "--customers", str(DEMO / "customers.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    plan = orjson.loads(result.output)
    assert plan["over_limit"] is False and plan["cost"] is not None
    text = runner.invoke(cli, ["plan", str(outage), "--customers", str(DEMO / "customers.jsonl")]).output
    assert "SMS: " in text and "premium" in text and "cost: EUR" in text


def test_plan_of_an_order_event_is_one_plain_line(tmp_path):
    order = write(tmp_path / "order.json", demo_line("order.delayed").decode())
    result = runner.invoke(cli, ["plan", str(order), "--customers", str(DEMO / "customers.jsonl")])
    assert result.exit_code == 2 and "only an outage.started event fans out" in result.output


@pytest.mark.parametrize(("command", "settings"), [
    (["worker"], ["FOREWARN_SMS_RATE", "FOREWARN_LOG_LEVEL", "FOREWARN_TWILIO_BASE_URL"]),
    (["webhooks"], ["FOREWARN_WEBHOOK_PUBLIC_URL", "TWILIO_AUTH_TOKEN", "KAFKA_BOOTSTRAP_SERVERS"]),
    (["rules", "check"], ["FOREWARN_RULES", "FOREWARN_TEMPLATES"]),
    (["simulate"], ["FOREWARN_RULES", "KAFKA_BOOTSTRAP_SERVERS", "FOREWARN_TOPIC_CUSTOMERS"]),
    (["plan"], ["FOREWARN_SMS_RATE", "FOREWARN_FANOUT_LIMIT"]),
    (["preview"], ["FOREWARN_TEMPLATES", "FOREWARN_BRAND"]),
])
def test_every_command_help_lists_the_settings_it_reads(command, settings):
    result = runner.invoke(cli, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in settings:
        assert name in result.output, (command, name)


def test_commands_that_read_rules_take_rules_and_templates_options():
    for command in (["rules", "check"], ["preview"], ["simulate"], ["plan"], ["worker"], ["demo"]):
        output = runner.invoke(cli, [*command, "--help"], terminal_width=200).output
        assert "--rules" in output and "--templates" in output, command


def test_help_of_every_setting_is_known():
    assert "FOREWARN_SMS_RATE (default 1.0)" in settings_help(["FOREWARN_SMS_RATE"])
    with pytest.raises(ValueError):
        settings_help(["FOREWARN_NO_SUCH"])


def test_imitation_prints_export_lines_a_shell_takes(tmp_path):
    import shlex
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "imitation"], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = [process.stdout.readline() for _ in range(9)]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert lines[0].startswith("# the Twilio and SendGrid imitation on http://127.0.0.1:")
    exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines[1:])
    assert set(exports) == {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM", "SENDGRID_API_KEY",
                            "SENDGRID_FROM", "SENDGRID_WEBHOOK_PUBLIC_KEY", "FOREWARN_TWILIO_BASE_URL",
                            "FOREWARN_SENDGRID_BASE_URL"}
    assert exports["FOREWARN_TWILIO_BASE_URL"].startswith("http://127.0.0.1:")
    shell = subprocess.run(["bash", "-c", "".join(lines[1:]) + 'echo "$TWILIO_FROM"'], capture_output=True, text=True)
    assert shell.stdout.strip() == exports["TWILIO_FROM"]
