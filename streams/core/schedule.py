"""Durable timers, the part that is not durable: an in-memory index of when pending messages fall due.

The pending messages themselves live in the customer state table (changelog
backed). This index is derived from it and rebuilt from it after every recovery
or rebalance, so losing it loses nothing.

How a pending message fires, live (wall clock):
1. a faust timer calls ``pop_due(now)`` every second; for each entry of a
   partition this worker owns it produces a small "due" record to the
   ``forewarn-due`` topic, keyed and partitioned like the customer;
2. the decide agent consumes that topic, and ``Decider.fire`` re-reads the
   pending entry: if it is gone (cancelled, already sent) or its version moved on
   (a newer trigger), the due record is ignored; otherwise it is decided again
   against current state (consent, quiet hours, caps, ledger) and sent.
The timer never writes a table, and a due record fired twice, for example around
a rebalance, is harmless because of the version check and the ledger.

In event-time mode (the simulator, ``FOREWARN_CLOCK=event``) the same ``pop_due``
is called before each event with the event's time instead.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True, order=True)
class Due:
    at: float
    customer_id: str
    pending_id: str
    version: int

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.at, timezone.utc)


class DueIndex:
    def __init__(self) -> None:
        self._heap: list[Due] = []
        self._current: dict[tuple[str, str], Due] = {}

    def __len__(self) -> int:
        return len(self._current)

    def schedule(self, customer_id: str, pending_id: str, version: int, at: datetime) -> None:
        due = Due(at.timestamp(), customer_id, pending_id, version)
        self._current[(customer_id, pending_id)] = due
        heapq.heappush(self._heap, due)

    def cancel(self, customer_id: str, pending_id: str) -> None:
        self._current.pop((customer_id, pending_id), None)

    def clear(self) -> None:
        self._heap.clear()
        self._current.clear()

    def next_at(self) -> datetime | None:
        self._drop_stale()
        return self._heap[0].moment if self._heap else None

    def pop_due(self, now: datetime, owns: Callable[[str], bool] = lambda _: True) -> list[Due]:
        """Every current entry due at or before ``now`` whose customer ``owns`` accepts, earliest first.

        Entries of customers not owned are left in place.
        """
        limit = now.timestamp()
        found, kept = [], []
        while self._heap and self._heap[0].at <= limit:
            due = heapq.heappop(self._heap)
            if self._current.get((due.customer_id, due.pending_id)) != due:
                continue
            if owns(due.customer_id):
                del self._current[(due.customer_id, due.pending_id)]
                found.append(due)
            else:
                kept.append(due)
        for due in kept:
            heapq.heappush(self._heap, due)
        return found

    def _drop_stale(self) -> None:
        while self._heap and self._current.get((self._heap[0].customer_id, self._heap[0].pending_id)) != self._heap[0]:
            heapq.heappop(self._heap)
