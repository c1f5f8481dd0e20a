"""The event contract: parse and validate incoming bytes, build dead-letter records.

Every event on the source topics is an envelope ``{id, type, occurred_at,
customer_id?, data}`` checked against ``schemas/events/<type>.json``. What the
schemas cannot say (a time zone that exists, a phone number that is valid for
its country) is checked here too, so that nothing downstream meets bad data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import fastjsonschema
import orjson
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from streams.core.eta import DATE, eta_start
from streams.errors import EventError
from streams.settings import ROOT

SCHEMA_BASE = "https://schemas.forewarn.example/"
EVENT_TYPES = (
    "order.placed", "order.shipped", "order.delayed", "order.delivered", "order.cancelled", "shipment.scanned",
    "cart.updated", "cart.checked_out",
    "outage.started", "outage.updated", "outage.resolved",
    "customer.upserted", "customer.deleted",
    "support.contacted",
)
MAX_EVENT_BYTES = 256 * 1024
MAX_KEY_BYTES = 1024
MAX_REASON = 2_000  # characters of a dead letter's reason


@dataclass(frozen=True)
class Bounds:
    """What an event may hold at most; past these it is refused at the door, before any schema is read.

    The schema validators recurse: an event nested a thousand arrays deep would
    crash them, so depth and sizes are checked first, without recursion.
    """

    depth: int = 16  # nested objects and arrays
    string: int = 10_000  # characters in one string (a cart item's name, an outage's message)
    items: int = 1_000  # entries in one array or object (a cart's items, an outage's postcodes)
    earliest: datetime = datetime(2000, 1, 1, tzinfo=timezone.utc)  # occurred_at from here ...
    latest: datetime = datetime(2100, 1, 1, tzinfo=timezone.utc)  # ... to before here
    ahead: timedelta = timedelta(hours=1)  # how far occurred_at may be past the time the broker took the event


BOUNDS = Bounds()
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")  # common.json


class Schemas:
    """All JSON Schemas of one folder, with validators compiled once.

    The schemas are draft 2020-12 and ``jsonschema`` is the reference that
    explains what is wrong. On the hot path fastjsonschema (about 35 times
    faster) answers first; it implements draft-07, which reads our schemas the
    same way because none puts a keyword beside a ``$ref`` (a test holds that).
    """

    def __init__(self, schema_dir: Path = ROOT / "schemas"):
        self.dir = schema_dir
        self.by_id: dict[str, dict[str, Any]] = {}
        for path in sorted(schema_dir.rglob("*.json")):
            contents = json.loads(path.read_text(encoding="utf-8"))
            self.by_id[contents["$id"]] = contents
        self.registry = Registry().with_resources(
            (schema_id, Resource.from_contents(contents)) for schema_id, contents in self.by_id.items())
        self._validators: dict[str, Draft202012Validator] = {}
        self._fast: dict[str, Callable[[Any], Any]] = {}

    def fast(self, name: str) -> Callable[[Any], Any]:
        found = self._fast.get(name)
        if found is None:
            found = fastjsonschema.compile(self.by_id[SCHEMA_BASE + name], use_formats=False,
                                           handlers={"https": self.by_id.__getitem__})
            self._fast[name] = found
        return found

    def validator(self, name: str) -> Draft202012Validator:
        """Validator for ``name``, a path below the schema folder such as ``events/order.placed.json``."""
        found = self._validators.get(name)
        if found is None:
            schema = self.registry.contents(SCHEMA_BASE + name)
            found = Draft202012Validator(schema, registry=self.registry)
            self._validators[name] = found
        return found

    def problems(self, name: str, instance: Any) -> list[str]:
        """Plain descriptions of what is wrong with ``instance``; empty when valid."""
        try:
            self.fast(name)(instance)
        except fastjsonschema.JsonSchemaException as fast_error:
            return [describe(error) for error in self.validator(name).iter_errors(instance)] or [fast_error.message]
        return []


# What a value refused by one of these common.json $defs should have been; in words, not as a regex.
_IN_WORDS = {
    "timestamp": "must be a timestamp with offset like 2026-12-03T14:00:00+01:00",
    "date": "must be a date like 2026-12-03",
    "eta": "must be a date like 2026-12-03, a timestamp with offset like 2026-12-03T14:00:00+01:00, "
           "or a window {from, to}",
}


def describe(error) -> str:
    """One jsonschema error as a dead-letter reason: where, and what is wrong in words."""
    where = "/".join(str(p) for p in error.absolute_path) or "(top)"
    words = _IN_WORDS.get(_common_def(error.schema)) if error.validator in ("pattern", "oneOf", "anyOf") else None
    if words:
        return f"{where}: {_shorten(repr(error.instance), 80)} {words}"
    return f"{where}: {_shorten(error.message)}"


def _common_def(schema: Any) -> str | None:
    """The name of the common.json $def that ``schema`` is, if any."""
    return next((name for name, definition in _common_defs().items() if definition == schema), None)


@lru_cache(maxsize=1)
def _common_defs() -> dict[str, Any]:
    return default_schemas().by_id[SCHEMA_BASE + "common.json"]["$defs"]


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@lru_cache(maxsize=4)
def default_schemas(schema_dir: Path = ROOT / "schemas") -> Schemas:
    return Schemas(schema_dir)


def parse_timestamp(value: str) -> datetime:
    """RFC 3339 with an explicit offset; a naive time is an error, not a guess."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise EventError(f"not an RFC 3339 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise EventError(f"time without offset: {value!r}")
    return moment


def parse_event(raw: bytes | str, schemas: Schemas | None = None,
                received: datetime | None = None) -> dict[str, Any]:
    """Decode and validate one event; raise EventError with a plain reason.

    ``received``: when the broker took it (the worker knows, a file does not).
    """
    schemas = schemas or default_schemas()
    if raw is None:
        raise EventError("empty message (tombstone)")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"event of {len(raw)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise EventError(f"event must be a JSON object, got {type(event).__name__}")
    check_bounds(event)
    event_type = event.get("type")
    if event_type not in EVENT_TYPES:
        raise EventError(f"unknown event type {_shorten(repr(event_type), 80)}")
    problems = schemas.problems(f"events/{event_type}.json", event)
    if problems:
        raise EventError("schema: " + "; ".join(problems[:5]))
    occurred = check_moment(parse_timestamp(event["occurred_at"]))
    if received is not None:
        check_not_ahead(occurred, received)
    check_times(event["data"])
    if event_type == "customer.upserted":
        check_customer_data(event["data"])
    return event


def check_bounds(value: Any, bounds: Bounds = BOUNDS) -> None:
    """Refuse values nested deeper, or strings and collections longer, than ``bounds``; iterative."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if len(item) > bounds.string:
                raise EventError(f"a string of {len(item)} characters exceeds the limit of {bounds.string}")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > bounds.depth:
            raise EventError(f"nested deeper than {bounds.depth} levels")
        if len(item) > bounds.items:
            raise EventError(f"{len(item)} entries in one array or object exceed the limit of {bounds.items}")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
        if isinstance(item, dict):
            stack.extend((key, depth) for key in item)


def check_moment(moment: datetime, bounds: Bounds = BOUNDS) -> datetime:
    """An event time inside the sane range; one event from year 9999 must not move any clock."""
    if not bounds.earliest <= moment < bounds.latest:
        raise EventError(f"time {moment.isoformat()} is outside {bounds.earliest.year} to {bounds.latest.year}")
    return moment


def check_not_ahead(occurred: datetime, received: datetime, bounds: Bounds = BOUNDS) -> None:
    """An event may not claim to have happened well after the broker took it: it would move the clock ahead."""
    if occurred > received + bounds.ahead:
        raise EventError(f"occurred_at {occurred.isoformat()} is more than {bounds.ahead} after the broker "
                         f"received the event ({received.isoformat(timespec='seconds')})")


def check_times(data: Any) -> None:
    """Every timestamp and date in an event's data (an ETA, an expected end) inside the sane range too,
    and every ETA window ending no earlier than it starts."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if TIMESTAMP.match(item):
                check_moment(parse_timestamp(item))
            elif DATE.match(item):
                check_moment(_start_of_day(item))
        elif isinstance(item, dict):
            if set(item) == {"from", "to"} and all(isinstance(v, str) and TIMESTAMP.match(v) for v in item.values()):
                _check_window(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _start_of_day(value: str) -> datetime:
    # A date's range is that of its start of day in UTC: a zone moves it by hours, the range is in years.
    try:
        return eta_start(value)
    except ValueError:
        raise EventError(f"not a calendar date: {value!r}") from None


def _check_window(window: dict[str, str]) -> None:
    if parse_timestamp(window["to"]) < parse_timestamp(window["from"]):
        raise EventError(f"window ends before it starts: from {window['from']} to {window['to']}")


def check_customer_data(data: dict[str, Any]) -> None:
    try:
        ZoneInfo(data["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise EventError(f"unknown time zone {data['timezone']!r}") from None
    try:
        number = phonenumbers.parse(data["phone"], None)
    except phonenumbers.NumberParseException:
        raise EventError("phone is not a parseable E.164 number") from None
    if not phonenumbers.is_valid_number(number):
        raise EventError("phone is not a valid number for its country")
    try:
        # Syntax only: no DNS lookups at the door. Refuses NUL, control and bidi-override characters.
        validate_email(data["email"], check_deliverability=False)
    except EmailNotValidError as exc:
        raise EventError(f"email is not a valid address: {exc}") from None


def customer_record(event: dict[str, Any]) -> dict[str, Any]:
    """The directory's record for a ``customer.upserted`` event."""
    return {"id": event["customer_id"], **event["data"]}


def deadletter_record(*, topic: str, partition: int, offset: int, key: bytes | None,
                      value: bytes | None, reason: str, hop: str | None = None) -> dict[str, Any]:
    """What the dead-letter topic keeps: the original bytes, which hop refused them and why.

    A value past ``MAX_EVENT_BYTES`` keeps its first ``MAX_EVENT_BYTES`` with its
    full size and SHA-256, so that the record itself always fits on the topic.
    """
    value = value or b""
    kept = value[:MAX_EVENT_BYTES]
    try:
        text = kept.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    record = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key_b64": base64.b64encode(key[:MAX_KEY_BYTES]).decode() if key is not None else None,
        "value_b64": base64.b64encode(kept).decode(),
        "value_text": text,
        "reason": reason[:MAX_REASON],
        "dead_at": datetime.now(timezone.utc).isoformat(),
    }
    if hop is not None:
        record["hop"] = hop
    if len(kept) < len(value):
        record["value_bytes"] = len(value)
        record["value_sha256"] = hashlib.sha256(value).hexdigest()
    return record
