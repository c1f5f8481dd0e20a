"""Expected delivery times (ETAs) as carriers give them (schemas/common.json ``eta``).

Three forms: a date (``"2026-12-03"``), a timestamp with offset
(``"2026-12-03T14:00:00+01:00"``) or a window ``{"from": <timestamp>, "to": <timestamp>}``.
Pure module: the parsing and ordering that the templates' ``eta`` filter, the
event checks and any comparison of ETAs share.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone, tzinfo
from typing import Any, NamedTuple

__all__ = ["DATE", "Window", "eta_start", "parse_eta"]

DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")  # common.json date


class Window(NamedTuple):
    """A delivery window; both ends carry an offset."""

    start: datetime
    end: datetime


def parse_eta(value: Any) -> date | datetime | Window:
    """A date, an aware datetime or a Window; ValueError for anything else (a naive time included)."""
    if isinstance(value, dict) and set(value) == {"from", "to"}:
        return Window(_moment(value["from"]), _moment(value["to"]))
    if isinstance(value, str) and DATE.match(value.strip()):
        return date.fromisoformat(value.strip())
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    return _moment(value)


def _moment(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise ValueError(f"not an ETA: {value!r}")
    if value.tzinfo is None:
        raise ValueError(f"time without offset: {value.isoformat()}")
    return value


def eta_start(value: Any, tz: tzinfo | None = None) -> datetime:
    """The moment an ETA starts, to compare ETAs of any form by.

    A window compares by its ``from``. A date compares by its start of day in ``tz`` -
    pass the customer's zone when known - and in UTC when ``tz`` is None.
    """
    eta = parse_eta(value)
    if isinstance(eta, Window):
        return eta.start
    if isinstance(eta, datetime):
        return eta
    return datetime.combine(eta, time(0), tzinfo=tz or timezone.utc)
