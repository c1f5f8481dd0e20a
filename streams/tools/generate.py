"""A synthetic but plausible week of a Dutch ISP-and-webshop's events, for the simulator and benchmarks.

Deterministic for a given seed. Customers live in PC4 areas; carts are updated
a few times and are often checked out; orders ship, are sometimes delayed more
than once, and arrive; outages hit a few areas, a third of them blips fixed
within minutes, some at night, some with updates to the expected end.

Customers also contact customer service (``support.contacted``), more often when
forewarn will not have told them; see ``_support`` for the model. Those events
come from a random generator of their own, seeded from the week's seed, so that
every other event is what it was without them.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
    support: bool = True      # support.contacted events (their own random generator: the others stay the same)


def generate_week(spec: WeekSpec, out: Path) -> tuple[Path, Path]:
    rng = random.Random(spec.seed)
    out.mkdir(parents=True, exist_ok=True)
    areas = [str(1000 + i * (8000 // spec.postcodes)) for i in range(spec.postcodes)]
    customers = list(_customers(rng, spec, areas))
    customers_path, events_path = out / "customers.jsonl", out / "events.jsonl"
    customers_path.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in customers))
    events = list(_carts(rng, spec, customers)) + list(_orders(rng, spec, customers)) + list(_outages(rng, spec, areas))
    if spec.support:
        events += list(_support(random.Random(f"{spec.seed}:support"), customers, events))
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


# The support model. Whether forewarn tells a customer is decided later, by the rules; the generator cannot
# know it, so it guesses the way config/rules.yaml as shipped decides, from what it does know.
QUIET_START, QUIET_END = time(21, 0), time(8, 0)  # the rules' default quiet hours, in the customer's time zone
OUTAGE_WAIT, PREMIUM_OUTAGE_WAIT = timedelta(minutes=10), timedelta(minutes=5)  # outage-started's grace period
CALLS_AFTER_BLIP = 0.02         # an outage over before anyone would be told: most never notice it
CALLS_WHEN_TOLD = 0.04          # told in time: a few call anyway
CALLS_WHEN_NOT_TOLD = 0.25      # no consent on any channel, or a night outage over before the morning's message
CALLS_AFTER_DELAY_TOLD = 0.05
CALLS_AFTER_DELAY_NOT_TOLD = 0.30
CALLS_ABOUT_OTHER_THINGS = 0.01  # per customer in the week: billing, moving house; about no outage or order
LINKED = 0.6                     # the agent recorded which outage or order the contact was about
CHANNELS = (["phone", "chat", "email", "shop"], [60, 25, 10, 5])
ZONES: dict[str, ZoneInfo] = {}


def _support(rng: random.Random, customers: list[dict[str, Any]],
             events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``support.contacted`` events: who calls customer service about an outage, a late order, or else.

    The model, per outage, for every customer in one of its areas:

    - over within outage-started's wait (10 minutes, 5 for premium): a blip, nobody is told,
      and few notice: ``CALLS_AFTER_BLIP``;
    - otherwise the customer is expected to be told unless they have neither SMS nor email
      consent, or the outage starts (after the wait) in their quiet hours (21:00-08:00 in their
      own time zone) and is over before the morning the message was deferred to. Expected to be
      told: ``CALLS_WHEN_TOLD``; not: ``CALLS_WHEN_NOT_TOLD``. The call comes between five minutes
      after the start and an hour after the end.

    Per delayed order (once, after its first order.delayed): told unless the customer has no
    consent on the channels order-delayed uses for their tier (basic: email; others: SMS or
    email): ``CALLS_AFTER_DELAY_TOLD``, else ``CALLS_AFTER_DELAY_NOT_TOLD``; the contact comes
    between half an hour after the delay and the delivery (two days at most), about the delivery
    or the order. And ``CALLS_ABOUT_OTHER_THINGS`` of the customers contact support once about
    something else (topic ``other``, no id). ``LINKED`` of the outage and order contacts carry the
    outage's or order's id; the others only their topic. Phone and shop contacts wait for opening
    hours (08:00-21:00 Amsterdam time).
    """
    contacts = _outage_contacts(rng, customers, events) + _delay_contacts(rng, customers, events)
    for customer in customers:
        if rng.random() < CALLS_ABOUT_OTHER_THINGS:
            contacts.append((_daytime(rng), customer["customer_id"], {"topic": "other"}))
    for number, (at, customer_id, data) in enumerate(contacts):
        channel = rng.choices(*CHANNELS)[0]
        if channel in ("phone", "shop"):
            at = _opening_hours(at, rng)
        yield _envelope(f"S{number:07d}", "support.contacted", at, {"channel": channel, **data}, customer_id)


Contact = tuple[datetime, str, dict[str, Any]]  # (when, customer, data)


def _outage_contacts(rng: random.Random, customers: list[dict[str, Any]],
                     events: list[dict[str, Any]]) -> list[Contact]:
    """Who calls about each outage (see ``_support``); the draws in a fixed order."""
    by_area: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for customer in customers:
        by_area[customer["postcode"][:4]].append(customer)
    contacts: list[Contact] = []
    started = {e["data"]["outage_id"]: e for e in events if e["type"] == "outage.started"}
    ended = {e["data"]["outage_id"]: _time(e["occurred_at"]) for e in events if e["type"] == "outage.resolved"}
    for outage_id, event in started.items():
        start, end = _time(event["occurred_at"]), ended[outage_id]
        for area in event["data"]["areas"]:
            for customer in by_area.get(area, ()):
                chance = _outage_call_chance(customer, start, end)
                if rng.random() < chance:
                    at = start + timedelta(minutes=5) + (end - start + timedelta(minutes=55)) * rng.random()
                    data = {"topic": "outage", **({"outage_id": outage_id} if rng.random() < LINKED else {})}
                    contacts.append((at, customer["customer_id"], data))
    return contacts


def _delay_contacts(rng: random.Random, customers: list[dict[str, Any]],
                    events: list[dict[str, Any]]) -> list[Contact]:
    """Who gets in touch after their order's first delay (see ``_support``)."""
    by_id = {c["customer_id"]: c for c in customers}
    delivered = {e["data"]["order_id"]: _time(e["occurred_at"]) for e in events if e["type"] == "order.delivered"}
    first_delays: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["type"] == "order.delayed":
            first_delays.setdefault(event["data"]["order_id"], event)
    contacts: list[Contact] = []
    for order_id, event in first_delays.items():
        customer = by_id[event["customer_id"]]
        consents, tier = customer["consents"], customer["tier"]
        reachable = consents["email"] if tier == "basic" else consents["sms"] or consents["email"]
        if rng.random() < (CALLS_AFTER_DELAY_TOLD if reachable else CALLS_AFTER_DELAY_NOT_TOLD):
            delay = _time(event["occurred_at"])
            latest = max(min(delivered.get(order_id, delay + timedelta(days=2)), delay + timedelta(days=2)),
                         delay + timedelta(hours=1))
            at = delay + timedelta(minutes=30) + (latest - delay - timedelta(minutes=30)) * rng.random()
            data = {"topic": rng.choice(["delivery", "order"]),
                    **({"order_id": order_id} if rng.random() < LINKED else {})}
            contacts.append((at, customer["customer_id"], data))
    return contacts


def _outage_call_chance(customer: dict[str, Any], start: datetime, end: datetime) -> float:
    wait = PREMIUM_OUTAGE_WAIT if customer["tier"] == "premium" else OUTAGE_WAIT
    if end - start <= wait:
        return CALLS_AFTER_BLIP
    consents = customer["consents"]
    if not (consents["sms"] or consents["email"]):
        return CALLS_WHEN_NOT_TOLD
    zone = ZONES.get(customer["timezone"]) or ZONES.setdefault(customer["timezone"], ZoneInfo(customer["timezone"]))
    due = (start + wait).astimezone(zone)
    if _quiet(due.time()):
        morning = datetime.combine(due.date() + timedelta(days=due.time() >= QUIET_START), QUIET_END, zone)
        if end <= morning:
            return CALLS_WHEN_NOT_TOLD
    return CALLS_WHEN_TOLD


def _quiet(moment: time) -> bool:
    return moment >= QUIET_START or moment < QUIET_END


def _opening_hours(moment: datetime, rng: random.Random) -> datetime:
    """``moment``, or when the phone lines and shops open after it (08:00-21:00 Amsterdam time)."""
    local = moment.astimezone(AMSTERDAM)
    if not _quiet(local.time()):
        return moment
    day = local.date() + timedelta(days=local.time() >= QUIET_START)
    return datetime.combine(day, QUIET_END, AMSTERDAM) + timedelta(minutes=rng.randrange(90), seconds=rng.randrange(60))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)
