"""Worker start to first processed event, on the embedded broker (target: under 10 s).

Starts a fresh broker, then the forewarn worker, produces one customer and one
order.delayed event at once, and times until the decision is on the
``notifications`` (or ``suppressed``) topic. The baseline is a bare faust app with one forwarding
agent, started the same way in the same run: the share of start-up that is
faust's group join rather than forewarn.

    .venv/bin/python bench/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.kafka.embedded import EmbeddedBroker, free_port  # noqa: E402
from streams.tools.customer_files import upsert_event  # noqa: E402
from streams.kafka.admin import ensure_topics, iter_topic, produce_json  # noqa: E402
from streams.tools.worker_process import WorkerProcess  # noqa: E402
from streams.settings import Settings  # noqa: E402

CUSTOMER = orjson.loads(ROOT.joinpath("config/demo/customers.jsonl").read_bytes().splitlines()[7])
DELAYED = {"id": "bench-1", "type": "order.delayed", "occurred_at": "2026-11-25T14:00:00+01:00",
           "customer_id": CUSTOMER["customer_id"],
           "data": {"order_id": "ORD-B", "old_eta": "2026-11-26T12:00:00+01:00",
                    "new_eta": "2026-11-28T12:00:00+01:00", "reason": "bench"}}


def wait_for_message(bootstrap: str, *topics: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for topic in topics:
            if any(True for _ in iter_topic(bootstrap, topic, timeout=0.2)):
                return True
    return False


def forewarn_once(settings: Settings, log_dir: Path) -> float:
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, settings.topics.all(), settings.partitions)
        started = time.monotonic()
        worker = WorkerProcess({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "FOREWARN_APP_ID": f"bench-{uuid.uuid4().hex[:6]}",
                                "FOREWARN_OUTBOX": str(log_dir / "outbox"), "FOREWARN_METRICS_PORT": str(free_port())},
                               log_dir / "startup-worker.log").start()
        try:
            produce_json(broker.bootstrap, settings.topics.customers,
                         [(CUSTOMER["customer_id"], upsert_event(CUSTOMER))])
            produce_json(broker.bootstrap, settings.topics.orders, [(CUSTOMER["customer_id"], DELAYED)])
            # Customers and orders are separate topics, so the order may be decided before the
            # customer is known (then it is suppressed as unknown_customer): either is a processed event.
            if not wait_for_message(broker.bootstrap, settings.topics.notifications, settings.topics.suppressed):
                raise SystemExit(f"no decision within 60 s; see {worker.log_path}")
            return time.monotonic() - started
        finally:
            worker.kill()


def bare_once(log_dir: Path) -> float:
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["bare-in", "bare-out"], 4)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "BARE_APP_ID": f"bare-{uuid.uuid4().hex[:6]}",
               "PYTHONPATH": str(ROOT)}
        started = time.monotonic()
        with (log_dir / "startup-bare.log").open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "faust", "-A", "bench._bare_faust", "worker", "-l", "warn"],
                                       env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir)
        try:
            produce_json(broker.bootstrap, "bare-in", [(None, b"x")])
            if not wait_for_message(broker.bootstrap, "bare-out"):
                raise SystemExit("bare faust forwarded nothing within 60 s")
            return time.monotonic() - started
        finally:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.from_env()
    log_dir = Path(tempfile.mkdtemp(prefix="forewarn-bench-"))
    ours = [forewarn_once(settings, log_dir) for _ in range(args.runs)]
    bare = [bare_once(log_dir) for _ in range(args.runs)]
    print(f"forewarn worker start -> first decided event: median {statistics.median(ours):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"bare faust start -> first forwarded message: median {statistics.median(bare):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in bare)})")
    print(f"ratio forewarn/bare start-up: {statistics.median(ours) / statistics.median(bare):.2f} "
          f"(target: forewarn under 10 s)")


if __name__ == "__main__":
    main()
