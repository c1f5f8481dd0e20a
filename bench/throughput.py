"""Mixed order, cart and outage events through one worker on the embedded broker, against the hardware limit.

A generated week of a webshop-and-ISP (10,000 customers; carts, orders,
delays, outages over a few postcodes) is replayed with every event stamped
"now", through one worker deciding on wall-clock time: validation, routing,
rules, restraint (contact budget, dedupe, coalescing), rendering and producing
(FOREWARN_DISPATCH=0: sending is bench/dispatch.py's part). The rules are the
shipped ones without waits and quiet hours, so that every message is decided
when its event arrives and its latency can be measured.

1. Latency: the events at a fixed offered load (``--rate``, 2,000/s) for
   ``--seconds``; for each notification, its time on the topic minus the time
   its event was produced: p50, p99, max.
2. Throughput: the next events produced as fast as possible; events/s from the
   first produced to the worker's count of decided events (its metrics)
   reaching them all, and notifications/s over the same time.
3. Baseline, the hardware limit: a raw aiokafka loop in this process that
   consumes the same source messages and produces each once, on the same broker.

Last line: pipeline events/s / raw loop messages/s (target at least 0.3).

    .venv/bin/python bench/throughput.py [--rate 2000] [--seconds 10] [--burst 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.request import urlopen

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, deciding_worker, workspace  # noqa: E402
from streams.kafka.embedded import EmbeddedBroker  # noqa: E402
from streams.tools.generate import WeekSpec, generate_week  # noqa: E402
from streams.kafka.admin import ensure_topics, iter_topic, producer, wait_drained  # noqa: E402
from streams.tools.load_customers import load_customers  # noqa: E402
from streams.settings import Settings  # noqa: E402

RULES = """\
version: 1
defaults:
  quiet_hours: false
  budget: {count: 3, per: 7d}
rules:
  - id: outage-started
    on: outage.started
    category: service
    audience: area
    channels: [sms, email]
    template: outage_started
    essential: true
    tiers:
      basic: {channels: [email, sms]}
      premium: {channels: [sms, email], channel_mode: all}
  - id: outage-updated
    on: outage.updated
    category: service
    audience: told
    channels: [sms, email]
    template: outage_updated
    essential: true
    min_change: 30m
  - id: outage-resolved
    on: outage.resolved
    category: service
    audience: told
    channels: [sms, email]
    template: outage_resolved
    essential: true
  - id: order-delayed
    on: order.delayed
    category: service
    channels: [sms, email]
    template: order_delayed
    cancel_on: [order.delivered, order.cancelled]
  - id: order-shipped
    on: order.shipped
    category: service
    channels: [email]
    template: order_shipped
  - id: cart-reminder
    on: cart.updated
    category: marketing
    channels: [email]
    template: cart_reminder
"""
DECIDED_KINDS = {"due", "optout", "fallback"}  # the worker's own records, not source events
RENAMED = ("order_id", "cart_id", "outage_id")


def restamped(events: list[dict], tag: str, cycle_length: int) -> list[dict]:
    """The week's events as if they happened now; each pass over the week gets ids of its own.

    Orders, carts and outages are renamed per pass too, so that a second pass is
    new business, not a re-delivery that the dedupe would rightly refuse.
    """
    now = datetime.now(timezone.utc).isoformat()
    out = []
    for number, event in enumerate(events):
        suffix = f"-{tag}{number // cycle_length}"
        data = {k: (v + suffix if k in RENAMED else v) for k, v in event["data"].items()}
        out.append({**event, "id": event["id"] + suffix, "occurred_at": now, "data": data})
    return out


def produce_paced(bootstrap: str, settings: Settings, events: list[dict], rate: float | None) -> dict[str, float]:
    """Produce ``events`` at ``rate`` per second (None: as fast as possible); the time each was handed over."""
    sender = producer(bootstrap, linger_ms=0)
    sender.partitions_for(settings.topics.orders)
    produced: dict[str, float] = {}
    started = time.perf_counter()
    for number, event in enumerate(events):
        if rate:
            ahead = started + number / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        key = event.get("customer_id") or event["data"].get("outage_id")
        produced[event["id"]] = time.time()
        sender.send(settings.topics.for_event_type(event["type"]), key=key.encode(), value=orjson.dumps(event))
    sender.flush()
    sender.close()
    return produced


def decided_count(metrics_url: str) -> int:
    """Source events the worker's decide hop has finished (its processing-time histogram's count)."""
    with urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    total = 0
    for family in text_string_to_metric_families(text):
        if family.name == "forewarn_processing_seconds":
            total += sum(int(s.value) for s in family.samples
                         if s.name.endswith("_count") and s.labels.get("event_type") not in DECIDED_KINDS)
    return total


def routed(events: list[dict], partitions: int) -> int:
    """How many events the decide hop sees: an outage once per partition."""
    return sum(partitions if e["type"].startswith("outage.") else 1 for e in events)


def wait_decided(metrics_url: str, expected: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if decided_count(metrics_url) >= expected:
            return time.time()
        time.sleep(0.5)  # each look costs the worker a /metrics page (about 10 ms of its CPU)
    raise SystemExit(f"the worker decided {decided_count(metrics_url)} of {expected} events in {timeout:.0f} s")


def notifications_by_event(bootstrap: str, topic: str) -> list[tuple[float, list[str]]]:
    """(time on the topic in s, event ids) of every notification so far."""
    return [(m.timestamp / 1000, orjson.loads(m.value)["event_ids"]) for m in iter_topic(bootstrap, topic, timeout=5)]


async def raw_loop(bootstrap: str, topics: tuple[str, ...], expected: int, out_topic: str) -> float:
    """Consume ``expected`` messages from ``topics`` and produce each once; messages per second."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100)
    sink = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1_048_576)
    await consumer.start()
    await sink.start()
    try:
        seen, started = 0, None
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for messages in batches.values():
                started = started or time.perf_counter()
                for message in messages:
                    await sink.send(out_topic, message.value, key=message.key)
                seen += len(messages)
        await sink.flush()
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await sink.stop()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2_000.0, help="offered load for the latency phase, events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--burst", type=int, default=20_000, help="events in the throughput phase")
    parser.add_argument("--customers", type=int, default=10_000)
    args = parser.parse_args()

    work, rules_path = workspace("throughput", RULES)
    customers_path, events_path = generate_week(WeekSpec(customers=args.customers), work / "week")
    week = [orjson.loads(line) for line in events_path.read_bytes().splitlines() if line.strip()]
    week = [e for e in week if not e["type"].startswith("customer.")]
    wanted = int(args.rate * args.seconds) + args.burst
    events = list(itertools.islice(itertools.cycle(week), wanted))
    latency_events, burst_events = events[:int(args.rate * args.seconds)], events[int(args.rate * args.seconds):]
    kinds = {kind: sum(1 for e in events if e["type"].split(".")[0] == kind) for kind in ("order", "cart", "outage")}
    print(f"events: {len(events):,} from a generated week ({kinds['order']:,} order, {kinds['cart']:,} cart, "
          f"{kinds['outage']:,} outage), {args.customers:,} customers")

    settings = Settings.from_env()
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, [*settings.topics.all(), "bench-raw"], settings.partitions)
        worker = deciding_worker(broker, work, rules_path, FOREWARN_CLOCK="wall")
        app_id = worker.env["FOREWARN_APP_ID"]
        metrics_url = f"http://127.0.0.1:{worker.env['FOREWARN_METRICS_PORT']}/metrics"
        try:
            load_customers(broker.bootstrap, settings.topics.customers, customers_path)
            if not wait_drained(broker.bootstrap, app_id, (settings.topics.customers, settings.topics.events), 600,
                                alive=lambda: worker.running):
                raise SystemExit(f"the worker did not take in the customers; see {worker.log_path}")
            before = decided_count(metrics_url)

            phase = restamped(latency_events, "lat", len(week))
            produced = produce_paced(broker.bootstrap, settings, phase, args.rate)
            offered = len(phase) / (max(produced.values()) - min(produced.values()))
            wait_decided(metrics_url, before + routed(phase, settings.partitions), 120)
            notified = notifications_by_event(broker.bootstrap, settings.topics.notifications)
            latencies = [(at - max(produced[i] for i in ids if i in produced)) * 1000
                         for at, ids in notified if any(i in produced for i in ids)]
            print(f"latency at {offered:,.0f} events/s offered for {args.seconds:.0f} s: {len(latencies):,} "
                  f"notifications, event produced to notification on the topic p50 "
                  f"{statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
                  f"max {max(latencies):.1f} ms (target p99 under 250 ms)", flush=True)

            before, notified_before = decided_count(metrics_url), len(notified)
            phase = restamped(burst_events, "burst", len(week))
            cpu_before = cpu_seconds(worker.process.pid)
            produced = produce_paced(broker.bootstrap, settings, phase, None)
            done = wait_decided(metrics_url, before + routed(phase, settings.partitions), 600)
            worker_cpu = cpu_seconds(worker.process.pid) - cpu_before
            elapsed = done - min(produced.values())
            burst_notified = len(notifications_by_event(broker.bootstrap, settings.topics.notifications)) - notified_before
            pipeline_rate = len(phase) / elapsed
            print(f"throughput: {len(phase):,} events as fast as they come, all decided {elapsed:.2f} s after the "
                  f"first was produced: {pipeline_rate:,.0f} events/s, {burst_notified / elapsed:,.0f} "
                  f"notifications/s through one worker; worker CPU {worker_cpu / len(phase) * 1e6:,.0f} µs an event",
                  flush=True)
        finally:
            worker.stop()

        total = len(events)
        raw_rate = asyncio.run(raw_loop(broker.bootstrap, settings.topics.source()[:3], total, "bench-raw"))
        print(f"baseline: a raw aiokafka consume-and-produce loop over the same {total:,} messages: {raw_rate:,.0f}/s")
    print(f"ratio pipeline / raw loop: {pipeline_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
