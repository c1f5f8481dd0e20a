"""Opt-outs hold on a real worker: an SMS STOP through Twilio's signed webhook, unsubscribe links, the SDKs.

One worker on the wall clock, the shipped rules with short waits and no quiet
hours, the imitation behind both SDKs, the receiver taking STOP and the
one-click POST. Each opt-out comes while the message it concerns waits.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import orjson
import pytest

from streams.channels.optouts import INBOUND_PATH
from streams.core.consent import MARKETING, Scope
from streams.core.unsubscribe import ONE_CLICK, links_for
from streams.kafka.admin import produce_json, read_topic
from streams.tools.local_providers import LocalProviders
from streams.settings import ROOT
from tests.fakes import upsert_event

pytestmark = pytest.mark.broker
WAIT = 12  # seconds the cart reminder waits here (1 h in the shipped rules)


def quick_rules(path):
    """The shipped rules, with waits of seconds and without quiet hours."""
    text = (ROOT / "config" / "rules.yaml").read_text()
    text = text.replace("quiet_hours: {start: \"21:00\", end: \"08:00\"}", "quiet_hours: false")
    text = text.replace("    coalesce: 3h\n", "    coalesce: 2s\n").replace("    wait: 1h\n", f"    wait: {WAIT}s\n")
    assert "quiet_hours: false" in text and f"wait: {WAIT}s" in text and "coalesce: 2s" in text
    path.write_text(text)
    return path


def person(cid: str, n: int, marketing: bool = True) -> dict:
    return {"id": cid, "name": f"Klant {cid}", "phone": f"+3161234{n:04d}", "email": f"{cid.lower()}@example.nl",
            "locale": "nl", "timezone": "Europe/Amsterdam", "tier": "standard", "postcode": "2000AA",
            "consents": {"sms": True, "email": True, "marketing": {"sms": False, "email": marketing}}}


def cart(cid: str, at: datetime) -> dict:
    return {"id": f"cart-{cid}-{at:%H%M}", "type": "cart.updated", "occurred_at": at.isoformat(), "customer_id": cid,
            "data": {"cart_id": f"K-{cid}", "items": [{"sku": "A1", "name": "Router", "qty": 1, "unit_price": 49.95}],
                     "total": 49.95, "currency": "EUR", "checkout_url": "https://shop.example.nl/c/1"}}


def order_event(kind: str, cid: str, at: datetime, **data) -> dict:
    return {"id": f"{kind}-{cid}-{at:%d%H%M}", "type": kind, "occurred_at": at.isoformat(), "customer_id": cid,
            "data": {"order_id": f"O-{cid}", **data}}


def shipped(cid: str, at: datetime) -> dict:
    return order_event("order.shipped", cid, at, carrier="PostNL", tracking_url="https://t.example.nl/1",
                       eta=(at + timedelta(days=1)).isoformat())


def records(bootstrap: str, topic: str) -> list[dict]:
    return [orjson.loads(m.value) for m in read_topic(bootstrap, topic) if m.value is not None]


def wait_for(check, what: str, worker, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert worker.running, worker.log()[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n" + worker.log()[-3000:]
        time.sleep(0.3)


def test_stop_and_unsubscribes_hold_through_crm_upserts_pending_and_parked_messages(broker, settings, start_worker,
                                                                                  tmp_path):
    topics = settings.topics
    T0 = datetime.now(timezone.utc)

    def produce(topic: str, *events: dict) -> None:
        produce_json(broker.bootstrap, topic, [(e["customer_id"], orjson.dumps(e)) for e in events])

    def preferences_of(cid: str) -> list[dict]:
        return [r for r in records(broker.bootstrap, topics.preferences) if r["customer_id"] == cid]

    def emails_to(cid: str) -> list:
        return [a for a in local.imitation.accepted if a.to == f"{cid.lower()}@example.nl"]

    def suppressed(cid: str, reason: str) -> list[dict]:
        return [s for s in records(broker.bootstrap, topics.suppressed)
                if s["customer_id"] == cid and s["reason"] == reason]

    with LocalProviders(settings, broker.bootstrap, post_callbacks=False) as local:
        worker = start_worker(**local.env, FOREWARN_CLOCK="wall", FOREWARN_RULES=str(quick_rules(tmp_path / "r.yaml")),
                              FOREWARN_DISPATCH_ATTEMPTS="1", FOREWARN_RETRY_DELAY="5", FOREWARN_SMS_RATE="50",
                              FOREWARN_EMAIL_RATE="50")
        links = links_for(dataclasses.replace(settings, webhook_public_url=local.receiver.url))
        people = {cid: person(cid, n, marketing=cid != "D") for n, cid in enumerate("ABCD")}
        produce(topics.customers, *(upsert_event(p, (T0 - timedelta(days=1)).isoformat()) for p in people.values()))
        wait_for(lambda: len(records(broker.bootstrap, topics.preferences)) >= 4, "the customers' CRM consents", worker)

        def post(url: str, **kwargs) -> int:
            async def call() -> int:
                async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as response:
                    return response.status
            return local._run(call())

        # 1. STOP by SMS, then the CRM repeats sms: true: SMS stays off, email still goes.
        status, answer = local._run(local.imitation.reply(local.receiver.url + INBOUND_PATH, people["A"]["phone"],
                                                          " Stop! "))
        assert status == 200 and "<Response>" in answer
        forged, _ = local._run(local.imitation.reply(local.receiver.url + INBOUND_PATH, people["A"]["phone"],
                                                     "START", signed=False))
        assert forged == 403
        wait_for(lambda: preferences_of("A"), "A's STOP in the preferences topic", worker)
        produce(topics.customers, upsert_event(people["A"], (T0 - timedelta(hours=1)).isoformat()))
        produce(topics.orders, order_event("order.delayed", "A", datetime.now(timezone.utc),
                                           old_eta=(T0 + timedelta(days=1)).isoformat(),
                                           new_eta=(T0 + timedelta(days=3)).isoformat(), reason="weather"))
        wait_for(lambda: emails_to("A"), "the delay email to A", worker)
        assert [a for a in local.imitation.accepted if a.to == people["A"]["phone"]] == []

        # 2. Unsubscribed while the reminder waits: it is not sent when it falls due.
        produce(topics.carts, cart("B", datetime.now(timezone.utc)))
        token = links.token("B", Scope("email", MARKETING), "nl", datetime.now(timezone.utc))
        assert post(f"{local.receiver.url}/unsubscribe/{token}", data=ONE_CLICK,
                    headers={"Content-Type": "application/x-www-form-urlencoded"}) == 200
        wait_for(lambda: preferences_of("B"), "B's unsubscribe in the preferences topic", worker)
        wait_for(lambda: suppressed("B", "opted_out"), "B's reminder held back", worker)

        # 3. Unsubscribed while the reminder is parked (SendGrid down): the retry round does not send it.
        local.imitation.outage(600, provider="sendgrid", status=503)
        produce(topics.carts, cart("C", datetime.now(timezone.utc)))
        wait_for(lambda: any(r["notification"]["customer_id"] == "C" for r in records(broker.bootstrap, topics.retry)),
                 "C's reminder parked", worker)
        token = links.token("C", Scope("email", MARKETING), "nl", datetime.now(timezone.utc))
        assert post(f"{local.receiver.url}/unsubscribe/{token}", data=ONE_CLICK,
                    headers={"Content-Type": "application/x-www-form-urlencoded"}) == 200
        wait_for(lambda: preferences_of("C"), "C's unsubscribe in the preferences topic", worker)
        local.imitation.heal()
        wait_for(lambda: suppressed("C", "opted_out"), "C's parked reminder withheld", worker)
        time.sleep(2)

        assert emails_to("B") == [] and emails_to("C") == []
        [withheld] = suppressed("C", "opted_out")
        assert "withheld at dispatch" in withheld["detail"]
        stop = [r for r in records(broker.bootstrap, topics.consent) if r.get("phone") == people["A"]["phone"]]
        assert len(stop) == settings.partitions  # one to each partition: the number's customers may be anywhere
        assert [(s["allow"], s["source"]) for s in stop[0]["statements"]] == [(False, "sms-stop")]
    assert people["A"]["phone"] not in worker.log() and "a@example.nl" not in worker.log()


def forewarn(broker, *args: str) -> str:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
    result = subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_support_states_a_preference_and_forgets_a_customer_from_the_command_line(broker, settings, start_worker):
    topics = settings.topics
    worker = start_worker()
    sanne = person("C1001", 1)
    produce_json(broker.bootstrap, topics.customers, [("C1001", orjson.dumps(upsert_event(sanne)))])

    def shown() -> str:
        return forewarn(broker, "preferences", "show", "C1001")

    wait_for(lambda: "marketing by email: sent" in shown(), "the CRM's consents", worker)
    forewarn(broker, "preferences", "set", "C1001", "--deny", "--channel", "email", "--category", "marketing",
             "--note", "belde de klantenservice")
    wait_for(lambda: "marketing by email: held back (opted_out)" in shown(), "the support statement", worker)
    out = shown()
    assert "service by email: sent" in out and "belde de klantenservice" in out and "support" in out

    forewarn(broker, "forget", "C1001", "--reason", "AVG art. 17")
    wait_for(lambda: "service by sms: held back (opted_out)" in shown(), "the customer forgotten", worker)
    assert "forgotten" in shown()
    customers = [m for m in read_topic(broker.bootstrap, topics.customers)]
    assert customers[-1].key == b"C1001" and customers[-1].value is None  # compaction drops the CRM's record
    changelog = [m for m in read_topic(broker.bootstrap, f"{start_worker.app_id}-customers-changelog")
                 if m.key == b'"C1001"']
    assert changelog[-1].value is None  # and the directory's
    assert sanne["phone"] not in worker.log()
