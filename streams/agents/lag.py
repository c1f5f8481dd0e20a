"""How far behind each input a hop is: the age of the last record it read, per topic partition."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from streams.metrics import INPUT_LAG


def latest_per_partition(events: Iterable) -> dict[tuple[str, int], float]:
    """The broker time of the last record of each (topic, partition) in a batch; records without one left out."""
    latest: dict[tuple[str, int], float] = {}
    for event in events:
        message = event.message
        if message.timestamp and message.timestamp > 0:
            latest[(message.topic, message.partition)] = message.timestamp
    return latest


def observe_lag(hop: str, events: Iterable, now: Callable[[], float] = time.time) -> None:
    """Once per batch: a lagging input shows as a growing age, a caught-up one near zero."""
    moment = now()
    for (topic, partition), taken in latest_per_partition(events).items():
        INPUT_LAG.labels(hop, topic, str(partition)).set(max(0.0, moment - taken))
