"""``forewarn load-customers``: a customer file onto the customers topic, with a progress bar."""

from __future__ import annotations

from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import Progress

from streams.kafka.admin import producer
from streams.tools.customer_files import read_customer_rows, upsert_event


def load_customers(bootstrap: str, topic: str, file: Path, console: Console | None = None) -> tuple[int, int]:
    """Customers from JSON Lines or CSV onto ``topic`` as customer.upserted events, with a progress bar.

    Returns (sent, skipped); an unreadable line is reported and skipped.
    """
    console = console or Console(stderr=True)
    with file.open("rb") as handle:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    sent = skipped = 0
    kafka = producer(bootstrap, batch_size=256 * 1024, linger_ms=20)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("customers", total=total)
            for line, record, reason in read_customer_rows(file):
                if reason:
                    skipped += 1
                    console.print(f"{file}:{line}: {reason}")
                    continue
                kafka.send(topic, key=record["customer_id"].encode(),
                           value=orjson.dumps(upsert_event(record, sequence=line)))
                sent += 1
                if sent % 2000 == 0:
                    progress.update(task, completed=line)
            progress.update(task, completed=total)
        kafka.flush()
    finally:
        kafka.close()
    return sent, skipped
