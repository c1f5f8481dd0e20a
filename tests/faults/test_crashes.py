"""Break a running pipeline on purpose and count, at the provider imitation, what customers received.

Every test ends with the same accounting, read from what the imitation took:
each expected message exactly once (``lost`` and ``duplicates`` both 0).

The default run is the short form; ``pytest tests/faults --long`` runs the
sizes the README states (20,000 recipients, five kills, a 60 s provider outage).
Each test prints one ``FAULTS`` line with its figures, which bench/RESULTS.md quotes.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from bench.common import rss
from streams.tools.customer_files import write_customer_csv
from streams.kafka.admin import lag, produce_json, read_topic, wait_drained
from streams.tools.load_customers import load_customers
from streams.tools.imitation import SENDGRID, TWILIO
from streams.tools.local_providers import LocalProviders
from tests.channels.support import notification
from tests.conftest import cart, event, write

# Run one after the other on one xdist worker: each kills and restarts workers against a deadline.
pytestmark = [pytest.mark.broker, pytest.mark.faults, pytest.mark.xdist_group("kills")]

RULES = """\
version: 1
defaults: {quiet_hours: false}
rules:
  - id: outage-started
    on: outage.started
    category: service
    audience: area
    channels: [sms]
    template: outage_started
    essential: true
  - id: cart-reminder
    on: cart.updated
    category: marketing
    channels: [email]
    template: cart_reminder
    wait: 2s
    cancel_on: [cart.checked_out]
"""
PER_AREA = 500
OUTAGE_AREAS_FROM = 3000
MIB = 1024 * 1024
CART_AREA = "9999AB"


@dataclass
class Scale:
    recipients: int
    kills: int
    carts: int
    rate: float  # messages/s at the provider, per channel


def scale(long_run: bool) -> Scale:
    return Scale(20_000, 5, 400, 1000.0) if long_run else Scale(2_000, 2, 60, 500.0)


def row(number: int, postcode: str, *, sms: bool) -> list[str]:
    return [f"C{number:06d}", "Jan Jansen", f"+3161{number:07d}", f"klant{number}@example.nl", "nl",
            "Europe/Amsterdam", ("basic", "standard", "premium")[number % 3], postcode, "", "false",
            "true" if sms else "false", "false" if sms else "true", "false", "false" if sms else "true"]


def cart_of(number: int) -> dict:
    return cart(f"cart-{number}", f"C{number:06d}", f"CART-{number}")


@dataclass
class Expected:
    sms: set[str] = field(default_factory=set)  # phone numbers that must get the outage notice
    email: set[str] = field(default_factory=set)  # addresses that must get a cart reminder


def account(imitation, expected: Expected) -> dict[str, int]:
    """Lost and doubled, per channel, from what the imitation took."""
    figures = {}
    for channel, provider, wanted in (("sms", TWILIO, expected.sms), ("email", SENDGRID, expected.email)):
        taken = Counter(a.to for a in imitation.accepted_by(provider))
        figures[f"{channel}_lost"] = len(wanted - set(taken))
        figures[f"{channel}_duplicates"] = sum(count - 1 for count in taken.values())
        figures[f"{channel}_unexpected"] = len(set(taken) - wanted)
    return figures


def fate(bootstrap: str, settings, phones: set[str]) -> dict[str, list[str]]:
    """What the pipeline's topics say about each of ``phones``: for telling how a message was lost."""
    said: dict[str, list[str]] = {phone: [] for phone in phones}
    ids: dict[str, str] = {}
    for message in read_topic(bootstrap, settings.topics.notifications, timeout=60):
        notification = orjson.loads(message.value)
        if notification["to"] in said:
            ids[notification["id"]] = notification["to"]
            said[notification["to"]].append(
                f"notification {notification['id'][:12]} p{message.partition} offset {message.offset}")
    customers = {f"C{int(phone[5:]):06d}": phone for phone in phones}
    for message in read_topic(bootstrap, settings.topics.suppressed, timeout=60):
        outcome = orjson.loads(message.value)
        if outcome.get("customer_id") in customers:
            said[customers[outcome["customer_id"]]].append(f"suppressed {outcome['reason']}: {outcome.get('detail')}")
    for topic in (settings.topics.deliveries, settings.topics.retry, settings.topics.deadletter):
        for message in read_topic(bootstrap, topic, timeout=60):
            text = message.value.decode(errors="replace")
            for notification_id, phone in ids.items():
                if notification_id in text:
                    said[phone].append(f"{topic}: {text[:300]}")
    return said


def trace(bootstrap: str, settings, customer_ids: set[str]) -> list[str]:
    """Every record that names one of ``customer_ids``, topic by topic: for telling why a message went out."""
    lines = []
    topics = settings.topics
    for topic in (topics.carts, topics.events, topics.due, topics.notifications, topics.suppressed):
        for message in read_topic(bootstrap, topic, timeout=30):
            text = message.value.decode(errors="replace") if message.value else ""
            named = [c for c in customer_ids if c in text]
            if named:
                kind = orjson.loads(message.value).get("type", "") if text.startswith("{") else ""
                lines.append(f"{named[0]} {topic}/{message.partition}@{message.offset} t={message.timestamp} "
                             f"{kind} {text[:160]}")
    return lines


def customer_of(address: str) -> str:
    """``klant{n}@example.nl`` (``row``) belongs to customer ``C{n:06d}``."""
    return f"C{int(address.removeprefix('klant').split('@')[0]):06d}"


def surprises(bootstrap: str, settings, imitation, expected: "Expected") -> list[str]:
    """The cart reminders nobody should have had, with what the topics say about their customers."""
    unexpected = {a.to for a in imitation.accepted_by(SENDGRID)} - expected.email
    customers = {customer_of(address) for address in unexpected}
    return sorted(unexpected) + (trace(bootstrap, settings, customers) if customers else [])


def explain(broker, pipeline: "Pipeline", imitation, worker=None) -> None:
    """Print, for the captured output of a failed test, what became of each SMS never taken,
    and where each of the worker's tasks waits (``streams.worker.log_tasks``)."""
    lost = pipeline.expected.sms - {a.to for a in imitation.accepted_by(TWILIO)}
    for phone, said in list(fate(broker.bootstrap, pipeline.settings, lost).items())[:20]:
        print(f"LOST {phone}:", *said, sep="\n  ")
    lost_email = pipeline.expected.email - {a.to for a in imitation.accepted_by(SENDGRID)}
    if lost_email:
        customers = {customer_of(address) for address in sorted(lost_email)[:5]}
        print("LOST EMAIL", *sorted(lost_email), *trace(broker.bootstrap, pipeline.settings, customers), sep="\n  ")
    print("IMITATION", imitation.summary())
    if worker is not None and worker.running:
        os.kill(worker.process.pid, signal.SIGUSR1)
        time.sleep(1)
        print("TASKS", *[line for line in worker.log().splitlines() if "task " in line][-40:], sep="\n  ")


def wait_until(check, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def all_taken(imitation, expected: Expected) -> bool:
    return (expected.sms <= {a.to for a in imitation.accepted_by(TWILIO)}
            and expected.email <= {a.to for a in imitation.accepted_by(SENDGRID)})


def report(name: str, **figures) -> None:
    print(f"FAULTS {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


class Pipeline:
    """Customers loaded, workers started on demand; the outage and the carts produced as the tests ask."""

    def __init__(self, broker, settings, start_worker, tmp_path: Path, size: Scale, local: LocalProviders):
        self.broker, self.settings, self.start_worker, self.size = broker, settings, start_worker, size
        self.env = {**local.env, "FOREWARN_RULES": str(write(tmp_path / "rules.yaml", RULES)),
                    "FOREWARN_CLOCK": "wall", "FOREWARN_SMS_RATE": str(size.rate),
                    "FOREWARN_EMAIL_RATE": str(size.rate), "FOREWARN_RETRY_DELAY": "5",
                    "FOREWARN_PROVIDER_TIMEOUT": "3"}
        self.areas = [str(OUTAGE_AREAS_FROM + a) for a in range(max(1, size.recipients // PER_AREA))]
        rows = [row(n, f"{self.areas[n % len(self.areas)]}AB", sms=True) for n in range(size.recipients)]
        first_cart = size.recipients
        self.cart_numbers = list(range(first_cart, first_cart + size.carts))
        rows += [row(n, CART_AREA, sms=False) for n in self.cart_numbers]
        self.customers = write_customer_csv(tmp_path / "customers.csv", rows)
        self.expected = Expected(sms={r[2] for r in rows[:size.recipients]})
        # Every fifth cart is checked out right after: no reminder for it.
        self.expected.email = {f"klant{n}@example.nl" for n in self.cart_numbers if n % 5}

    def start(self):
        return self.start_worker(**self.env)

    def load(self, worker) -> None:
        load_customers(self.broker.bootstrap, self.settings.topics.customers, self.customers)
        source = self.settings.topics.source()
        assert wait_drained(self.broker.bootstrap, self.start_worker.app_id, source, 180,
                            alive=lambda: worker.running), worker.log()[-3000:]

    def outage(self) -> None:
        produce_json(self.broker.bootstrap, self.settings.topics.outages, [("OUT-F", event(
            "out-f", "outage.started", {"outage_id": "OUT-F", "service": "internet", "areas": self.areas}))])

    def carts_in_background(self, seconds: float) -> threading.Thread:
        def run() -> None:
            pause = seconds / max(1, len(self.cart_numbers))
            for n in self.cart_numbers:
                records = [(f"C{n:06d}", cart_of(n))]
                if not n % 5:
                    records.append((f"C{n:06d}", event(f"paid-{n}", "cart.checked_out",
                                                          {"cart_id": f"CART-{n}", "order_id": f"ORD-{n}"},
                                                          f"C{n:06d}")))
                produce_json(self.broker.bootstrap, self.settings.topics.carts, records)
                time.sleep(pause)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def test_sigkill_during_a_fanout_and_carts_loses_and_doubles_nothing(broker, settings, start_worker, tmp_path,
                                                                   long_run):
    size = scale(long_run)
    seed = int(os.environ.get("FOREWARN_TEST_SEED") or random.randrange(1 << 30))  # a failing run names its seed
    rng = random.Random(seed)
    with LocalProviders(settings, broker.bootstrap, sms_rate=size.rate * 1.2, email_rate=size.rate * 1.2,
                        post_callbacks=False) as local:
        pipeline = Pipeline(broker, settings, start_worker, tmp_path, size, local)
        worker = pipeline.start()
        pipeline.load(worker)
        started = time.monotonic()
        pipeline.outage()
        carts = pipeline.carts_in_background(size.recipients / size.rate)
        fake = local.imitation
        # The first kill lands while the fan-out is being decided; the others at random points of the sending.
        marks = sorted(rng.uniform(0.1, 0.9) * size.recipients for _ in range(size.kills - 1))
        time.sleep(rng.uniform(0.05, 0.5))
        kills, killed_at = [], []
        for threshold in [None, *marks]:
            if threshold is not None:
                wait_until(lambda: len(fake.accepted_by(TWILIO)) >= threshold or not worker.running, 120, 0.05)
            kills.append(len(fake.accepted))
            killed_at.append(round(time.time() * 1000))
            worker.kill()
            worker = pipeline.start()
        carts.join()
        finished = wait_until(lambda: all_taken(fake, pipeline.expected), 150 if not long_run else 300)
        time.sleep(3)  # a double would be in by now
        figures = account(fake, pipeline.expected)
        report("sigkill", seed=seed, recipients=size.recipients, carts=size.carts, kills=len(kills),
               accepted_at_kills=kills, seconds=round(time.monotonic() - started, 1), **figures)
        if not finished:
            explain(broker, pipeline, fake, worker)
        assert finished, (figures, worker.log()[-3000:])
        assert figures == {"sms_lost": 0, "sms_duplicates": 0, "sms_unexpected": 0,
                           "email_lost": 0, "email_duplicates": 0, "email_unexpected": 0}, (
            seed, killed_at, surprises(broker.bootstrap, settings, fake, pipeline.expected))
        assert "Traceback" not in worker.log()


def test_two_workers_one_killed_and_rejoining_lose_and_double_nothing(broker, settings, start_worker, tmp_path,
                                                                     long_run):
    size = scale(long_run)
    with LocalProviders(settings, broker.bootstrap, sms_rate=size.rate * 1.2, email_rate=size.rate * 1.2,
                        post_callbacks=False) as local:
        pipeline = Pipeline(broker, settings, start_worker, tmp_path, size, local)
        first, second = pipeline.start(), pipeline.start()
        pipeline.load(first)
        started = time.monotonic()
        pipeline.outage()
        carts = pipeline.carts_in_background(size.recipients / size.rate)
        fake = local.imitation
        wait_until(lambda: len(fake.accepted_by(TWILIO)) >= size.recipients // 4, 120, 0.05)
        killed_at = len(fake.accepted)
        second.kill()  # its partitions move to the first worker
        wait_until(lambda: len(fake.accepted_by(TWILIO)) >= size.recipients // 2, 120, 0.1)
        rejoined_at = len(fake.accepted)
        second = pipeline.start()  # and back again
        carts.join()
        finished = wait_until(lambda: all_taken(fake, pipeline.expected), 150 if not long_run else 300)
        time.sleep(3)
        figures = account(fake, pipeline.expected)
        report("rebalance", recipients=size.recipients, carts=size.carts, killed_at=killed_at,
               rejoined_at=rejoined_at, seconds=round(time.monotonic() - started, 1), **figures)
        if not finished:
            explain(broker, pipeline, fake, first)
        assert finished, (figures, first.log()[-3000:])
        assert figures == {"sms_lost": 0, "sms_duplicates": 0, "sms_unexpected": 0,
                           "email_lost": 0, "email_duplicates": 0, "email_unexpected": 0}
        assert first.running and second.running


@pytest.mark.xdist_group("providers")  # no kill: beside the kill tests, not after them
def test_provider_outage_then_429_bursts_then_timeouts_lose_and_double_nothing(broker, settings, start_worker,
                                                                              long_run):
    outage = 60.0 if long_run else 5.0
    count = 3_000 if long_run else 300
    with LocalProviders(settings, broker.bootstrap, post_callbacks=False) as local:
        fake = local.imitation
        worker = start_worker(**local.env, FOREWARN_SMS_RATE="200", FOREWARN_EMAIL_RATE="200",
                              FOREWARN_RETRY_DELAY="5", FOREWARN_PROVIDER_TIMEOUT="2")
        messages = [notification(i, "sms" if i % 2 else "email") for i in range(count)]
        fake.outage(outage)  # 503 from both providers
        started = time.monotonic()
        produce_json(broker.bootstrap, settings.topics.notifications,
                     [(n["customer_id"], orjson.dumps(n)) for n in messages])
        time.sleep(outage)
        for _ in range(3):  # bursts of 429 with Retry-After
            fake.throttle(50, retry_after=1.0)
            time.sleep(2)
        fake.hang(20, accept=True, hold=5.0)  # taken, but the answer never comes in time
        time.sleep(1)
        fake.hang(20, accept=False, hold=5.0)  # not taken, no answer either
        wanted = {n["id"] for n in messages}
        finished = wait_until(lambda: {a.notification_id for a in fake.accepted} >= wanted, 240)
        time.sleep(3)
        taken = Counter(a.notification_id for a in fake.accepted)
        deadletter = read_topic(broker.bootstrap, settings.topics.deadletter, timeout=1)
        stats = fake.summary()
        report("provider", messages=count, outage_s=outage, seconds=round(time.monotonic() - started, 1),
               lost=len(wanted - set(taken)), duplicates=sum(c - 1 for c in taken.values()),
               twilio=dict(stats[TWILIO]), sendgrid=dict(stats[SENDGRID]),
               deadletter=len(deadletter))
        assert finished, worker.log()[-3000:]
        assert set(taken) == wanted and max(taken.values()) == 1
        assert deadletter == []
        delivered = {orjson.loads(m.value)["notification_id"] for m in read_topic(
            broker.bootstrap, settings.topics.deliveries) if orjson.loads(m.value)["status"] == "queued"}
        assert delivered == wanted


@pytest.mark.xdist_group("providers")
def test_a_slow_provider_pauses_consumption_and_memory_stays_bounded(broker, settings, start_worker, long_run):
    count, rate, watch = (100_000, 50, 60.0) if long_run else (20_000, 50, 12.0)
    with LocalProviders(settings, broker.bootstrap, sms_rate=rate, post_callbacks=False) as local:
        worker = start_worker(**local.env, FOREWARN_SMS_RATE=str(rate))
        assert wait_until(lambda: "]: Ready" in worker.log(), 90)
        time.sleep(2)
        before = rss(worker.process.pid)[0] / MIB
        body = "Storing in uw buurt. " * 8  # about 170 characters: two segments, a realistic size
        produce_json(broker.bootstrap, settings.topics.notifications,
                     [(f"C{i:06d}", orjson.dumps(notification(i, "sms", body=body))) for i in range(count)])
        samples = []
        deadline = time.monotonic() + watch
        while time.monotonic() < deadline:
            samples.append(rss(worker.process.pid)[0] / MIB)
            time.sleep(1)
        taken = len(local.imitation.accepted)
        behind = lag(broker.bootstrap, start_worker.app_id, [settings.topics.notifications])
        report("backpressure", notifications=count, provider_rate=rate, watched_s=watch, sent=taken,
               not_committed=behind, rss_before_mib=round(before), rss_max_mib=round(max(samples)))
        assert worker.running
        # Paced at the provider's rate, not faster, and the rest waits on Kafka, not in the worker.
        assert taken <= rate * (watch + 5)
        assert behind >= count - taken - 2 * settings.dispatch_window - 5_000
        assert max(samples) - before < 60, samples
