"""A synthetic but plausible week of a Dutch ISP-and-webshop's events, for the simulator and benchmarks.

Deterministic for a given seed. Customers live in PC4 areas; carts are updated
a few times and are often checked out; orders ship, are sometimes delayed more
than once, and arrive; outages hit a few areas, a third of them blips fixed
within minutes, some at night, some with updates to the expected end.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

AMSTERDAM = timezone(timedelta(hours=1))  # November: CET, no daylight saving in the generated week
START = datetime(2026, 11, 23, 0, 0, tzinfo=AMSTERDAM)
FIRST = ["Sanne", "Daan", "Emma", "Lucas", "Julia", "Sem", "Tess", "Finn", "Mila", "Noah", "Fleur", "Bram",
         "Olivia", "James", "Sophie", "Liam", "Anna", "Jesse", "Lotte", "Thijs"]
LAST = ["de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos",
        "Vos", "Peters", "Hendriks", "van Dijk", "Dekker", "Brouwer", "Smith", "Brown", "Wilson", "Taylor"]
PRODUCTS = [("HUE-E27", "Philips Hue E27 lamp", 19.99), ("DECO-X50", "TP-Link Deco X50 (2-pack)", 179.0),
            ("CAT6-5M", "Netwerkkabel Cat6 5 m", 6.95), ("FRITZ-7590", "FRITZ!Box 7590 AX", 249.0),
            ("USB-C-65W", "USB-C lader 65 W", 34.95), ("SONOS-ERA", "Sonos Era 100", 249.0)]
LETTERS = "ABCDEFGHJKLMNPRSTVWXZ"


@dataclass
class WeekSpec:
    customers: int = 10_000
    postcodes: int = 500
    carts: float = 0.3        # carts per customer in the week
    orders: float = 0.4       # orders per customer
    outages: int = 15
    seed: int = 20261123


def generate_week(spec: WeekSpec, out: Path) -> tuple[Path, Path]:
    rng = random.Random(spec.seed)
    out.mkdir(parents=True, exist_ok=True)
    areas = [str(1000 + i * (8000 // spec.postcodes)) for i in range(spec.postcodes)]
    customers = list(_customers(rng, spec, areas))
    customers_path, events_path = out / "customers.jsonl", out / "events.jsonl"
    customers_path.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in customers))
    events = list(_carts(rng, spec, customers)) + list(_orders(rng, spec, customers)) + list(_outages(rng, spec, areas))
    events.sort(key=lambda e: (e["occurred_at"], e["id"]))
    events_path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return customers_path, events_path


def _at(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _customers(rng: random.Random, spec: WeekSpec, areas: list[str]) -> Iterator[dict[str, Any]]:
    for number in range(spec.customers):
        english = rng.random() < 0.15
        area = rng.choice(areas)
        yield {
            "customer_id": f"C{number:07d}",
            "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "phone": f"+316{rng.randrange(10_000_000, 59_999_999)}",  # 06-1 to 06-5: valid mobile ranges
            "email": f"klant{number}@example.nl",
            "locale": "en" if english else "nl",
            "timezone": "Europe/London" if english and rng.random() < 0.2 else "Europe/Amsterdam",
            "tier": rng.choices(["basic", "standard", "premium"], [50, 35, 15])[0],
            "postcode": f"{area}{rng.choice(LETTERS)}{rng.choice(LETTERS)}",
            "node_id": f"N-{area}-{rng.randrange(4)}",
            "critical": rng.random() < 0.01,
            "consents": {"sms": rng.random() < 0.8, "email": rng.random() < 0.95,
                         # Not drawn from rng: the week's other draws stay as they were.
                         "marketing": {"sms": False, "email": zlib.crc32(b"m%d" % number) % 100 < 70}},
        }


def _daytime(rng: random.Random) -> datetime:
    """A moment in the week, mostly in the day and evening, as shoppers shop."""
    day = rng.randrange(7)
    hour = rng.choices(range(24), [1, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 10, 11, 11, 9, 6, 3])[0]
    return START + timedelta(days=day, hours=hour, minutes=rng.randrange(60), seconds=rng.randrange(60))


def _envelope(event_id: str, kind: str, moment: datetime, data: dict[str, Any], customer_id: str | None = None):
    event = {"id": event_id, "type": kind, "occurred_at": _at(moment), "data": data}
    if customer_id:
        event["customer_id"] = customer_id
    return event


def _carts(rng: random.Random, spec: WeekSpec, customers: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for number in range(int(len(customers) * spec.carts)):
        customer = rng.choice(customers)["customer_id"]
        cart_id, moment, items = f"K{number:07d}", _daytime(rng), []
        for update in range(rng.randint(1, 4)):
            sku, name, price = rng.choice(PRODUCTS)
            items.append({"sku": sku, "name": name, "qty": rng.randint(1, 2), "unit_price": price})
            total = round(sum(i["qty"] * i["unit_price"] for i in items), 2)
            yield _envelope(f"{cart_id}-u{update}", "cart.updated", moment, {
                "cart_id": cart_id, "items": list(items), "total": total, "currency": "EUR",
                "checkout_url": f"https://shop.example.nl/checkout/{cart_id}"}, customer)
            moment += timedelta(minutes=rng.randint(2, 50))
        if rng.random() < 0.45:
            order_id = f"W{number:07d}"
            yield _envelope(f"{cart_id}-co", "cart.checked_out", moment, {"cart_id": cart_id, "order_id": order_id},
                            customer)


def _orders(rng: random.Random, spec: WeekSpec, customers: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for number in range(int(len(customers) * spec.orders)):
        customer = rng.choice(customers)["customer_id"]
        order_id, moment = f"O{number:07d}", _daytime(rng)
        sku, name, price = rng.choice(PRODUCTS)
        yield _envelope(f"{order_id}-p", "order.placed", moment, {
            "order_id": order_id, "items": [{"sku": sku, "name": name, "qty": 1, "unit_price": price}],
            "total": price, "currency": "EUR"}, customer)
        eta = (moment + timedelta(days=2)).replace(hour=18, minute=0, second=0)
        moment += timedelta(hours=rng.randint(8, 20))
        yield _envelope(f"{order_id}-s", "order.shipped", moment, {
            "order_id": order_id, "carrier": rng.choice(["PostNL", "DHL", "DPD"]),
            "tracking_url": f"https://tracking.example.nl/{order_id}", "eta": _at(eta)}, customer)
        if rng.random() < 0.12:
            for delay in range(rng.choice([1, 1, 2, 3])):
                moment += timedelta(minutes=rng.randint(20, 150))
                new_eta = eta + timedelta(days=1 + delay)
                yield _envelope(f"{order_id}-d{delay}", "order.delayed", moment, {
                    "order_id": order_id, "old_eta": _at(eta), "new_eta": _at(new_eta),
                    "reason": "Drukte in het sorteercentrum"}, customer)
                eta = new_eta
        yield _envelope(f"{order_id}-x", "order.delivered", eta + timedelta(minutes=rng.randint(-300, 60)),
                        {"order_id": order_id}, customer)


def _outages(rng: random.Random, spec: WeekSpec, areas: list[str]) -> Iterator[dict[str, Any]]:
    for number in range(spec.outages):
        outage_id = f"OUT-{number:04d}"
        moment = START + timedelta(days=rng.randrange(7), hours=rng.randrange(24), minutes=rng.randrange(60))
        blip = rng.random() < 0.33
        duration = timedelta(minutes=rng.randint(2, 8)) if blip else timedelta(minutes=rng.randint(45, 480))
        hit = rng.sample(areas, rng.randint(1, 4))
        expected = moment + duration + timedelta(minutes=rng.choice([-30, 0, 30, 60]))
        yield _envelope(f"{outage_id}-s", "outage.started", moment, {
            "outage_id": outage_id, "service": rng.choice(["internet", "internet", "tv", "telephony"]),
            "areas": hit, "expected_end": _at(max(expected, moment + timedelta(minutes=15)))})
        if not blip:
            at = moment
            for update in range(rng.randint(0, 3)):
                at += duration / 4
                expected += timedelta(minutes=rng.choice([10, 20, 45, 90]))
                yield _envelope(f"{outage_id}-u{update}", "outage.updated", at,
                                {"outage_id": outage_id, "expected_end": _at(expected)})
        end = moment + duration
        yield _envelope(f"{outage_id}-r", "outage.resolved", end, {"outage_id": outage_id, "resolved_at": _at(end)})
