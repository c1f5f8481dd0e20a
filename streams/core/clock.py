"""The decision clock: how far every input has been read, and so what may be decided now.

A pending message may be decided only once every input that could still
cancel or change it has been read past its due time. ``Watermarks`` keeps, per
input (a source topic partition), the time it has been read up to; the floor
over the inputs that matter bounds what may fire. An input that is not heard
of yet holds everything back: lag then costs latency, never a wrong message.

Two modes use it:

- wall clock (production): events are decided when read, at the wall clock;
  a pending message fires once the floor of its rule's inputs has passed its
  due time (an input's time is its records' broker time; read to its end, the
  time that was checked).
- event time (the simulator, replays, the demo): ``Timeline`` holds events back
  and hands them on in event-time order (ties by event id) once every input has
  been read past them, firing what fell due before each one at its due time.
  Inputs read to their end hold the others back until every one has been
  ``Quiet`` for a while; then the replay is over and everything held and
  pending is decided. The simulator is the same code over one input, its file:
  sorted input passes straight through.

Customer records move no clock: a customer file carries the time it was
loaded, not the story's time, and moving the clock with it would fire pending
messages before the events that cancel them are read.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

FOREVER = datetime.max.replace(tzinfo=timezone.utc)
NEVER = datetime.min.replace(tzinfo=timezone.utc)  # an input read to nothing yet
Input = tuple[str, int]  # (source topic, partition)


def event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))


def wall_now() -> datetime:
    return datetime.now(timezone.utc)


def moves_clock(event: dict[str, Any]) -> bool:
    return not event["type"].startswith("customer.")


class Watermarks:
    """The time each input has been read up to."""

    def __init__(self) -> None:
        self._partitions: dict[str, int] = {}
        self._times: dict[Input, datetime] = {}

    def expect(self, topic: str, partitions: int) -> None:
        """``topic`` has this many partitions: each one is an input, held back on until heard of."""
        if partitions > self._partitions.get(topic, 0):
            self._partitions[topic] = partitions

    def read(self, source: Input, moment: datetime) -> None:
        """``source`` has been read up to ``moment``; a watermark goes back only from its end."""
        known = self._times.get(source)
        if known is None or moment > known or known == FOREVER:
            self._times[source] = moment

    def at_end(self, source: Input) -> None:
        """Event time: ``source`` is read to its end and holds nothing back until its next record."""
        self._times[source] = FOREVER

    def floor(self, topics: Iterable[str]) -> datetime | None:
        """The time every partition of ``topics`` has been read past; None while any is not heard of."""
        least: datetime | None = None
        topics = tuple(topics)
        if not topics:
            return FOREVER
        for topic in topics:
            count = self._partitions.get(topic)
            if not count:
                return None
            for partition in range(count):
                moment = self._times.get((topic, partition))
                if moment is None:
                    return None
                if least is None or moment < least:
                    least = moment
        return least


@dataclass(frozen=True)
class Step:
    """Fire what is due by ``until``; then, if there is one, decide ``event`` at ``until``."""

    until: datetime
    event: dict[str, Any] | None = None
    ref: Any = None  # what the caller handed in with the event (the worker: the Kafka record)


class Timeline:
    """Events of several inputs, handed on in event-time order once every input is read past them.

    ``lateness`` holds back a little longer, for inputs whose own records come out of order.
    """

    def __init__(self, watermarks: Watermarks, topics: Iterable[str], lateness: timedelta = timedelta(0)):
        self.watermarks = watermarks
        self.topics = tuple(topics)
        self.lateness = lateness
        self.decided: datetime | None = None  # the latest event time handed on
        self._heap: list[tuple[datetime, str, int, dict[str, Any], Any]] = []
        self._added = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, event: dict[str, Any], ref: Any = None) -> None:
        self._added += 1  # ties in time and id keep their order of arrival; events are never compared
        heapq.heappush(self._heap, (event_time(event), event["id"], self._added, event, ref))

    def release(self) -> Iterator[Step]:
        """The events every input has been read past, then what fell due up to there."""
        floor = self.watermarks.floor(self.topics)
        if floor is None or floor - NEVER <= self.lateness:  # an input read to nothing yet
            return
        bound = floor - self.lateness
        yield from self._pop(lambda at: at < bound)
        yield Step(bound)

    def flush(self) -> Iterator[Step]:
        """Everything held, then everything due: the input is over (the end of a file, a replay gone idle)."""
        yield from self._pop(lambda at: True)
        yield Step(FOREVER)

    def refs(self) -> Iterator[Any]:
        return (ref for *_, ref in self._heap)

    def drop(self) -> int:
        """Forget what is held (the partition moved: it is read again from its commit); how many."""
        count = len(self._heap)
        self._heap.clear()
        return count

    def now(self) -> datetime:
        return self.decided or wall_now()

    def _pop(self, ready: Callable[[datetime], bool]) -> Iterator[Step]:
        heap = self._heap
        while heap and ready(heap[0][0]):
            at, _, _, event, ref = heapq.heappop(heap)
            if self.decided is None or at > self.decided:
                self.decided = at
            yield Step(self.decided, event, ref)


class Quiet:
    """Whether any input was heard of less than ``seconds`` ago."""

    def __init__(self, seconds: float, monotonic: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._monotonic = monotonic
        self._heard: float | None = None

    def heard(self) -> None:
        self._heard = self._monotonic()

    def waiting(self) -> bool:
        return self._heard is not None and self._monotonic() - self._heard < self.seconds
