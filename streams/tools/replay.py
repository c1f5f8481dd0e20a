"""Replay an events file into the worker at full speed and compare what it sent with the simulator.

Two ways to produce, both as fast as the producer goes: ``interleaved`` (the
file's order, each event to its topic) and ``by-topic`` (all orders, then all
carts, then all outages: the order a backfill per source system would give).
The worker, in event time, must send exactly the simulator's notifications:
same ids, same texts, same recipients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from streams.kafka.admin import event_key, producer

ORDERS = ("interleaved", "by-topic")


def produce_events(bootstrap: str, topic_for: Callable[[str], str], lines: Iterable[bytes], order: str) -> int:
    """Every line to its event type's topic, keyed like its customer or outage, in ``order``."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}")
    routed = [(topic_for(orjson.loads(line)["type"]), line) for line in lines if line.strip()]
    if order == "by-topic":
        topics = list(dict.fromkeys(topic for topic, _ in routed))
        routed = [(topic, line) for wanted in topics for topic, line in routed if topic == wanted]
    sender = producer(bootstrap, batch_size=256 * 1024, linger_ms=20)
    try:
        for topic, line in routed:
            key = event_key(line)
            sender.send(topic, key=key.encode() if key else None, value=line)
        sender.flush()
    finally:
        sender.close()
    return len(routed)


def read_notifications(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@dataclass(frozen=True)
class Comparison:
    """The worker's notifications against the simulator's, by notification id."""

    sent: int
    simulated: int
    missing: tuple[str, ...]  # simulated, not sent
    extra: tuple[str, ...]  # sent, not simulated
    changed: tuple[str, ...]  # same id, different message

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def describe(self) -> str:
        if self.identical:
            return f"{self.sent} notifications, identical to the simulator"
        return (f"{self.sent} notifications against the simulator's {self.simulated}: {len(self.missing)} missing, "
                f"{len(self.extra)} extra, {len(self.changed)} changed (first: "
                f"{(self.missing or self.extra or self.changed)[0]})")


def compare(sent: list[dict], simulated: list[dict]) -> Comparison:
    """Each id once: the dispatcher sends an id once, however often a replay produced it."""
    worker = {n["id"]: n for n in sent}
    simulator = {n["id"]: n for n in simulated}
    return Comparison(
        sent=len(worker), simulated=len(simulator),
        missing=tuple(sorted(simulator.keys() - worker.keys())),
        extra=tuple(sorted(worker.keys() - simulator.keys())),
        changed=tuple(sorted(i for i in worker.keys() & simulator.keys() if worker[i] != simulator[i])))
