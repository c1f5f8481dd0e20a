"""Delivery receipts: signed callbacks from the imitation, and forged, stale and replayed ones."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import secrets
import time
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import aiohttp
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from streams.channels.courier import Courier
from streams.core.events import Schemas
from streams.tools.imitation import Imitation
from streams.settings import Settings
from streams.channels.receipts import SENDGRID_PATH, Receiver
from streams.metrics import REJECTED
from tests.channels.support import notification, providers


def rejected(provider: str, reason: str) -> float:
    return REJECTED.labels(provider, reason)._value.get()


@asynccontextmanager
async def receiving(public_url: str | None = None, fail: bool = False):
    """Imitation, channels and a receiver whose records land in ``published``: {topic: [record, ...]}."""
    published: dict[str, list[dict]] = {}
    failing = {"on": fail}

    async def publish(topic, key, value, partition):
        if failing["on"]:
            raise ConnectionError("Kafka is away")
        published.setdefault(topic, []).append(orjson.loads(value))

    async with providers(callback_url=None, post_callbacks=True, callback_delay=0.01) as (fake, sms, email):
        settings = dataclasses.replace(Settings(), twilio_auth_token=fake.auth_token,
                                       sendgrid_webhook_public_key=fake.public_key, webhook_public_url=public_url)
        receiver = await Receiver(settings, publish).start(port=0)
        sms.callback_url = public_url or receiver.url
        fake.event_webhook_url = receiver.url + SENDGRID_PATH
        try:
            yield fake, sms, email, receiver, published, failing
        finally:
            await receiver.stop()


class Signer:
    """The providers' side of both signatures, with a token and a key made here."""

    def __init__(self):
        self.auth_token = secrets.token_hex(16)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = base64.b64encode(self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()

    def twilio(self, url: str, params) -> dict[str, str]:
        return {"X-Twilio-Signature": RequestValidator(self.auth_token).compute_signature(url, params)}

    def sendgrid(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        """SendGrid's headers for ``body``: ECDSA over the timestamp's bytes and the body's, as they are."""
        timestamp = timestamp if timestamp is not None else str(int(time.time()))
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp, "Content-Type": "application/json"}


PUBLIC_URL = "https://hooks.example.nl"


@asynccontextmanager
async def signed_receiver(public_url: str | None = PUBLIC_URL, publish_delay: float = 0.0):
    """A receiver on 127.0.0.1 trusting a Signer, its records in ``published``: (signer, receiver, published)."""
    signer, published = Signer(), {}

    async def publish(topic, key, value, partition):
        await asyncio.sleep(publish_delay)
        published.setdefault(topic, []).append(orjson.loads(value))

    settings = dataclasses.replace(Settings(), twilio_auth_token=signer.auth_token,
                                   sendgrid_webhook_public_key=signer.public_key, webhook_public_url=public_url)
    receiver = await Receiver(settings, publish).start(port=0)
    try:
        yield signer, receiver, published
    finally:
        await receiver.stop()


async def settle(published: dict, topic: str, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(published.get(topic, [])) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return published.get(topic, [])


def test_twilio_status_callbacks_become_deliveries_and_an_undelivered_sms_asks_for_its_fallback():
    async def scenario():
        async with receiving() as (fake, sms, email, receiver, published, _):
            fine, lost = notification(1, fallback=["email"]), notification(2, fallback=["email"])
            fake.undeliverable(lost["to"], "undelivered", 30003)
            await Courier({"sms": sms, "email": email}).deliver_all([fine, lost])
            deliveries = await settle(published, "deliveries", 4)
            statuses = {(d["notification_id"], d["status"]) for d in deliveries}
            assert statuses == {(fine["id"], "sent"), (fine["id"], "delivered"),
                                (lost["id"], "sent"), (lost["id"], "undelivered")}
            assert all(d["provider"] == "twilio" and d["provider_message_id"].startswith("SM") for d in deliveries)
            assert [problem for d in deliveries for problem in Schemas().problems("delivery.json", d)] == []
            [fallback] = published["fallbacks"]
            assert fallback["notification_id"] == lost["id"] and fallback["customer_id"] == lost["customer_id"]
            assert fallback["failed_channel"] == "sms" and fallback["fallback"] == ["email"]
            assert "30003" in fallback["reason"] and lost["to"] not in json.dumps(published)

    asyncio.run(scenario())


def test_sendgrid_events_become_deliveries_bounces_fall_back_and_unsubscribes_opt_out():
    async def scenario():
        async with receiving() as (fake, sms, email, receiver, published, _):
            fine = notification(3, "email")
            bounced = notification(4, "email", fallback=["sms"])
            leaving = notification(5, "email")
            fake.bounce(bounced["to"], "bounce")
            fake.bounce(leaving["to"], "unsubscribe")
            await Courier({"sms": sms, "email": email}).deliver_all([fine, bounced, leaving])
            deliveries = await settle(published, "deliveries", 5)
            await settle(published, "consent", 1)
            statuses = {(d["notification_id"], d["status"]) for d in deliveries}
            assert statuses == {(fine["id"], "sent"), (fine["id"], "delivered"), (bounced["id"], "sent"),
                                (bounced["id"], "failed"), (leaving["id"], "sent")}
            [fallback] = published["fallbacks"]
            assert fallback["notification_id"] == bounced["id"] and fallback["fallback"] == ["sms"]
            assert [problem for d in deliveries for problem in Schemas().problems("delivery.json", d)] == []
            [optout] = published["consent"]
            [statement] = optout["statements"]
            assert optout["customer_id"] == leaving["customer_id"]
            assert (statement["channel"], statement["allow"], statement["source"]) == ("email", False, "provider")
            assert Schemas().problems("consent.json", optout) == []

    asyncio.run(scenario())


async def post(url: str, **kwargs) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as response:
        return response.status


def twilio_receipt(fake, url: str, status: str = "delivered") -> tuple[dict, dict]:
    params = {"AccountSid": fake.account_sid, "MessageSid": "SM" + "1" * 32, "MessageStatus": status,
              "To": "+31612345678", "From": fake.twilio_from}
    return params, {"X-Twilio-Signature": RequestValidator(fake.auth_token).compute_signature(url, params)}


def test_forged_and_replayed_twilio_callbacks_are_refused_and_counted():
    async def scenario():
        async with receiving(public_url="https://hooks.example.nl") as (fake, _, _, receiver, published, _):
            path = "/twilio/status?" + urlencode({"n": "ntf-9", "c": "C9", "r": "outage-started"})
            local, public = receiver.url + path, "https://hooks.example.nl" + path
            forged_before, replayed_before = rejected("twilio", "forged"), rejected("twilio", "replayed")
            params, headers = twilio_receipt(fake, public)
            # signed for the URL we serve on, not the public one Twilio was given: forged
            _, local_headers = twilio_receipt(fake, local)
            assert await post(local, data=params, headers=local_headers) == 403
            # another auth token
            wrong = {"X-Twilio-Signature": RequestValidator("not-the-token").compute_signature(public, params)}
            assert await post(local, data=params, headers=wrong) == 403
            # a changed parameter
            assert await post(local, data={**params, "MessageStatus": "failed"}, headers=headers) == 403
            assert await post(local, data=params) == 403  # unsigned
            assert rejected("twilio", "forged") - forged_before == 3
            assert await post(local, data=params, headers=headers) == 200
            assert await post(local, data=params, headers=headers) == 403
            assert rejected("twilio", "replayed") - replayed_before == 1
            assert [d["notification_id"] for d in published["deliveries"]] == ["ntf-9"]

    asyncio.run(scenario())


def sendgrid_events(notification_id: str = "ntf-7") -> str:
    return json.dumps([{"email": "klant@example.nl", "timestamp": int(time.time()), "event": "delivered",
                        "sg_message_id": "abc.recvd", "notification_id": notification_id, "customer_id": "C7",
                        "rule": "order-delayed"}], separators=(",", ":"))


def test_forged_stale_malformed_and_replayed_sendgrid_events_are_refused_and_counted():
    async def scenario():
        async with receiving() as (fake, _, _, receiver, published, _):
            url = receiver.url + SENDGRID_PATH
            before = {reason: rejected("sendgrid", reason) for reason in ("forged", "stale", "replayed", "unsigned")}
            payload = sendgrid_events()
            headers = fake.sign_events(payload)
            # the body changed after signing
            assert await post(url, data=sendgrid_events("ntf-8"), headers=headers) == 403
            # signed by another key
            assert await post(url, data=payload, headers=Imitation().sign_events(payload)) == 403
            # malformed signatures: the library would raise; here they are plain forgeries
            for garbage in ("not base64 at all!", base64.b64encode(b"\x30\x02junk").decode(), ""):
                bad = {**headers, "X-Twilio-Email-Event-Webhook-Signature": garbage}
                assert await post(url, data=payload, headers=bad) == 403
            # stale: signed (validly) ten minutes ago, or ten minutes ahead
            for skew in (-600, 600):
                old = fake.sign_events(payload, timestamp=str(int(time.time()) + skew))
                assert await post(url, data=payload, headers=old) == 403
            assert await post(url, data=payload, headers=headers) == 200
            assert await post(url, data=payload, headers=headers) == 403
            counts = {reason: rejected("sendgrid", reason) - before[reason] for reason in before}
            assert counts == {"forged": 4, "stale": 2, "replayed": 1, "unsigned": 1}
            assert [d["notification_id"] for d in published["deliveries"]] == ["ntf-7"]

    asyncio.run(scenario())


def test_a_receipt_that_cannot_be_recorded_gets_503_and_its_retry_is_welcome():
    async def scenario():
        async with receiving(fail=True) as (fake, _, _, receiver, published, failing):
            url = receiver.url + SENDGRID_PATH
            payload = sendgrid_events()
            headers = fake.sign_events(payload)
            assert await post(url, data=payload, headers=headers) == 503
            failing["on"] = False
            assert await post(url, data=payload, headers=headers) == 200  # not a replay: the first did not land
            assert len(published["deliveries"]) == 1

    asyncio.run(scenario())
