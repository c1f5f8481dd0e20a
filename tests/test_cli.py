"""The commands ops type, run in-process: exit codes and what they print."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from streams.cli import cli
from streams.settings import ROOT
from tests.conftest import write

runner = CliRunner()
DEMO = ROOT / "config" / "demo"

BROKEN = """\
version: 1
rules:
  - id: outage-started
    on: outage.started
    channels: [sms]
    template: outage_startd
  - id: order-delayed
    on: order.delayed
    when: "event.data.new_eta >"
    channels: [sms]
    template: order_delayed
  - id: cart-reminder
    on: cart.updated
    when: "event.data.totaal > 0"
    channels: [email]
    template: cart_reminder
"""


def test_rules_check_passes_on_shipped_rules():
    result = runner.invoke(cli, ["rules", "check"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_rules_check_reports_template_typo_bad_expression_and_wrong_field(tmp_path):
    path = write(tmp_path / "rules.yaml", BROKEN)
    result = runner.invoke(cli, ["rules", "check", str(path)])
    assert result.exit_code == 1
    output = result.output
    assert f"{path}:6: rule 'outage-started': template 'outage_startd' not found" in output
    assert f"{path}:9: rule 'order-delayed': condition does not parse" in output
    assert f"{path}:14: rule 'cart-reminder': condition uses event.data.totaal: no field 'totaal'" in output
    assert "3 problem(s)" in output


def test_simulate_writes_notifications_suppressed_and_rejected(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(DEMO.joinpath("events.jsonl").read_bytes() + b"not json\n"
                       + b'{"id":"z","type":"order.delayed","occurred_at":"2026-11-25T10:00:00+01:00",'
                         b'"customer_id":"NOBODY","data":{"order_id":"O","old_eta":"2026-11-25T10:00:00+01:00",'
                         b'"new_eta":"2026-11-26T10:00:00+01:00","reason":"x"}}\n')
    out = tmp_path / "sim"
    result = runner.invoke(cli, ["simulate", "--customers", str(DEMO / "customers.jsonl"),
                                 "--events", str(events), "--out", str(out)])
    assert result.exit_code == 0, result.output
    sent = [orjson.loads(line) for line in (out / "notifications.jsonl").read_bytes().splitlines()]
    rejected = [orjson.loads(line) for line in (out / "rejected.jsonl").read_bytes().splitlines()]
    suppressed = [orjson.loads(line) for line in (out / "suppressed.jsonl").read_bytes().splitlines()]
    assert len(sent) == 30
    assert [(r["line"], r["reason"][:8]) for r in rejected] == [(14, "not JSON")]
    assert ("NOBODY", "unknown_customer") in [(s["customer_id"], s["reason"]) for s in suppressed]
    assert "outage-started" in result.output


def test_simulate_reads_csv_customers_like_jsonl(tmp_path):
    for name in ("customers.jsonl", "customers.csv"):
        result = runner.invoke(cli, ["simulate", "--customers", str(DEMO / name),
                                     "--events", str(DEMO / "events.jsonl"), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    jsonl, csv = ((tmp_path / name / "notifications.jsonl").read_bytes() for name in ("customers.jsonl", "customers.csv"))
    assert jsonl == csv


def test_preview_renders_one_rule(tmp_path):
    event = next(line for line in DEMO.joinpath("events.jsonl").read_bytes().splitlines() if b"order.delayed" in line)
    customer = orjson.loads(DEMO.joinpath("customers.jsonl").read_bytes().splitlines()[0])
    result = runner.invoke(cli, ["preview", "order-delayed", "--event", str(write(tmp_path / "e.json", event.decode())),
                                 "--customer", str(write(tmp_path / "c.json", orjson.dumps(customer).decode()))])
    assert result.exit_code == 0, result.output
    assert "bezorgdatum" in result.output and "segment" in result.output


def test_worker_refuses_to_start_on_broken_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("FOREWARN_RULES", str(write(tmp_path / "rules.yaml", BROKEN)))
    result = runner.invoke(cli, ["worker"])
    assert result.exit_code == 2
    assert "template 'outage_startd' not found" in result.output


def test_an_unreachable_broker_is_one_plain_line_and_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "FOREWARN_METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Kafka broker did not answer" in lines[0] and "127.0.0.1:1" in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
