"""Outage fan-out at ISP scale, through one worker on the embedded broker.

1,000,000 customers over 20,000 postcodes (2,000 PC4 areas of 10 PC6 each) are
loaded through kafka-python into a worker; then three ``outage.started``, one
after the other, each hit 200 other PC4 areas: 100,000 customers each. Printed:
load and materialise times, the worker's RSS with the customers loaded; for each
outage the time from producing it to the last notification on the
``notifications`` topic, notifications per second and the CPU used; the median
speed and the peak RSS. Two baselines measured in this same run: raw produce
(the last outage's notifications, as they lie on the topic, produced again by
an aiokafka producer with the worker's batching and compression to a topic of
as many partitions: the hardware limit for putting that many messages on
Kafka), and the same fan-out through the decision core in-process (the
simulator's speed). Last line: the ratio worker / raw produce.

The worker runs ingest and decide only (FOREWARN_DISPATCH=0), as a fan-out
worker would in production next to separate dispatch workers; the rules are
config/rules.yaml's outage notice without its grace period.

    .venv/bin/python bench/fanout.py [--customers 1000000] [--areas 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, deciding_worker, rss, workspace  # noqa: E402
from streams import gc_tuning  # noqa: E402
from streams.kafka.embedded import EmbeddedBroker  # noqa: E402
from streams.core.decider import Decider, Notification  # noqa: E402
from streams.core.directory import CustomerDirectory  # noqa: E402
from streams.core.render import Renderer  # noqa: E402
from streams.core.rules import load_rules  # noqa: E402
from streams.tools.customer_files import read_customer_rows, write_customer_csv  # noqa: E402
from streams.core.events import Schemas  # noqa: E402
from streams.kafka.admin import client_options, ensure_topics, producer, wait_drained  # noqa: E402
from streams.tools.load_customers import load_customers  # noqa: E402
from streams.settings import Settings  # noqa: E402

RULES = """\
version: 1
defaults: {quiet_hours: false}
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
"""
LETTERS = "ABCDEFGHJKLMNPRSTVWXZ"


def customer_rows(count: int, areas: int) -> Iterator[list[str]]:
    for number in range(count):
        area = 1000 + number % areas
        postcode = f"{area}{LETTERS[number // areas % 10]}{LETTERS[number // areas // 10 % 21]}"
        yield [f"C{number:07d}", "Jan Jansen", f"+3161{number % 10_000_000:07d}",
               f"klant{number}@example.nl", "en" if number % 7 == 0 else "nl", "Europe/Amsterdam",
               ("basic", "standard", "premium")[number % 3], postcode, f"N-{area}",
               "true" if number % 997 == 0 else "false", "true" if number % 5 else "false", "true"]


class NotificationCounter:
    """Reads the ``notifications`` topic from its start, one outage's worth at a time."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = KafkaConsumer(**client_options(bootstrap), enable_auto_commit=False,
                                      fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
        self.consumer.assign([TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic))])
        self.consumer.seek_to_beginning()

    def count_until(self, expected: int, timeout: float, keep: list | None = None) -> tuple[int, float, float]:
        """The next ``expected`` messages: (count, broker timestamps of the first and last, in s).

        Their (key, value) pairs are appended to ``keep`` if given.
        """
        seen, first, last, deadline = 0, float("inf"), 0.0, time.monotonic() + timeout
        while seen < expected and time.monotonic() < deadline:
            for messages in self.consumer.poll(timeout_ms=500, max_records=expected - seen).values():
                seen += len(messages)
                if keep is not None:
                    keep.extend((m.key, m.value) for m in messages)
                first = min(first, min(m.timestamp for m in messages) / 1000)
                last = max(last, max(m.timestamp for m in messages) / 1000)
        return seen, first, last

    def close(self) -> None:
        self.consumer.close()


def outage(number: int, areas: int) -> dict:
    """The ``number``-th outage of the run: each hits its own ``areas`` PC4 areas, so each reaches new customers."""
    return {"id": f"bench-{uuid.uuid4().hex[:6]}", "type": "outage.started",
            "occurred_at": datetime.now(timezone.utc).isoformat(),
            "data": {"outage_id": f"OUT-BENCH-{number}", "service": "internet",
                     "areas": [str(1000 + number * areas + a) for a in range(areas)],
                     "expected_end": "2026-11-25T23:00:00+01:00"}}


async def raw_produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], settings: Settings) -> float:
    """Produce ``messages`` as fast as aiokafka takes them, batched as the worker does; messages per second."""
    sink = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=settings.producer_batch_bytes,
                            compression_type=settings.compression, acks=-1)
    await sink.start()
    try:
        await sink.partitions_for(topic)
        started = time.perf_counter()
        pending = [await sink.send(topic, value, key=key) for key, value in messages]
        await sink.flush()
        await asyncio.gather(*pending)
        return len(messages) / (time.perf_counter() - started)
    finally:
        await sink.stop()


def simulator_baseline(customers_csv: Path, rules_path: Path, event: dict) -> tuple[int, float]:
    gc_tuning.tune()
    renderer = Renderer(ROOT / "templates")
    decider = Decider(load_rules(rules_path, renderer, Schemas()), renderer, CustomerDirectory())
    for _, record, _ in read_customer_rows(customers_csv):
        decider.directory.upsert({"id": record.pop("customer_id"), **record})
    gc_tuning.settle()  # the worker's collector settings, so the baseline is not slowed by the default ones
    started = time.perf_counter()
    sent = sum(1 for o in decider.handle(event, datetime.now(timezone.utc)) if isinstance(o, Notification))
    return sent, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--postcode-areas", type=int, default=2_000, help="PC4 areas (10 PC6 postcodes each)")
    parser.add_argument("--areas", type=int, default=200, help="PC4 areas the outage hits")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="outages, one after another, each to new customers")
    args = parser.parse_args()

    work, rules_path = workspace("fanout", RULES)
    customers_csv = work / "customers.csv"
    write_customer_csv(customers_csv, customer_rows(args.customers, args.postcode_areas))
    if args.repeat * args.areas > args.postcode_areas:
        raise SystemExit("--repeat times --areas must not exceed --postcode-areas")

    os.environ["FOREWARN_PARTITIONS"] = str(args.partitions)
    settings = Settings.from_env()
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, [*settings.topics.all(), "bench-raw"], args.partitions)
        worker = deciding_worker(broker, work, rules_path, FOREWARN_PARTITIONS=str(args.partitions))
        app_id = worker.env["FOREWARN_APP_ID"]
        try:
            started = time.monotonic()
            sent, _ = load_customers(broker.bootstrap, settings.topics.customers, customers_csv)
            loaded = time.monotonic() - started
            pipeline = (settings.topics.customers, settings.topics.events)
            if not wait_drained(broker.bootstrap, app_id, pipeline, 3600, settle=2, alive=lambda: worker.running):
                raise SystemExit(f"the worker did not take in the customers; see {worker.log_path}")
            materialised = time.monotonic() - started
            idle_rss, idle_peak = rss(worker.process.pid)
            print(f"customers: {sent:,} loaded in {loaded:.1f} s ({sent / loaded:,.0f}/s), materialised by the "
                  f"worker after {materialised:.1f} s ({sent / materialised:,.0f}/s)")
            print(f"worker RSS with {sent:,} customers: {idle_rss / 2**20:,.0f} MiB "
                  f"({idle_rss / sent:,.0f} bytes per customer)", flush=True)

            outage_producer = producer(broker.bootstrap)  # connected before the clock starts
            outage_producer.partitions_for(settings.topics.outages)
            counter = NotificationCounter(broker.bootstrap, settings.topics.notifications)
            runs, last_outage = [], []
            for number in range(args.repeat):
                event = outage(number, args.areas)
                cpu_before = cpu_seconds(worker.process.pid), cpu_seconds(broker.process.pid)
                produced = time.time()
                outage_producer.send(settings.topics.outages, key=event["data"]["outage_id"].encode(),
                                     value=orjson.dumps(event))
                outage_producer.flush()
                expected = sum(1 for n in range(args.customers)
                               if number * args.areas <= n % args.postcode_areas < (number + 1) * args.areas)
                last_outage.clear()
                count, first, last = counter.count_until(expected, 1800, keep=last_outage)
                cpu = cpu_seconds(worker.process.pid) - cpu_before[0], cpu_seconds(broker.process.pid) - cpu_before[1]
                elapsed = last - produced
                runs.append(count / elapsed)
                now_rss, _ = rss(worker.process.pid)
                print(f"outage {number + 1} hitting {expected:,} customers: {count:,} notifications, the last "
                      f"{elapsed:.2f} s after outage.started was produced: {count / elapsed:,.0f} notifications/s "
                      f"through one worker; the first after {first - produced:.2f} s; CPU: worker "
                      f"{cpu[0]:.2f} s ({cpu[0] / elapsed:.0%} of a core), broker {cpu[1]:.2f} s "
                      f"({cpu[1] / elapsed:.0%}); worker RSS after it {now_rss / 2**20:,.0f} MiB", flush=True)
                time.sleep(2)  # let the worker commit and settle, as between two real outages
            outage_producer.close()
            counter.close()
            _, peak = rss(worker.process.pid)
        finally:
            worker.stop()
        raw_rate = asyncio.run(raw_produce(broker.bootstrap, "bench-raw", last_outage, settings))
    speed = statistics.median(runs)
    print(f"worker peak RSS during the run {peak / 2**20:,.0f} MiB")
    print(f"fan-out speed, median of {len(runs)} outages: {speed:,.0f} notifications/s through one worker")
    print(f"baseline, raw produce: the last outage's {len(last_outage):,} notifications produced again by one "
          f"aiokafka producer (linger 5 ms, {settings.compression or 'no'} compression): {raw_rate:,.0f}/s")
    baseline_sent, baseline_seconds = simulator_baseline(customers_csv, rules_path, outage(0, args.areas))
    print(f"baseline, the decision core in-process (simulator): {baseline_sent:,} notifications in "
          f"{baseline_seconds:.2f} s = {baseline_sent / baseline_seconds:,.0f}/s")
    print(f"ratio worker / simulator fan-out speed: {speed / (baseline_sent / baseline_seconds):.2f}")
    print(f"ratio worker fan-out speed / raw produce: {speed / raw_rate:.2f}")


if __name__ == "__main__":
    main()
