"""Durable timers, the part that is not durable: an in-memory index of when pending messages fall due.

The pending messages themselves live in the customer state table (changelog
backed). This index is derived from it and rebuilt from it after every recovery
or rebalance, so losing it loses nothing.

How a pending message fires, live (wall clock):
1. a faust timer calls ``pop_due`` every second with, per rule, the time up
   to which every input that can trigger or cancel the rule has been read
   (``streams.core.clock.Watermarks``; never past now); for each entry of a
   partition this worker owns it produces a small "due" record to the
   ``forewarn-due`` topic, keyed and partitioned like the customer;
2. the decide agent consumes that topic, and ``Decider.fire`` re-reads the
   pending entry: if it is gone (cancelled, already sent) or its version moved on
   (a newer trigger), the due record is ignored; otherwise it is decided again
   against current state (consent, quiet hours, caps, ledger) and sent.
The timer never writes a table, and a due record fired twice, for example around
a rebalance, is harmless because of the version check and the ledger.

In event-time mode (the simulator, ``FOREWARN_CLOCK=event``) ``pop_next`` is
called before each event the timeline hands on, with the event's time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterator
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


def rule_of(pending_id: str) -> str:
    return pending_id.split("|", 1)[0]


class DueIndex:
    """Due entries in one heap per rule and shard (the worker: the customer's partition).

    A rule held back by a lagging input then costs the others nothing, and a
    partition's entries are found without passing over another's.
    """

    def __init__(self, shard_of: Callable[[str], int] = lambda _: 0) -> None:
        self.shard_of = shard_of
        self._heaps: dict[tuple[str, int], list[Due]] = {}
        self._current: dict[tuple[str, str], Due] = {}

    def __len__(self) -> int:
        return len(self._current)

    def schedule(self, customer_id: str, pending_id: str, version: int, at: datetime) -> None:
        due = Due(at.timestamp(), customer_id, pending_id, version)
        self._current[(customer_id, pending_id)] = due
        heapq.heappush(self._heaps.setdefault((rule_of(pending_id), self.shard_of(customer_id)), []), due)

    def cancel(self, customer_id: str, pending_id: str) -> None:
        self._current.pop((customer_id, pending_id), None)

    def clear(self) -> None:
        self._heaps.clear()
        self._current.clear()

    def next_at(self, shards: Collection[int] | None = None) -> datetime | None:
        heads = [heap[0] for heap in self._fresh_heaps(shards) if heap]
        return min(heads).moment if heads else None

    def pop_due(self, until: datetime | Callable[[str], datetime | None],
                shards: Collection[int] | None = None) -> list[Due]:
        """Every current entry due by ``until`` (or by ``until(rule)``; None: not yet), earliest first."""
        limit_of = until if callable(until) else (lambda _: until)
        found: list[Due] = []
        for (rule, shard), heap in self._heaps.items():
            limit = limit_of(rule)
            if limit is None or (shards is not None and shard not in shards):
                continue
            while self._fresh(heap) and heap[0].at <= limit.timestamp():
                found.append(self._take(heap))
        found.sort()
        return found

    def pop_next(self, now: datetime, shards: Collection[int] | None = None) -> Due | None:
        """The earliest current entry due by ``now``, taken out of the index."""
        heads = [heap for heap in self._fresh_heaps(shards) if heap and heap[0].at <= now.timestamp()]
        return self._take(min(heads, key=lambda heap: heap[0])) if heads else None

    def _take(self, heap: list[Due]) -> Due:
        due = heapq.heappop(heap)
        del self._current[(due.customer_id, due.pending_id)]
        return due

    def _fresh_heaps(self, shards: Collection[int] | None) -> Iterator[list[Due]]:
        for (_, shard), heap in self._heaps.items():
            if shards is None or shard in shards:
                yield self._fresh(heap)

    def _fresh(self, heap: list[Due]) -> list[Due]:
        """``heap`` with its stale head entries (cancelled, rescheduled) dropped."""
        while heap and self._current.get((heap[0].customer_id, heap[0].pending_id)) != heap[0]:
            heapq.heappop(heap)
        return heap
