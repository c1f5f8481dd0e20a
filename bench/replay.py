"""The full-week replay: the generated week produced at full speed gives exactly the simulator's messages.

    .venv/bin/python bench/replay.py [--customers 10000] [--workers 1,2] [--orders interleaved,by-topic]

For each number of workers and each way of producing (``streams.tools.replay``)
it starts a fresh embedded broker, loads the customers, produces the week as
fast as the producer goes, waits until the workers are drained and idle, and
compares the outbox with ``forewarn simulate`` over the same files. Prints one
line per run: the counts, the time from first event produced to drained, and
"identical to the simulator" or what differs. Exits non-zero on a difference.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.core.config import load_config  # noqa: E402
from streams.kafka.admin import ensure_topics, wait_drained  # noqa: E402
from streams.kafka.embedded import EmbeddedBroker, free_port  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tools.generate import WeekSpec, generate_week  # noqa: E402
from streams.tools.load_customers import load_customers  # noqa: E402
from streams.tools.replay import ORDERS, compare, produce_events, read_notifications  # noqa: E402
from streams.tools.simulate import simulate  # noqa: E402
from streams.tools.worker_process import WorkerProcess  # noqa: E402

from bench.common import workspace  # noqa: E402


def run_once(week: Path, work: Path, workers: int, order: str, settings: Settings) -> tuple[str, bool]:
    out = work / f"{order}-{workers}"
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, settings.topics.all(), settings.partitions)
        app_id = f"replay-{uuid.uuid4().hex[:6]}"
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "FOREWARN_APP_ID": app_id, "FOREWARN_CLOCK": "event",
               "FOREWARN_OUTBOX": str(out / "outbox"), "FOREWARN_LOG_LEVEL": "warning"}
        running = [WorkerProcess({**env, "FOREWARN_METRICS_PORT": str(free_port()),
                                  "FOREWARN_DATA_DIR": str(out / f"data-{n}")}, out / f"worker-{n}.log").start()
                   for n in range(workers)]
        topics = (*settings.topics.source(), settings.topics.events, settings.topics.due,
                  settings.topics.notifications)
        try:
            load_customers(broker.bootstrap, settings.topics.customers, week / "customers.jsonl")
            if not wait_drained(broker.bootstrap, app_id, topics, 600, settle=3, alive=lambda: all(w.running for w in running)):
                return "the customers were not taken in", False
            started = time.monotonic()
            produced = produce_events(broker.bootstrap, settings.topics.for_event_type,
                                      (week / "events.jsonl").read_bytes().splitlines(), order)
            if not wait_drained(broker.bootstrap, app_id, topics, 1800, settle=settings.event_idle + 5,
                                alive=lambda: all(w.running for w in running)):
                return "the workers did not drain", False
            seconds = time.monotonic() - started - settings.event_idle - 5
        finally:
            for worker in running:
                worker.kill()
    result = compare(read_notifications(out / "outbox" / "notifications.jsonl"),
                     read_notifications(week / "simulation" / "notifications.jsonl"))
    return f"{produced} events in {seconds:.0f} s: {result.describe()}", result.identical


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--orders", default=",".join(ORDERS))
    args = parser.parse_args()
    settings = Settings.from_env()
    work, _ = workspace("replay", "")
    week = work / "week"
    generate_week(WeekSpec(customers=args.customers), week)
    simulate(load_config(settings), week / "customers.jsonl", week / "events.jsonl", week / "simulation")
    simulated = len(read_notifications(week / "simulation" / "notifications.jsonl"))
    print(f"week: {args.customers} customers; the simulator sends {simulated} notifications")
    all_identical = True
    for workers in (int(n) for n in args.workers.split(",")):
        for order in args.orders.split(","):
            line, identical = run_once(week, work, workers, order, settings)
            all_identical &= identical
            print(f"{workers} worker{'s' if workers > 1 else ''}, {order}: {line}", flush=True)
    return 0 if all_identical else 1


if __name__ == "__main__":
    sys.exit(main())
