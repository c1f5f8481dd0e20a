"""Time and restraint, as pure functions: durations, quiet hours, contact budgets.

Quiet hours are wall-clock times in the customer's own time zone. They are
computed with zoneinfo on local dates, so a night that contains a daylight
saving change (Europe/Amsterdam: last Sunday of March and of October) still ends
at the local time ops wrote, not an hour off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any, Iterable
from zoneinfo import ZoneInfo

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> timedelta:
    """'90s', '10m', '1h', '7d', '2w' (or a number of seconds)."""
    if isinstance(text, (int, float)):
        return timedelta(seconds=text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (write e.g. 10m, 1h, 7d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def spoken(seconds: float) -> str:
    """``2 h 05 min`` or ``12 min`` (to the nearest minute), ``40 s`` under a minute: a span as people say it."""
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def format_duration(span: timedelta) -> str:
    """The largest whole unit up to days: 7d, 2h, 30m, 45s (as ops write them in rules.yaml)."""
    seconds = int(span.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def parse_clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or "Europe/Amsterdam")


@dataclass(frozen=True)
class QuietHours:
    """A nightly window, e.g. 21:00 to 08:00 local time; start == end means none."""

    start: time
    end: time

    @classmethod
    def parse(cls, spec: dict[str, str]) -> "QuietHours":
        return cls(parse_clock(spec["start"]), parse_clock(spec["end"]))

    def _inside(self, clock: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end

    def deferral(self, moment: datetime, tz_name: str | None) -> datetime | None:
        """When the quiet period around ``moment`` ends, or None if ``moment`` is not in one."""
        tz = zone(tz_name)
        local = moment.astimezone(tz)
        if not self._inside(local.timetz().replace(tzinfo=None)):
            return None
        day = local.date()
        if self.start > self.end and local.time() >= self.start:
            day += timedelta(days=1)
        # Build the end on the local calendar, then let zoneinfo pick the offset of that day.
        end = datetime.combine(day, self.end, tzinfo=tz)
        return end.astimezone(moment.tzinfo)


@dataclass(frozen=True)
class Cap:
    """At most ``count`` messages in any window of ``per``."""

    count: int
    per: timedelta

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> "Cap":
        return cls(int(spec["count"]), parse_duration(spec["per"]))

    def reached(self, sent_at: Iterable[datetime], now: datetime) -> bool:
        return self.used(sent_at, now) >= self.count

    def used(self, sent_at: Iterable[datetime], now: datetime) -> int:
        """Counting only what was sent up to ``now``, so replays decide the same in any order."""
        since = now - self.per
        return sum(1 for moment in sent_at if since < moment <= now)


@dataclass(frozen=True)
class Reserve:
    """The last ``count`` contacts of a budget, kept for messages of at least ``priority``."""

    priority: int
    count: int


@dataclass(frozen=True)
class Budget(Cap):
    """The contact budget: ``count`` per ``per`` for all rules together, part of it maybe reserved."""

    reserve: Reserve | None = None

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> "Budget":
        reserve = spec.get("reserve")
        return cls(int(spec["count"]), parse_duration(spec["per"]),
                   Reserve(int(reserve["priority"]), int(reserve["count"])) if reserve else None)

    def allowance(self, priority: int) -> int:
        """How many contacts in the window a message of this priority may follow."""
        if self.reserve and priority < self.reserve.priority:
            return self.count - self.reserve.count
        return self.count

    def reached_for(self, priority: int, sent_at: Iterable[datetime], now: datetime) -> bool:
        return self.used(sent_at, now) >= self.allowance(priority)
