"""A customer's state: everything restraint remembers about one customer, as a typed record.

The Decider keeps it in ``states`` as compact msgpack bytes, as the directory
keeps customers: a fan-out leaves 100,000 of them behind, and a Python dict of
dicts costs kilobytes each. The structs are ``array_like``: field names are not
repeated in every record, so new fields go at the end, with a default.

Timestamps stay the ISO strings the Decider stamped: a due time's offset is the
one a deferred message is later stamped with, and msgpack's timestamp would
turn it into UTC.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson


class Pending(msgspec.Struct, array_like=True):
    """A message held back: waiting (``hold="wait"``, triggers fold into it) or deferred (``"defer"``)."""

    rule: str
    key: str
    event: dict[str, Any]  # the latest trigger, without the outage's areas and nodes
    event_ids: list[str]  # every trigger folded in
    occurrence: str
    first_at: str
    last_at: str
    version: int
    hold: str
    due: str = ""
    outage_key: str | None = None


class Contact(msgspec.Struct, array_like=True):
    """One contact (whatever the channels), counted by caps and the contact budget."""

    at: str
    rule: str


class Told(msgspec.Struct, array_like=True):
    """An outage the customer was told about, or (``via``) one covered by the message about another."""

    channels: list[str]
    expected_end: Any = None
    via: str | None = None


class Fallback(msgspec.Struct, array_like=True):
    """What is needed to send a message again on the next channel if its channel fails for good."""

    rule: str
    key: str
    event: dict[str, Any]
    event_ids: list[str]
    occurrence: str
    outage_key: str | None
    at: str


class Fact(msgspec.Struct, array_like=True):
    """A business fact the customer was sent (by its fingerprint): when, and which event carried it."""

    at: str  # the event time of the trigger that carried it
    event_id: str


class CustomerState(msgspec.Struct, array_like=True):
    pending: dict[str, Pending] = {}  # by "rule|key"
    sent: list[Contact] = []
    sent_ids: dict[str, str] = {}  # notification id -> when emitted (not the dispatcher's SendLedger)
    cancels: dict[str, str] = {}  # "rule|key" -> when a cancelling event occurred
    outages: dict[str, Told] = {}  # by outage id
    fallbacks: dict[str, Fallback] = {}  # by notification id
    last: dict[str, str] = {}  # "rule|key" -> when last sent, for min_interval
    facts: dict[str, Fact] = {}  # fingerprint (rule, key, the fields its message shows) -> when sent


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CustomerState)


def encode_state(state: CustomerState) -> bytes:
    return _encoder.encode(state)


def decode_state(raw: bytes | None) -> CustomerState | None:
    if raw is None:
        return None
    if raw[:1] == b"{":  # a JSON object: a state logged before states were msgpack (a msgpack array never starts so)
        return from_legacy(orjson.loads(raw))
    return _decoder.decode(raw)


def from_legacy(record: dict[str, Any]) -> CustomerState:
    """A state as the Decider kept it before, a dict of dicts (read back from an old changelog)."""
    told = {oid: Told(o.get("channels", []), o.get("expected_end"), o.get("via"))
            for oid, o in record.get("outages", {}).items()}
    return CustomerState(
        pending={pid: msgspec.convert(_fields(Pending, e), Pending) for pid, e in record.get("pending", {}).items()},
        sent=[Contact(s["at"], s["rule"]) for s in record.get("sent", [])],
        sent_ids=dict(record.get("ledger", {})),
        cancels=dict(record.get("cancels", {})),
        outages=told,
        fallbacks={i: msgspec.convert(_fields(Fallback, f), Fallback) for i, f in record.get("fallbacks", {}).items()},
        last=dict(record.get("last", {})),
        facts={f: Fact(x["at"], x["event_id"]) for f, x in record.get("facts", {}).items()},
    )


def _fields(cls: type[msgspec.Struct], record: dict[str, Any]) -> list[Any]:
    """``record`` as the field list an array-like struct converts from; absent fields take their defaults."""
    required = len(cls.__struct_fields__) - len(cls.__struct_defaults__)
    defaults = (None,) * required + cls.__struct_defaults__
    return [record.get(name, default) for name, default in zip(cls.__struct_fields__, defaults)]
