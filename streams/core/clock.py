"""The decision clock: what "now" is for an event, and up to when pending messages may fire.

Two clocks with one interface, so the simulator and the decide agent drive the
``Decider`` the same way:

- ``WallClock`` (production): now is the wall clock; pending messages fire from
  a timer (once the worker has caught up with its partitions: ``streams.kafka.catch_up``).
- ``EventClock`` (the simulator, replays, the demo): now is the latest event
  time seen (the watermark). Before each event, what fell due more than
  ``lateness`` before the watermark is decided, each at its own due time, so
  events arriving slightly out of order across topics still count. When no
  event has come for ``idle`` seconds the replay is over and everything still
  pending is decided at its due time. The simulator's input is sorted, so it
  uses no lateness.

Customer records move no clock: a customer file carries the time it was
loaded, not the story's time, and moving the clock with it would fire pending
messages before the events that cancel them are read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

FOREVER = datetime.max.replace(tzinfo=timezone.utc)


def event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))


def wall_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Tick:
    """What an event's arrival means: decide it at ``now``, after firing what is due by ``fire_until``."""

    now: datetime
    fire_until: datetime | None = None


class Clock(Protocol):
    def tick(self, event: dict[str, Any]) -> Tick: ...

    def due_now(self, due_moment: datetime) -> datetime: ...

    def current(self) -> datetime: ...

    def timer_until(self) -> datetime | None: ...


class WallClock:
    """Production time: the wall clock; the timer fires what is due once the worker has caught up."""

    def __init__(self, now: Callable[[], datetime] = wall_now):
        self._now = now

    def tick(self, event: dict[str, Any]) -> Tick:
        return Tick(self._now())

    def due_now(self, due_moment: datetime) -> datetime:
        return self._now()

    def current(self) -> datetime:
        return self._now()

    def timer_until(self) -> datetime | None:
        return self._now()


class EventClock:
    """Event time: the watermark is the latest event time seen, customer records aside."""

    def __init__(self, lateness: timedelta = timedelta(0), idle: float = 3.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.lateness = lateness
        self.idle = idle
        self.watermark: datetime | None = None
        self._monotonic = monotonic
        self._last_event = monotonic()

    def tick(self, event: dict[str, Any]) -> Tick:
        self._last_event = self._monotonic()
        moment = event_time(event)
        if event["type"].startswith("customer."):
            return Tick(self.watermark or moment)
        self.watermark = moment if self.watermark is None else max(self.watermark, moment)
        return Tick(self.watermark, self.watermark - self.lateness)

    def due_now(self, due_moment: datetime) -> datetime:
        return due_moment

    def current(self) -> datetime:
        return self.watermark or wall_now()

    def timer_until(self) -> datetime | None:
        """Everything, once no event has come for ``idle`` seconds: the replay is over, time runs on."""
        return FOREVER if self._monotonic() - self._last_event >= self.idle else None
