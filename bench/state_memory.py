"""Bytes per notified customer of the decision state, in-process (tracemalloc), shipped rules.

An outage reaches every one of ``--customers`` customers; after the notices
have fired, what the Decider keeps is measured: the customers' states as
compact msgpack bytes (``streams.core.state``). Baseline, in the same run:
the same states as Python dicts with named keys, the way the Decider kept them
before (2026-12-02), and the customer's record as JSON. Last line: the ratio.

    .venv/bin/python bench/state_memory.py [--customers 20000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import customer_rows  # noqa: E402
from streams.core.config import load_config  # noqa: E402
from streams.core.decider import Decider  # noqa: E402
from streams.core.directory import CustomerDirectory  # noqa: E402
from streams.core.state import decode_state  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tools.customer_files import CSV_COLUMNS  # noqa: E402

START = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def directory_of(count: int) -> CustomerDirectory:
    directory = CustomerDirectory()
    for row in customer_rows(count, 200):
        r = dict(zip(CSV_COLUMNS, row))
        directory.upsert({"id": r["customer_id"], "name": r["name"], "phone": r["phone"], "email": r["email"],
                          "locale": r["locale"], "timezone": r["timezone"], "tier": r["tier"],
                          "postcode": r["postcode"], "node_id": r["node_id"],
                          "consents": {"sms": r["consent_sms"] == "true", "email": True}})
    return directory


def as_named_dicts(value: Any) -> Any:
    """A state as dicts with named keys, lists and strings: what a Python dict state costs."""
    if isinstance(value, msgspec.Struct):
        return {name: as_named_dicts(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, dict):
        return {key: as_named_dicts(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_named_dicts(item) for item in value]
    return value


def allocated_by(make: Callable[[], Any]) -> tuple[Any, int]:
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    made = make()
    gc.collect()
    return made, tracemalloc.get_traced_memory()[0] - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    config = load_config(Settings())
    directory = directory_of(args.customers)
    record_bytes = sum(len(raw) for raw in directory.records.values()) / len(directory)
    states: dict[str, bytes] = {}
    decider = Decider(config.rules, config.renderer, directory, states=states)
    outage = {"id": "bench-o1", "type": "outage.started", "occurred_at": START.isoformat(),
              "data": {"outage_id": "OUT-1", "service": "internet", "areas": [str(1000 + a) for a in range(200)],
                       "expected_end": (START + timedelta(hours=3)).isoformat()}}
    tracemalloc.start()

    def fan_out() -> set[str]:
        decisions = list(decider.handle(outage, START)) + list(decider.fire_due(START + timedelta(minutes=30)))
        decider._rendered.clear()  # the render cache is bounded and not per customer
        return {d.customer_id for d in decisions if hasattr(d, "body")}

    notified, compact = allocated_by(fan_out)
    dicts, named = allocated_by(lambda: {cid: as_named_dicts(decode_state(raw)) for cid, raw in states.items()})
    tracemalloc.stop()
    per, per_dict = compact / len(notified), named / len(dicts)
    print(f"{len(notified):,} customers notified of an outage; their states as msgpack bytes: "
          f"{sum(map(len, states.values())) / len(states):,.0f} bytes each on the wire")
    print(f"decision state held per notified customer: {per:,.0f} bytes (states, outage record, due index)")
    print(f"baseline, the same states as Python dicts with named keys: {per_dict:,.0f} bytes per customer")
    print(f"a customer's record as compact JSON: {record_bytes:,.0f} bytes")
    print(f"ratio held / dicts: {per / per_dict:.2f}; held / customer record: {per / record_bytes:.2f}")


if __name__ == "__main__":
    main()
