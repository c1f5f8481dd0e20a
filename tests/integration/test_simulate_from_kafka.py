"""simulate and plan read their input straight from the topics, and decide as they do over the same files."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import cli
from streams.kafka.admin import producer
from streams.settings import ROOT
from streams.tools.customer_files import read_customer_rows, upsert_event

pytestmark = pytest.mark.broker
DEMO = ROOT / "config" / "demo"
runner = CliRunner()


def load_demo(bootstrap: str, settings) -> None:
    sender = producer(bootstrap)
    try:
        for line, record, _ in read_customer_rows(DEMO / "customers.jsonl"):
            sender.send(settings.topics.customers, key=record["customer_id"].encode(),
                        value=orjson.dumps(upsert_event(record, sequence=line)))
        for raw in DEMO.joinpath("events.jsonl").read_bytes().splitlines():
            event = orjson.loads(raw)
            topic = settings.topics.for_event_type(event["type"])
            key = event.get("customer_id") or event["data"].get("outage_id")
            sender.send(topic, key=key.encode(), value=raw)
        sender.flush()
    finally:
        sender.close()


def notifications(folder) -> list[dict]:
    return sorted((orjson.loads(line) for line in (folder / "notifications.jsonl").read_bytes().splitlines()),
                  key=lambda n: n["id"])


def test_simulate_from_kafka_decides_what_simulate_over_the_files_does(broker, settings, tmp_path, monkeypatch):
    load_demo(broker.bootstrap, settings)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    from_topics = runner.invoke(cli, ["simulate", "--from-kafka", "--since", "3650d", "--out", str(tmp_path / "k")])
    assert from_topics.exit_code == 0, from_topics.output
    assert "read 14 customers and" in from_topics.output
    from_files = runner.invoke(cli, ["simulate", "--customers", str(DEMO / "customers.jsonl"),
                                     "--events", str(DEMO / "events.jsonl"), "--out", str(tmp_path / "f")])
    assert from_files.exit_code == 0, from_files.output
    topics, files = notifications(tmp_path / "k"), notifications(tmp_path / "f")
    assert len(files) == 30
    assert [(n["id"], n["rule"], n["channel"], n["body"]) for n in topics] == \
        [(n["id"], n["rule"], n["channel"], n["body"]) for n in files]


def test_plan_from_kafka_counts_the_customers_topic(broker, settings, tmp_path, monkeypatch):
    load_demo(broker.bootstrap, settings)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    outage = next(line for line in DEMO.joinpath("events.jsonl").read_bytes().splitlines()
                  if b"outage.started" in line)
    path = tmp_path / "outage.json"
    path.write_bytes(outage)
    from_topic = runner.invoke(cli, ["plan", str(path), "--from-kafka", "--json"])
    from_file = runner.invoke(cli, ["plan", str(path), "--customers", str(DEMO / "customers.jsonl"), "--json"])
    assert from_topic.exit_code == 0 and from_file.exit_code == 0, from_topic.output + from_file.output
    topic_plan = orjson.loads(from_topic.output[from_topic.output.index("{"):])
    file_plan = orjson.loads(from_file.output)
    assert topic_plan["recipients"] == file_plan["recipients"] and topic_plan["cost"] == file_plan["cost"]


def test_from_kafka_without_a_broker_setting_is_one_plain_line(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    result = runner.invoke(cli, ["simulate", "--from-kafka"])
    assert result.exit_code == 2 and "set KAFKA_BOOTSTRAP_SERVERS" in result.output
