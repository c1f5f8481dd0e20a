"""Pacing sends to a provider account: a token bucket in messages (or SMS segments) per second.

The bucket is kept as a schedule (GCRA, "virtual scheduling"): every caller
reserves the next free slot and sleeps until it, so waiters are served in
order, a 3-segment SMS simply takes three slots, and a pause (Retry-After,
X-RateLimit-Reset) moves the whole schedule back. Slots are absolute times, so
late wake-ups do not accumulate into a lower rate; waiters take their slot one
at a time, so a stalled event loop does not release a crowd at once.
"""

from __future__ import annotations

import asyncio
import time


def share(rate: float, owned: int, total: int) -> float:
    """This worker's part of an account's rate: proportional to the partitions it owns.

    Every worker of the group paces itself with its share, so together they stay
    under the account's limit without talking to each other. A worker that owns
    nothing (yet) keeps the whole rate; it has nothing to send anyway.
    """
    if total <= 0 or owned <= 0:
        return rate
    return rate * min(owned, total) / total


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` of them saved up."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = float(rate)
        # A small burst lets a worker catch up after a stall of its event loop
        # without ever sending noticeably faster than the rate over a second.
        self.burst = max(1.0, float(burst) if burst is not None else self.rate * 0.02)
        self._clock = clock
        self._next = clock()  # theoretical time of the next free slot
        self._turn = asyncio.Lock()  # first come, first served

    def set_rate(self, rate: float) -> None:
        if rate > 0 and rate != self.rate:
            self.rate = float(rate)

    def reserve(self, cost: float = 1.0) -> float:
        """Reserve ``cost`` tokens; returns how long to wait before using them."""
        now = self._clock()
        # Saved-up tokens are capped at ``burst``: the schedule may lag ``now`` by that much at most.
        start = max(self._next, now - (self.burst - 1.0) / self.rate)
        self._next = start + cost / self.rate
        return max(0.0, start - now)

    async def acquire(self, cost: float = 1.0) -> None:
        # One waiter sleeps at a time. Slots reserved ahead by many waiters would all come due together after
        # a stall of the event loop (a full garbage collection, a starved core): a burst answered with 429.
        async with self._turn:
            delay = self.reserve(cost)
            if delay > 0:
                await asyncio.sleep(delay)

    def pause(self, seconds: float) -> None:
        """The provider said "not before": nobody gets a slot earlier than ``seconds`` from now."""
        self._next = max(self._next, self._clock() + max(0.0, seconds))
