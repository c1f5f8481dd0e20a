"""Replays: keyed on what was signed, so no other spelling of a signature and no concurrent copy counts twice."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from sendgrid.helpers.eventwebhook import EventWebhook

from streams.channels.receipts import SENDGRID_PATH, ReplayGuard
from tests.channels.test_receipts import PUBLIC_URL, post, rejected, signed_receiver

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def bounce(notification_id: str = "ntf-bounced") -> bytes:
    return json.dumps([{"email": "klant@example.nl", "timestamp": int(time.time()), "event": "bounce",
                        "reason": "550 5.1.1 no such user", "sg_message_id": "abc.recvd", "customer_id": "C1",
                        "notification_id": notification_id, "rule": "order-delayed", "fallback": "sms"}]).encode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def other_spellings(signature: str) -> dict[str, str]:
    """The same ECDSA signature written otherwise: each verifies, or decodes leniently, to what was signed."""
    der = base64.b64decode(signature)
    r, s = decode_dss_signature(der)
    return {"(r, n-s)": b64(encode_dss_signature(r, P256_ORDER - s)),
            "DER with trailing bytes": b64(der + b"\x00\x00"),
            "DER with a long-form length": b64(b"\x30\x81" + der[1:]),
            "base64 with junk a lenient decoder skips": signature + "!!"}


def test_a_bounce_replayed_under_other_spellings_of_its_signature_is_recorded_once():
    async def scenario():
        async with signed_receiver() as (signer, receiver, published):
            url, body = receiver.url + SENDGRID_PATH, bounce()
            headers = signer.sendgrid(body)
            spellings = other_spellings(headers[SIGNATURE])
            webhook = EventWebhook(signer.public_key)
            timestamp = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
            assert webhook.verify_signature(body.decode(), spellings["(r, n-s)"], timestamp)  # ECDSA allows it
            assert await post(url, data=body, headers=headers) == 200
            statuses = [await post(url, data=body, headers={**headers, SIGNATURE: spelling})
                        for _ in range(100) for spelling in spellings.values()]
            assert statuses == [403] * 400
            assert [d["status"] for d in published["deliveries"]] == ["failed"]
            assert len(published["fallbacks"]) == 1

    asyncio.run(scenario())


def test_a_new_receipt_signed_with_a_high_s_signature_is_taken_and_its_low_s_twin_is_a_replay():
    # ECDSA does not require low s and nothing says SendGrid's signer normalises: refusing high s would
    # refuse real receipts. The replay key is what was signed, so either form counts once.
    async def scenario():
        async with signed_receiver() as (signer, receiver, published):
            url, body = receiver.url + SENDGRID_PATH, bounce("ntf-high-s")
            headers = signer.sendgrid(body)
            twin = other_spellings(headers[SIGNATURE])["(r, n-s)"]
            replayed = rejected("sendgrid", "replayed")
            assert await post(url, data=body, headers={**headers, SIGNATURE: twin}) == 200
            assert await post(url, data=body, headers=headers) == 403
            assert rejected("sendgrid", "replayed") - replayed == 1
            assert len(published["deliveries"]) == 1

    asyncio.run(scenario())


def test_twilio_replays_are_keyed_on_the_signed_url_and_form_not_on_the_signature_text():
    # RequestValidator takes a signature over the URL with or without its default port: two texts, one receipt.
    async def scenario():
        async with signed_receiver() as (signer, receiver, published):
            path = "/twilio/status?" + urlencode({"n": "ntf-twin", "c": "C2", "r": "outage-started", "fb": "email"})
            form = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "undelivered", "ErrorCode": "30003"}
            assert await post(receiver.url + path, data=form,
                              headers=signer.twilio("https://hooks.example.nl:443" + path, form)) == 200
            assert await post(receiver.url + path, data=form, headers=signer.twilio(PUBLIC_URL + path, form)) == 403
            assert len(published["deliveries"]) == 1 and len(published["fallbacks"]) == 1

    asyncio.run(scenario())


def test_copies_of_one_receipt_arriving_together_are_recorded_once():
    async def scenario():
        async with signed_receiver(publish_delay=0.2) as (signer, receiver, published):
            body = bounce("ntf-together")
            headers = signer.sendgrid(body)
            path = "/twilio/status?" + urlencode({"n": "ntf-sms-together", "c": "C3", "r": "outage-started"})
            form = {"MessageSid": "SM" + "3" * 32, "MessageStatus": "delivered"}
            sendgrid = [post(receiver.url + SENDGRID_PATH, data=body, headers=headers) for _ in range(20)]
            twilio = [post(receiver.url + path, data=form, headers=signer.twilio(PUBLIC_URL + path, form))
                      for _ in range(20)]
            statuses = await asyncio.gather(*sendgrid, *twilio)
            assert sorted(statuses[:20]) == [200] + [403] * 19 and sorted(statuses[20:]) == [200] + [403] * 19
            assert sorted(d["notification_id"] for d in published["deliveries"]) == ["ntf-sms-together",
                                                                                      "ntf-together"]

    asyncio.run(scenario())


def test_replay_memory_forgets_after_its_time_and_never_holds_more_than_its_limit():
    now = [0.0]
    guard = ReplayGuard(ttl=600, clock=lambda: now[0], limit=1000)
    assert guard.claim(b"first") and not guard.claim(b"first")
    for i in range(5000):
        now[0] += 0.01
        assert guard.claim(i.to_bytes(4, "big"))
        assert len(guard) <= 1000
    assert not guard.claim((4999).to_bytes(4, "big"))
    now[0] += 601
    assert guard.claim((4999).to_bytes(4, "big")) and len(guard) == 1  # the rest expired
    guard.release((4999).to_bytes(4, "big"))  # the receipt did not land: its retry is welcome
    assert guard.claim((4999).to_bytes(4, "big"))
