"""The JSON Schemas in schemas/ and the demo data in config/demo/ (no broker needed).

Every schema is loaded into one ``referencing.Registry`` keyed by its ``$id``, so the
relative ``$ref``s between files resolve exactly as they do in production.
"""

from __future__ import annotations

import base64
import copy
import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
DEMO_DIR = ROOT / "config" / "demo"
BASE = "https://schemas.forewarn.example/"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

EVENT_TYPES = [
    "order.placed", "order.shipped", "order.delayed", "order.delivered", "order.cancelled", "shipment.scanned",
    "cart.updated", "cart.checked_out",
    "outage.started", "outage.updated", "outage.resolved",
    "customer.upserted", "customer.deleted",
    "support.contacted",
]
RECORD_SCHEMAS = ["customer.json", "notification.json", "deadletter.json", "suppressed.json", "delivery.json"]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


SCHEMA_FILES = {p.relative_to(SCHEMA_DIR).as_posix(): _load(p) for p in sorted(SCHEMA_DIR.rglob("*.json"))}
REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMA_FILES.values()
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(REGISTRY.contents(BASE + name), registry=REGISTRY)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


DEMO_EVENTS = _read_jsonl(DEMO_DIR / "events.jsonl")
DEMO_CUSTOMERS = _read_jsonl(DEMO_DIR / "customers.jsonl")


def customer_record(row: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in row.items() if k != "customer_id"}
    return {"id": row["customer_id"], **rest}


def example(name: str) -> dict[str, Any]:
    return copy.deepcopy(SCHEMA_FILES[name]["examples"][0])


def all_errors(errors):
    """Every error, including the ones nested in allOf/anyOf/not contexts."""
    for error in errors:
        yield error
        yield from all_errors(error.context or [])


# --------------------------------------------------------------------------- schema files

def test_every_expected_schema_file_exists():
    expected = {"common.json", "envelope.json", *RECORD_SCHEMAS, *(f"events/{t}.json" for t in EVENT_TYPES)}
    assert expected <= set(SCHEMA_FILES)


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_is_valid_draft_2020_12(name):
    schema = SCHEMA_FILES[name]
    assert schema["$schema"] == DRAFT
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_has_id_matching_its_path_and_title_and_description(name):
    schema = SCHEMA_FILES[name]
    assert schema["$id"] == BASE + name
    assert isinstance(schema.get("title"), str) and schema["title"]
    assert isinstance(schema.get("description"), str) and schema["description"]


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_all_refs_resolve(name):
    """Walk every $ref and resolve it through the registry (a typo would only fail at runtime)."""
    resolver = REGISTRY.resolver(base_uri=SCHEMA_FILES[name]["$id"])

    def walk(node, resolver):
        if isinstance(node, dict):
            if "$ref" in node:
                resolver.lookup(node["$ref"])
            for value in node.values():
                walk(value, resolver)
        elif isinstance(node, list):
            for value in node:
                walk(value, resolver)

    walk({k: v for k, v in SCHEMA_FILES[name].items() if k != "examples"}, resolver)


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_event_schema_pins_its_type(name):
    schema = SCHEMA_FILES[f"events/{name}.json"]
    assert schema["allOf"] == [{"$ref": "../envelope.json"}]
    assert schema["properties"]["type"] == {"const": name}
    assert schema["properties"]["data"]["additionalProperties"] is False


def test_envelope_lists_exactly_the_event_schemas():
    assert SCHEMA_FILES["envelope.json"]["properties"]["type"]["enum"] == EVENT_TYPES
    on_disk = sorted(n[len("events/"):-len(".json")] for n in SCHEMA_FILES if n.startswith("events/"))
    assert on_disk == sorted(EVENT_TYPES)


def test_customer_record_matches_customer_upserted_data():
    record = SCHEMA_FILES["customer.json"]
    data = SCHEMA_FILES["events/customer.upserted.json"]["properties"]["data"]
    record_props = {k: v for k, v in record["properties"].items() if k != "id"}
    # same fields; refs differ only by the folder they are written from
    as_event = json.loads(json.dumps(record_props).replace('"common.json#', '"../common.json#'))
    assert as_event == data["properties"]
    assert set(record["required"]) == {"id", *data["required"]}


# --------------------------------------------------------------------------- examples

EXAMPLES = [(name, i) for name, schema in sorted(SCHEMA_FILES.items()) for i in range(len(schema.get("examples", [])))
            if name != "common.json"]


@pytest.mark.parametrize("name", [*RECORD_SCHEMAS, *(f"events/{t}.json" for t in EVENT_TYPES)])
def test_message_and_event_schemas_have_exactly_one_example(name):
    assert len(SCHEMA_FILES[name]["examples"]) == 1


@pytest.mark.parametrize(("name", "index"), EXAMPLES)
def test_example_is_valid(name, index):
    instance = SCHEMA_FILES[name]["examples"][index]
    errors = [e.message for e in validator(name).iter_errors(instance)]
    assert errors == []


@pytest.mark.parametrize(("name", "value"), [
    ("timestamp", "2026-11-25T13:02:00+01:00"),
    ("timestamp", "2026-11-25T12:02:00.123456789Z"),
    ("timestamp", "2026-11-25T12:16:02.123456+00:00"),  # what datetime.isoformat() writes
    ("id", "evt-0001"),
    ("e164", "+31612345678"),
    ("postcode_prefix", "1012"),
    ("postcode_prefix", "3511AB"),
    ("postcode", "3511AB"),
    ("email", "sanne.devries@example.nl"),
    ("url", "https://shop.example.nl/checkout/CART-8F3K2"),
    ("url", "http://localhost:8080/x"),
    ("timezone", "Europe/Amsterdam"),
    ("timezone", "UTC"),
    ("timezone", "America/Argentina/Buenos_Aires"),
    ("currency", "EUR"),
    ("money", 0),
])
def test_common_definition_accepts(name, value):
    v = Draft202012Validator({"$ref": f"common.json#/$defs/{name}", "$id": BASE + "probe.json"}, registry=REGISTRY)
    assert v.is_valid(value)


@pytest.mark.parametrize(("name", "value"), [
    ("timestamp", "2026-11-25T13:02:00"),            # no offset
    ("timestamp", "2026-11-25 13:02:00+01:00"),      # space instead of T
    ("timestamp", "2026-11-25"),
    ("id", ""),
    ("id", "evt 0001"),
    ("id", "evt-\n0001"),
    ("id", "x" * 129),
    ("e164", "0612345678"),
    ("e164", "+0612345678"),
    ("postcode_prefix", "0123"),
    ("postcode_prefix", "1012 AB"),
    ("postcode_prefix", "1012ab"),
    ("postcode", "1012"),
    ("email", "sanne@localhost"),
    ("email", "a@b@example.nl"),
    ("email", "sanne devries@example.nl"),
    ("url", "ftp://example.nl/x"),
    ("url", "shop.example.nl/checkout"),
    ("timezone", "Europe Amsterdam"),
    ("currency", "eur"),
    ("money", -0.01),
    ("locale", "de"),
    ("tier", "gold"),
])
def test_common_definition_rejects(name, value):
    v = Draft202012Validator({"$ref": f"common.json#/$defs/{name}", "$id": BASE + "probe.json"}, registry=REGISTRY)
    assert not v.is_valid(value)


# --------------------------------------------------------------------------- invalid instances

def _outage_with_customer(e):
    e["customer_id"] = "C1001"


def _order_without_customer(e):
    del e["customer_id"]


def _occurred_at_without_offset(e):
    e["occurred_at"] = "2026-11-25T13:15:00"


def _bad_phone(e):
    e["data"]["phone"] = "06-12345678"


def _unknown_locale(e):
    e["data"]["locale"] = "de"


def _extra_data_field(e):
    e["data"]["gift_wrap"] = True


def _negative_total(e):
    e["data"]["total"] = -1.0


def _pc4_leading_zero(e):
    e["data"]["areas"] = ["0123"]


def _extra_envelope_field(e):
    e["source"] = "webshop"


def _wrong_type_for_file(e):
    e["type"] = "order.shipped"


def _empty_order_items(e):
    e["data"]["items"] = []


def _qty_zero(e):
    e["data"]["items"][0]["qty"] = 0


def _duplicate_areas(e):
    e["data"]["areas"] = ["1012", "1012"]


def _unknown_service(e):
    e["data"]["service"] = "water"


def _consents_missing_email(e):
    del e["data"]["consents"]["email"]


def _deleted_with_unknown_field(e):
    e["data"]["name"] = "Iemand"


def _missing_data(e):
    del e["data"]


INVALID_EVENTS = [
    # (case, schema, mutation, expected keyword, path of the failing value)
    ("outage with customer_id", "outage.started", _outage_with_customer, "not", ()),
    ("order without customer_id", "order.placed", _order_without_customer, "required", ()),
    ("occurred_at without offset", "order.placed", _occurred_at_without_offset, "pattern", ("occurred_at",)),
    ("bad phone", "customer.upserted", _bad_phone, "pattern", ("data", "phone")),
    ("unknown locale", "customer.upserted", _unknown_locale, "enum", ("data", "locale")),
    ("extra field in data", "order.placed", _extra_data_field, "additionalProperties", ("data",)),
    ("negative total", "order.placed", _negative_total, "minimum", ("data", "total")),
    ("PC4 0123", "outage.started", _pc4_leading_zero, "pattern", ("data", "areas", 0)),
    ("extra envelope field", "order.delivered", _extra_envelope_field, "additionalProperties", ()),
    ("type does not match file", "order.placed", _wrong_type_for_file, "const", ("type",)),
    ("order without items", "order.placed", _empty_order_items, "minItems", ("data", "items")),
    ("qty 0", "order.placed", _qty_zero, "minimum", ("data", "items", 0, "qty")),
    ("duplicate outage areas", "outage.started", _duplicate_areas, "uniqueItems", ("data", "areas")),
    ("unknown outage service", "outage.started", _unknown_service, "enum", ("data", "service")),
    ("consents without email", "customer.upserted", _consents_missing_email, "required", ("data", "consents")),
    ("customer.deleted with profile field", "customer.deleted", _deleted_with_unknown_field,
     "additionalProperties", ("data",)),
    ("envelope without data", "order.delivered", _missing_data, "required", ()),
]


@pytest.mark.parametrize(("case", "event_type", "mutate", "keyword", "path"), INVALID_EVENTS,
                         ids=[c[0] for c in INVALID_EVENTS])
def test_invalid_event_is_rejected_for_the_right_reason(case, event_type, mutate, keyword, path):
    name = f"events/{event_type}.json"
    instance = example(name)
    assert validator(name).is_valid(instance), "the unmodified example must be valid"
    mutate(instance)
    errors = list(all_errors(validator(name).iter_errors(instance)))
    assert errors, f"{case}: accepted"
    found = {(e.validator, tuple(e.absolute_path)) for e in errors}
    assert (keyword, path) in found, f"{case}: expected {keyword} at {path}, got {found}"


def test_outage_updated_may_omit_areas_but_needs_expected_end():
    name = "events/outage.updated.json"
    instance = example(name)
    instance["data"].pop("areas", None)
    assert validator(name).is_valid(instance)
    del instance["data"]["expected_end"]
    assert not validator(name).is_valid(instance)


def test_cart_updated_accepts_an_empty_cart():
    name = "events/cart.updated.json"
    instance = example(name)
    instance["data"]["items"] = []
    instance["data"]["total"] = 0
    assert validator(name).is_valid(instance)


def test_customer_deleted_accepts_empty_data():
    name = "events/customer.deleted.json"
    instance = example(name)
    instance["data"] = {}
    assert validator(name).is_valid(instance)


def test_notification_sms_must_have_null_subject():
    instance = example("notification.json")
    assert instance["channel"] == "sms"
    instance["subject"] = "Storing"
    assert not validator("notification.json").is_valid(instance)


def test_notification_email_may_not_carry_sms_fields():
    v = validator("notification.json")
    instance = example("notification.json")
    instance.update(channel="email", to="sanne.devries@example.nl", subject="Storing in uw buurt",
                    html="<p>Storing</p>", fallback=[])
    del instance["segments"], instance["encoding"]
    assert v.is_valid(instance)
    instance["segments"] = 1
    assert not v.is_valid(instance)


@pytest.mark.parametrize(("name", "field", "value"), [
    ("notification.json", "event_ids", []),
    ("notification.json", "channel", "whatsapp"),
    ("notification.json", "encoding", "UTF-8"),
    ("notification.json", "segments", 0),
    ("deadletter.json", "value_b64", "not base64!"),
    ("deadletter.json", "partition", -1),
    ("suppressed.json", "reason", "because"),
    ("delivery.json", "status", "read"),
    ("customer.json", "postcode", "1012"),
])
def test_invalid_record_field_is_rejected(name, field, value):
    instance = example(name)
    instance[field] = value
    assert not validator(name).is_valid(instance)


@pytest.mark.parametrize(("name", "field"), [
    ("suppressed.json", "customer_id"),
    ("deadletter.json", "key_b64"),
    ("deadletter.json", "value_text"),
    ("delivery.json", "provider_message_id"),
    ("delivery.json", "error"),
])
def test_nullable_record_field_accepts_null(name, field):
    instance = example(name)
    instance[field] = None
    assert validator(name).is_valid(instance)


def test_deadletter_example_value_matches_its_text():
    instance = example("deadletter.json")
    assert base64.b64decode(instance["value_b64"]).decode("utf-8") == instance["value_text"]


# --------------------------------------------------------------------------- demo data

@pytest.mark.parametrize("index", range(len(DEMO_EVENTS)))
def test_demo_event_is_valid(index):
    event = DEMO_EVENTS[index]
    name = f"events/{event['type']}.json"
    errors = [e.message for e in validator(name).iter_errors(event)]
    assert errors == []


@pytest.mark.parametrize("index", range(len(DEMO_CUSTOMERS)))
def test_demo_customer_is_a_valid_record(index):
    record = customer_record(DEMO_CUSTOMERS[index])
    errors = [e.message for e in validator("customer.json").iter_errors(record)]
    assert errors == []


@pytest.mark.parametrize("index", range(len(DEMO_CUSTOMERS)))
def test_demo_customer_phone_is_a_valid_dutch_mobile(index):
    number = phonenumbers.parse(DEMO_CUSTOMERS[index]["phone"], None)
    assert phonenumbers.is_valid_number(number)
    assert phonenumbers.region_code_for_number(number) == "NL"
    assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE


def test_demo_customers_csv_matches_jsonl():
    with (DEMO_DIR / "customers.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["customer_id", "name", "phone", "email", "locale", "timezone", "tier",
                                     "postcode", "node_id", "critical", "consent_sms", "consent_email",
                                     "marketing_sms", "marketing_email"]
        rows = list(reader)
    flag = {"true": True, "false": False}
    from_csv = [{
        **{k: row[k] for k in ("customer_id", "name", "phone", "email", "locale", "timezone", "tier",
                               "postcode", "node_id")},
        "critical": flag[row["critical"]],
        "consents": {"sms": flag[row["consent_sms"]], "email": flag[row["consent_email"]],
                     "marketing": {"sms": flag[row["marketing_sms"]], "email": flag[row["marketing_email"]]}},
    } for row in rows]
    assert from_csv == DEMO_CUSTOMERS


def test_demo_customers_cover_the_scenario():
    customers = DEMO_CUSTOMERS
    assert len(customers) == 14
    assert len({c["customer_id"] for c in customers}) == 14
    assert sorted(c["locale"] for c in customers).count("nl") == 10
    assert {c["tier"] for c in customers} == {"basic", "standard", "premium"}
    assert all(c["email"].rsplit("@", 1)[1] in {"example.com", "example.nl", "example.org"} for c in customers)

    outage = next(e for e in DEMO_EVENTS if e["type"] == "outage.started")["data"]

    def affected(c):
        pc = c["postcode"]
        return pc[:4] in outage["areas"] or pc in outage["areas"] or c.get("node_id") in outage.get("nodes", [])

    hit = [c for c in customers if affected(c)]
    assert sorted(c["customer_id"] for c in hit) == ["C1001", "C1002", "C1003", "C1004", "C1005", "C1006"]
    # nodes of the outage belong only to customers already in its areas
    assert all(c["postcode"][:4] == "1012" for c in customers if c.get("node_id") in outage["nodes"])
    assert any(not c["consents"]["sms"] for c in hit)
    assert any(c["consents"]["sms"] and not c["consents"]["email"] for c in hit)
    assert any(c["critical"] for c in hit)
    assert {c["locale"] for c in hit} == {"nl", "en"}


def test_demo_events_are_ordered_daytime_and_reference_known_customers():
    known = {c["customer_id"] for c in DEMO_CUSTOMERS}
    times = [datetime.fromisoformat(e["occurred_at"]) for e in DEMO_EVENTS]
    assert times == sorted(times)
    assert all(t.isoformat().startswith("2026-11-25T") and t.utcoffset().total_seconds() == 3600 for t in times)
    assert all(8 <= t.hour < 21 for t in times)  # outside the default quiet hours
    assert len({e["id"] for e in DEMO_EVENTS}) == len(DEMO_EVENTS)
    assert all(e["customer_id"] in known for e in DEMO_EVENTS if "customer_id" in e)


def test_demo_event_types_cover_the_scenario():
    types = [e["type"] for e in DEMO_EVENTS]
    # Customer service contacts and the parcel's scan close the story.
    story = [t for t in types if t not in ("support.contacted", "shipment.scanned")]
    assert story[0] == "outage.started" and story[-1] == "outage.resolved"
    assert types[len(story):] and set(types[len(story):]) == {"support.contacted", "shipment.scanned"}
    for needed, count in [("order.placed", 1), ("order.shipped", 1), ("order.delayed", 2), ("cart.updated", 3),
                          ("order.delivered", 1), ("outage.updated", 1), ("shipment.scanned", 1)]:
        assert types.count(needed) == count, needed
    locale = {c["customer_id"]: c["locale"] for c in DEMO_CUSTOMERS}
    delayed = [locale[e["customer_id"]] for e in DEMO_EVENTS if e["type"] == "order.delayed"]
    carts = [locale[e["customer_id"]] for e in DEMO_EVENTS if e["type"] == "cart.updated"]
    assert sorted(delayed) == ["en", "nl"] and set(carts) == {"en", "nl"}


def test_demo_totals_add_up():
    for e in DEMO_EVENTS:
        if "items" in e["data"]:
            total = sum(i["qty"] * i["unit_price"] for i in e["data"]["items"])
            assert e["data"]["total"] == pytest.approx(total, abs=0.005)


def _refs_with_siblings(node, path="#"):
    if isinstance(node, dict):
        if "$ref" in node and set(node) - {"$ref", "description", "title", "examples", "$comment"}:
            yield path
        for key, value in node.items():
            yield from _refs_with_siblings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _refs_with_siblings(value, f"{path}/{index}")


def test_no_keyword_beside_a_ref_so_the_fast_draft7_validator_agrees():
    from streams.core.events import Schemas

    offenders = [f"{schema_id}{path}" for schema_id, contents in Schemas(SCHEMA_DIR).by_id.items()
                 for path in _refs_with_siblings(contents)]
    assert offenders == []


@pytest.mark.parametrize("event", DEMO_EVENTS + [
    {**DEMO_EVENTS[0], "occurred_at": "2026-11-25T14:00:00"},
    {**DEMO_EVENTS[1], "customer_id": None},
    {**DEMO_EVENTS[1], "data": {**DEMO_EVENTS[1]["data"], "total": -1}},
    {**DEMO_EVENTS[1], "data": {**DEMO_EVENTS[1]["data"], "extra": 1}},
    {**DEMO_EVENTS[0], "customer_id": "C1"},
], ids=lambda e: e["id"] + ":" + e["type"])
def test_fast_and_reference_validators_agree(event):
    from streams.core.events import Schemas

    schemas = Schemas(SCHEMA_DIR)
    name = f"events/{event['type']}.json"
    reference = list(schemas.validator(name).iter_errors(event))
    fast_ok = True
    try:
        schemas.fast(name)(event)
    except Exception:
        fast_ok = False
    assert fast_ok == (reference == [])
