"""``forewarn demo``: the whole pipeline on the embedded broker, with demo customers and events."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from streams.kafka.embedded import EmbeddedBroker, free_port
from streams.kafka.admin import ensure_topics, read_topic, replay_in_order, wait_drained
from streams.tools.load_customers import load_customers
from streams.privacy import mask
from streams.tools.worker_process import WorkerProcess
from streams.tools.local_providers import LocalProviders
from streams.settings import Settings


def run_demo(settings: Settings, customers: Path, events: Path, outbox: Path, timeout: float,
             console: Console, imitation: bool = False) -> None:
    topics = settings.topics
    with EmbeddedBroker() as broker, ExitStack() as stack:
        console.print(f"[bold]1.[/bold] embedded broker (Tansu, memory only) on {broker.bootstrap}")
        ensure_topics(broker.bootstrap, topics.all(), settings.partitions, compacted=topics.compacted())
        providers = {}
        if imitation:
            local = stack.enter_context(LocalProviders(settings, broker.bootstrap, sms_rate=20.0, email_rate=50.0))
            providers = {**local.env, "FOREWARN_SMS_RATE": "20", "FOREWARN_EMAIL_RATE": "50"}
            console.print(f"   Twilio and SendGrid imitation on {local.imitation.url}, receipts to {local.receiver.url}")
        log_path = Path(tempfile.gettempdir()) / f"forewarn-demo-worker-{broker.port}.log"
        worker = WorkerProcess({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "FOREWARN_OUTBOX": str(outbox),
                                "FOREWARN_METRICS_PORT": str(free_port()),
                                # The demo's events are from one afternoon: decide on their time, as the simulator does.
                                "FOREWARN_CLOCK": "event", "FOREWARN_RULES": str(settings.rules_file),
                                "FOREWARN_TEMPLATES": str(settings.template_dir), **providers}, log_path).start()
        started = time.monotonic()
        try:
            sent, _ = load_customers(broker.bootstrap, topics.customers, customers)
            console.print(f"[bold]2.[/bold] worker started; {sent} customers sent to '{topics.customers}'")
            pipeline = (*topics.source(), topics.events, topics.due, topics.notifications)
            if not wait_drained(broker.bootstrap, settings.app_id, pipeline, timeout, alive=lambda: worker.running):
                raise SystemExit(f"the worker stopped or did not take in the customers within {timeout:.0f} s; log: {log_path}")
            console.print(f"   directory filled after {time.monotonic() - started:.1f} s")
            lines = [line for line in events.read_bytes().splitlines() if line.strip()]
            replayed = replay_in_order(broker.bootstrap, topics.for_event_type, lines, topics.orders,
                                       ingested=(topics.events, topics.deadletter))
            console.print(f"[bold]3.[/bold] replayed {replayed} events from {events}")
            # Quiet for longer than the worker's idle time: by then it has decided what was still pending.
            if not wait_drained(broker.bootstrap, settings.app_id, pipeline, timeout, alive=lambda: worker.running,
                                settle=settings.event_idle + 3):
                raise SystemExit(f"the pipeline did not drain within {timeout:.0f} s; log: {log_path}")
            suppressed = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, topics.suppressed)]
            dead = read_topic(broker.bootstrap, topics.deadletter)
            if imitation:
                sent = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, topics.notifications)]
                receipts = _wait_for_receipts(broker.bootstrap, topics.deliveries, len(sent), timeout=30)
        finally:
            worker.stop()
    if imitation:
        _show_providers(console, sent, local.imitation.accepted, receipts)
        console.print(f"dead-lettered events: {len(dead)}; worker log: {log_path}")
        return
    _show(console, outbox, suppressed, len(dead), log_path)


def _wait_for_receipts(bootstrap: str, topic: str, expected: int, timeout: float) -> list[dict]:
    """Delivery receipts come back from the providers' callbacks a moment after the sends."""
    deadline = time.monotonic() + timeout
    while True:
        records = [orjson.loads(m.value) for m in read_topic(bootstrap, topic)]
        delivered = {r["notification_id"] for r in records if r["status"] == "delivered"}
        if len(delivered) >= expected or time.monotonic() > deadline:
            return records
        time.sleep(1)


def _show_providers(console: Console, sent: list[dict], accepted: list, receipts: list[dict]) -> None:
    if not console.is_terminal:
        console = Console(width=max(console.width, 160))
    status: dict[str, str] = {}
    for receipt in receipts:  # the latest word per notification: sent, then delivered
        if status.get(receipt["notification_id"]) != "delivered":
            status[receipt["notification_id"]] = receipt["status"]
    table = Table(title=f"{len(accepted)} messages accepted by the Twilio and SendGrid imitation")
    for column in ("rule", "channel", "customer", "to", "provider id", "receipt"):
        table.add_column(column, no_wrap=True)
    by_id = {n["id"]: n for n in sent}
    for message in sorted(accepted, key=lambda m: (by_id.get(m.notification_id, {}).get("rule", ""), m.to)):
        notification = by_id.get(message.notification_id, {})
        table.add_row(notification.get("rule", "?"), notification.get("channel", message.provider),
                      notification.get("customer_id", "?"), mask(message.to), message.sid,
                      status.get(message.notification_id, "-"))
    console.print(table)
    delivered = sum(1 for value in status.values() if value == "delivered")
    console.print(f"{len(sent)} notifications decided, {len(accepted)} accepted by the providers, "
                  f"{delivered} delivered receipts back on the deliveries topic")


def _show(console: Console, outbox: Path, suppressed: list[dict], dead: int, log_path: Path) -> None:
    if not console.is_terminal:
        console = Console(width=max(console.width, 160))
    path = outbox / "notifications.jsonl"
    sent = [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
    table = Table(title=f"{len(sent)} notifications sent to the outbox")
    for column in ("rule", "channel", "customer", "to", "lang"):
        table.add_column(column, no_wrap=True)
    table.add_column("message (SMS text / email subject)", overflow="fold", min_width=40)
    for item in sorted(sent, key=lambda n: (n["rule"], n["customer_id"], n["channel"])):
        text = item["subject"] if item["channel"] == "email" else item["body"]
        table.add_row(item["rule"], item["channel"], item["customer_id"], mask(item["to"]), item["locale"], text)
    console.print(table)
    reasons = Counter((s["rule"], s["reason"]) for s in suppressed)
    if reasons:
        console.print("held back: " + ", ".join(f"{rule} {reason} x{n}" for (rule, reason), n in reasons.items()))
    console.print(f"dead-lettered events: {dead}")
    console.print(f"outbox: {path.resolve()} (emails as .eml in {(outbox / 'email').resolve()})")
    console.print(f"worker log: {log_path}")
