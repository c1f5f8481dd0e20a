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
    category: service
    channels: [sms]
    template: outage_startd
  - id: order-delayed
    on: order.delayed
    category: service
    when: "event.data.new_eta >"
    channels: [sms]
    template: order_delayed
  - id: cart-reminder
    on: cart.updated
    category: marketing
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
    assert f"{path}:7: rule 'outage-started': template 'outage_startd' not found" in output
    assert f"{path}:11: rule 'order-delayed': condition is not a valid expression" in output
    assert f"{path}:17: rule 'cart-reminder': condition uses event.data.totaal: no field 'totaal'" in output
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
    demo_lines = len(DEMO.joinpath("events.jsonl").read_bytes().splitlines())
    assert [(r["line"], r["reason"][:8]) for r in rejected] == [(demo_lines + 1, "not JSON")]
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


def test_a_worker_sending_real_email_refuses_to_start_without_the_unsubscribe_secret(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "FOREWARN_UNSUBSCRIBE_SECRET"}
    env |= {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "FOREWARN_METRICS_PORT": "0", "SENDGRID_API_KEY": "SG.x",
            "SENDGRID_FROM": "noreply@example.nl"}
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "FOREWARN_UNSUBSCRIBE_SECRET is not set" in lines[0] and "cart-reminder" in lines[0]


# The real command in a subprocess, as ops run it: what reaches the terminal, the exit code.

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from streams.kafka.admin import ensure_topics, read_topic  # noqa: E402
from streams.kafka.embedded import EmbeddedBroker  # noqa: E402

BIG = "x" * 1_100_000  # over the 1 MiB a Kafka producer sends in one message by default


def forewarn(*args: str, cwd, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    environ = {name: value for name, value in os.environ.items() if name != "KAFKA_BOOTSTRAP_SERVERS"}
    environ.update({"FOREWARN_METRICS_PORT": "0", **env})
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The lines on stderr, after checking that none of them is a traceback."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def jsonl(path, lines: list[str]):
    return write(path, "\n".join(lines) + "\n")


def order(event_id: str, customer_id: str = "C1", **data) -> str:
    return orjson.dumps({"id": event_id, "type": "order.delayed", "customer_id": customer_id,
                         "occurred_at": "2026-11-25T10:00:00+01:00", "data": data}).decode()


def test_produce_reports_each_bad_line_by_number_and_still_sends_the_rest(broker, tmp_path):
    ensure_topics(broker.bootstrap, ["cli-orders"], 2)
    good = [order("e1"), order("e2", "C2"), order("e3", "C3")]
    file = jsonl(tmp_path / "events.jsonl", [good[0], "not json", order("big", note=BIG), "", good[1], good[2]])

    result = forewarn("produce", "cli-orders", str(file), cwd=tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap)

    assert result.returncode == 1, result.stderr
    lines = error_lines(result)
    assert lines[0].startswith(f"{file}:2: not JSON"), lines
    assert lines[1].startswith(f"{file}:3: ") and "bytes, more than the 1048576 bytes one message may have" in lines[1]
    assert len(lines) == 2, lines
    assert "sent 3 of 5 lines to cli-orders; 2 refused" in result.stdout
    arrived = sorted(m.value.decode() for m in read_topic(broker.bootstrap, "cli-orders"))
    assert arrived == sorted(good)


class SchemaCheckingBroker(EmbeddedBroker):
    """Tansu checking every record of topic T against T.json in ``registry``: a broker that refuses one record."""

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def start(self) -> "SchemaCheckingBroker":
        from streams.kafka.embedded import broker_binary

        url = f"tcp://{self.bootstrap}"
        command = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/", "--schema-registry", "file://."]  # relative to cwd
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=self.registry, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_until_ready()
        return self


def test_produce_reports_a_line_the_broker_refuses_and_still_sends_the_rest(tmp_path):
    registry = tmp_path / "registry"
    write(registry / "strict.json", '{"type": "object", "properties": {"value": {"type": "object", '
                                    '"required": ["id"], "properties": {"id": {"type": "string"}}}}}')
    file = jsonl(tmp_path / "events.jsonl", ['{"id": "a"}', '{"nope": 1}', '{"id": "b"}', '{"id": "c"}'])
    with SchemaCheckingBroker(registry) as broker:
        ensure_topics(broker.bootstrap, ["strict"], 1)  # one partition: the lines arrive in the order of the file

        result = forewarn("produce", "strict", str(file), cwd=tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap)

        assert result.returncode == 1, result.stderr
        lines = error_lines(result)
        assert len(lines) == 1 and lines[0].startswith(f"{file}:2: refused by Kafka (InvalidRecordError): "), lines
        assert "sent 3 of 4 lines to strict; 1 refused" in result.stdout
        assert [m.value for m in read_topic(broker.bootstrap, "strict")] == [b'{"id": "a"}', b'{"id": "b"}',
                                                                            b'{"id": "c"}']


def test_load_customers_reports_each_bad_line_by_number_and_still_sends_the_rest(broker, tmp_path):
    ensure_topics(broker.bootstrap, ["cli-customers"], 2)
    customer = DEMO.joinpath("customers.jsonl").read_text().splitlines()[0]
    big = orjson.dumps({**orjson.loads(customer), "customer_id": "BIG", "name": BIG}).decode()
    file = jsonl(tmp_path / "customers.jsonl", [customer, "not json", '{"name": "no id"}', big,
                                                customer.replace('"C1001"', '"C9999"')])

    result = forewarn("load-customers", str(file), cwd=tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
                      FOREWARN_TOPIC_CUSTOMERS="cli-customers")

    assert result.returncode == 1, result.stderr
    lines = error_lines(result)
    assert [line.split(": ")[0] for line in lines] == [f"{file}:2", f"{file}:3", f"{file}:4"], lines
    assert "bytes one message may have" in lines[2]
    assert "sent 2 of 5 customers to cli-customers; 3 refused" in result.stdout
    arrived = {orjson.loads(m.value)["customer_id"] for m in read_topic(broker.bootstrap, "cli-customers")}
    assert arrived == {"C1001", "C9999"}


@pytest.mark.parametrize("command", [["produce", "orders"], ["load-customers"]])
def test_an_unreachable_broker_stops_a_tool_within_seconds_in_one_line(tmp_path, command):
    file = jsonl(tmp_path / "lines.jsonl", [order("e1")])

    result = forewarn(*command, str(file), cwd=tmp_path, timeout=40, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")

    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "not reachable" in lines[0], lines


def test_worker_says_in_one_line_that_it_cannot_create_the_outbox(tmp_path):
    outbox = write(tmp_path / "a-file", "") / "outbox"

    # The broker is never reached: the check comes first.
    result = forewarn("worker", cwd=tmp_path, timeout=45, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                      FOREWARN_OUTBOX=str(outbox))

    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and f"cannot write the outbox {outbox}" in lines[0] and "FOREWARN_OUTBOX" in lines[0], lines


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_worker_says_in_one_line_that_the_outbox_is_read_only(tmp_path):
    outbox = tmp_path / "outbox"
    outbox.mkdir(mode=0o555)

    result = forewarn("worker", cwd=tmp_path, timeout=45, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                      FOREWARN_OUTBOX=str(outbox))

    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and f"cannot write the outbox {outbox}: Permission denied" in lines[0], lines


@pytest.mark.parametrize("where", ["option", "environment"])
def test_demo_says_in_one_line_that_it_cannot_create_the_outbox(tmp_path, where):
    outbox = write(tmp_path / "a-file", "") / "outbox"
    args, env = (["--outbox", str(outbox)], {}) if where == "option" else ([], {"FOREWARN_OUTBOX": str(outbox)})

    result = forewarn("demo", "--timeout", "10", *args, cwd=tmp_path, timeout=90, **env)

    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and f"cannot write the outbox {outbox}" in lines[0], lines


@pytest.mark.parametrize("args, says", [
    (["produce", "orders", "missing.jsonl"], "produce: invalid value for 'file': file 'missing.jsonl' does not exist"),
    (["load-customers", "missing.csv"], "file 'missing.csv' does not exist"),
    (["simulate", "--customers", "missing.csv", "--events", "missing.jsonl"], "file 'missing.csv' does not exist"),
    (["demo", "--timeout", "soon"], "demo: invalid value for '--timeout'"),
    (["produce"], "missing argument 'topic'"),
    (["sned"], "no such command 'sned'"),
    (["preview", "order-delayed", "--event", "event.json", "--customer", "not-json.json"],
     "not-json.json is not a json customer record"),
])
def test_a_missing_file_or_bad_option_is_one_plain_line(tmp_path, args, says):
    write(tmp_path / "not-json.json", "{customer")
    event = next(line for line in DEMO.joinpath("events.jsonl").read_text().splitlines() if "order.delayed" in line)
    write(tmp_path / "event.json", event)

    result = forewarn(*args, cwd=tmp_path, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")

    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and says in lines[0].lower(), lines


def test_a_tool_without_a_broker_address_says_so_in_one_line(tmp_path):
    result = forewarn("produce", "orders", str(jsonl(tmp_path / "e.jsonl", [order("e1")])), cwd=tmp_path)

    assert result.returncode == 2
    assert error_lines(result) == ["error set KAFKA_BOOTSTRAP_SERVERS (host:port of the broker to send to)"]
