"""Worker memory: RSS with 0, 100,000 and 1,000,000 customers, then with 100,000 pending timers.

Customers are loaded through kafka-python into one worker on the embedded
broker (FOREWARN_DISPATCH=0); then 100,000 of them update a cart, and the rule
holds each reminder for an hour: 100,000 pending messages in the customers'
states and in the due index. Printed: RSS at each step, bytes per customer and
per pending timer. Last line: the worker's bytes per customer over the size of
the customer's record as JSON (the data itself).

    .venv/bin/python bench/memory.py [--customers 1000000] [--pending 100000]

The decision state alone, in-process and in seconds: bench/state_memory.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import deciding_worker, rss, workspace  # noqa: E402
from bench.fanout import customer_rows  # noqa: E402
from streams.kafka.embedded import EmbeddedBroker  # noqa: E402
from streams.tools.customer_files import read_customer_rows, write_customer_csv  # noqa: E402
from streams.kafka.admin import ensure_topics, produce_json, read_topic, wait_drained  # noqa: E402
from streams.tools.load_customers import load_customers  # noqa: E402
from streams.settings import Settings  # noqa: E402

RULES = """\
version: 1
defaults: {quiet_hours: false}
rules:
  - id: cart-reminder
    on: cart.updated
    category: marketing
    channels: [email]
    template: cart_reminder
    wait: 1h
    cancel_on: [cart.checked_out]
"""


def cart(number: int) -> tuple[str, dict]:
    customer_id = f"C{number:07d}"
    return customer_id, {
        "id": f"mem-cart-{number}", "type": "cart.updated", "customer_id": customer_id,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
        "data": {"cart_id": f"CART-{number}", "items": [{"sku": "DECO-X50", "name": "TP-Link Deco X50", "qty": 1,
                                                          "unit_price": 179.0}],
                 "total": 179.0, "currency": "EUR", "checkout_url": f"https://shop.example.nl/cart/{number}"}}


def settled_rss(pid: int, seconds: float = 35.0) -> int:
    """RSS once the worker's collector has settled (it does so every 30 s when idle)."""
    time.sleep(seconds)
    return rss(pid)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--first", type=int, default=100_000, help="customers at the intermediate step")
    parser.add_argument("--pending", type=int, default=100_000)
    args = parser.parse_args()

    work, rules_path = workspace("memory", RULES)
    rows = list(customer_rows(args.customers, 2_000))
    first_csv, rest_csv = work / "first.csv", work / "rest.csv"
    write_customer_csv(first_csv, rows[:args.first])
    write_customer_csv(rest_csv, rows[args.first:])
    record_bytes = sum(len(orjson.dumps(record)) for _, record, _ in read_customer_rows(first_csv)) / args.first

    settings = Settings.from_env()
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, settings.topics.all(), settings.partitions)
        worker = deciding_worker(broker, work, rules_path)
        app_id = worker.env["FOREWARN_APP_ID"]
        pipeline = (settings.topics.customers, settings.topics.carts, settings.topics.events)

        def drained() -> None:
            if not wait_drained(broker.bootstrap, app_id, pipeline, 3600, settle=2, alive=lambda: worker.running):
                raise SystemExit(f"the worker did not keep up; see {worker.log_path}")

        try:
            # Up and deciding: a cart of a customer not yet known comes back as a suppression.
            probe_key, probe = cart(0)
            produce_json(broker.bootstrap, settings.topics.carts, [(probe_key, {**probe, "id": "mem-probe"})])
            deadline = time.monotonic() + 300
            while not read_topic(broker.bootstrap, settings.topics.suppressed) and time.monotonic() < deadline:
                time.sleep(1)
            drained()
            empty = settled_rss(worker.process.pid)
            print(f"worker RSS with no customers: {empty / 2**20:,.0f} MiB", flush=True)
            load_customers(broker.bootstrap, settings.topics.customers, first_csv)
            drained()
            first = settled_rss(worker.process.pid)
            print(f"with {args.first:,} customers: {first / 2**20:,.0f} MiB "
                  f"({(first - empty) / args.first:,.0f} bytes per customer)", flush=True)
            load_customers(broker.bootstrap, settings.topics.customers, rest_csv)
            drained()
            full = settled_rss(worker.process.pid)
            per_customer = (full - empty) / args.customers
            print(f"with {args.customers:,} customers: {full / 2**20:,.0f} MiB "
                  f"({per_customer:,.0f} bytes per customer)", flush=True)
            produce_json(broker.bootstrap, settings.topics.carts, (cart(n) for n in range(args.pending)))
            drained()
            pending = settled_rss(worker.process.pid)
            print(f"with {args.pending:,} pending reminders as well: {pending / 2**20:,.0f} MiB "
                  f"({(pending - full) / args.pending:,.0f} bytes per pending timer)", flush=True)
        finally:
            worker.stop()
    print(f"a customer's record as JSON: {record_bytes:,.0f} bytes")
    print(f"ratio worker bytes per customer / record bytes: {per_customer / record_bytes:.2f}")


if __name__ == "__main__":
    main()
