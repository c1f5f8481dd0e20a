"""Malformed receipts, signed and unsigned, to both endpoints: each gets a 4xx and none becomes a record.

A seeded generator (``FOREWARN_TEST_SEED`` replays a failing run) mixes the cases found by hand
with random ones: bodies, headers and content types a provider would never send.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import aiohttp
from multidict import MultiDict

from streams.channels.receipts import SENDGRID_PATH
from tests.channels.test_receipts import PUBLIC_URL, Signer, signed_receiver

REQUESTS = 600
PATH = "/twilio/status?" + urlencode({"n": "ntf-fuzz", "c": "C5", "r": "outage-started", "fb": "email"})
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
CONTENT_TYPES = [None, "multipart/form-data; boundary=xyz", "text/plain", "application/octet-stream",
                 "application/xml", "application/json-patch+json", "application/x-www-form-urlencodedx",
                 "text/html; charset=utf-8", "*/*", "garbage"]


@dataclass
class Case:
    what: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


# -- Twilio --------------------------------------------------------------------------------------------

def form_body(params: list[tuple[str, str]]) -> bytes:
    return urlencode(params).encode()


def good_params(rng: random.Random) -> list[tuple[str, str]]:
    status = rng.choice(["delivered", "undelivered", "failed", "sent"])
    return [("MessageSid", "SM" + "5" * 32), ("MessageStatus", status), ("AccountSid", "AC" + "6" * 32)]


def twilio_signed(signer: Signer, what: str, params: list[tuple[str, str]], content_type: str | None = FORM) -> Case:
    headers = signer.twilio(PUBLIC_URL + PATH, MultiDict(params))
    if content_type:
        headers["Content-Type"] = content_type
    return Case(what, PATH, form_body(params), headers)


ODD_VALUES = {"ErrorCode": ["9" * 5000, "²", "-1", "1e5", " 30003", "30003 ", "0x10", "1234567", "३०००३"],
              "MessageStatus": ["", "x" * 100, "Délivré", "delivered\x00", "sent sent", "DELIVERED", "{}"],
              "MessageSid": ["S" * 5000, "SM!!", "SMé" + "1" * 30, "SM 1"]}


def twilio_odd_value(rng: random.Random, signer: Signer) -> Case:
    name = rng.choice(list(ODD_VALUES))
    value = rng.choice(ODD_VALUES[name])
    params = [(k, v) for k, v in good_params(rng) if k != name] + [(name, value)]
    return twilio_signed(signer, f"signed {name}={value[:20]!r}", params)


def twilio_repeated_field(rng: random.Random, signer: Signer) -> Case:
    name, values = rng.choice([("MessageStatus", ["delivered", "failed"]), ("ErrorCode", ["30003", "21610"]),
                               ("MessageSid", ["SM" + "7" * 32, "SM" + "8" * 32])])
    params = [p for p in good_params(rng) if p[0] != name] + [(name, rng.choice(values)) for _ in range(2)]
    return twilio_signed(signer, f"signed, {name} twice", params)


def twilio_without_status(rng: random.Random, signer: Signer) -> Case:
    return twilio_signed(signer, "signed, no MessageStatus", [p for p in good_params(rng) if p[0] != "MessageStatus"])


def twilio_many_fields(rng: random.Random, signer: Signer) -> Case:
    return twilio_signed(signer, "signed, 500 fields", good_params(rng) + [(f"F{i}", "x") for i in range(500)])


def twilio_wrong_content_type(rng: random.Random, signer: Signer) -> Case:
    content_type = rng.choice(CONTENT_TYPES)
    return twilio_signed(signer, f"signed, Content-Type {content_type}", good_params(rng), content_type)


def twilio_multipart(rng: random.Random, signer: Signer) -> Case:
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"MessageStatus\"; filename=\"a.txt\"\r\n\r\n"
            b"delivered\r\n--xyz--\r\n")
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    if rng.random() < 0.5:
        headers.update(signer.twilio(PUBLIC_URL + PATH, {"MessageStatus": "delivered"}))
    return Case("multipart form", PATH, body, headers)


def twilio_bad_utf8(rng: random.Random, signer: Signer) -> Case:
    body = rng.choice([b"MessageStatus=d\xffelivered", b"MessageStatus=%FF", b"MessageStatus=%ED%A0%80",
                       b"\xc3\x28=1", b"MessageStatus=delivered&MessageSid=" + rng.randbytes(40)])
    signature = signer.twilio(PUBLIC_URL + PATH, {"MessageStatus": "delivered"})
    return Case("form not UTF-8", PATH, body, {"Content-Type": FORM, **signature})


def twilio_garbage_signature(rng: random.Random, signer: Signer) -> Case:
    signature = rng.choice(["", " ", "x", base64.b64encode(rng.randbytes(20)).decode(), "é" * 10, "A" * 5000])
    return Case("garbage Twilio signature", PATH, form_body(good_params(rng)),
                {"Content-Type": FORM, "X-Twilio-Signature": signature})


def twilio_unsigned(rng: random.Random, signer: Signer) -> Case:
    return Case("unsigned form", PATH, random_body(rng), {"Content-Type": rng.choice([FORM, *CONTENT_TYPES[1:]])})


def twilio_huge(rng: random.Random, signer: Signer) -> Case:
    params = good_params(rng) + [("Body", "x" * rng.randint(64 * 1024, 3 * 1024 * 1024))]
    return twilio_signed(signer, "signed, huge form", params)


# -- SendGrid ------------------------------------------------------------------------------------------

def event(**fields) -> dict:
    return {"email": "klant@example.nl", "timestamp": int(time.time()), "event": "bounce", "reason": "550",
            "sg_message_id": "abc.recvd", "notification_id": "ntf-fuzz", "customer_id": "C5",
            "rule": "order-delayed", "fallback": "sms", **fields}


def sendgrid_signed(signer: Signer, what: str, body: bytes, timestamp: str | None = None,
                    content_type: str | None = JSON) -> Case:
    headers = signer.sendgrid(body, timestamp)
    if content_type:
        headers["Content-Type"] = content_type
    else:
        del headers["Content-Type"]
    return Case(what, SENDGRID_PATH, body, headers)


SHAPES = [b"1", b'"events"', b"null", b"true", b"{}", b'{"event": "bounce"}', b"[1]", b"[[]]", b'["x"]',
          b"[null]", b"[true]", b'[{"notification_id": "n"}, 7]', b"[]" * 2, b"[1e400]"]
NOT_JSON = [b"", b"not json", b'[{"event": "bounce"', b"[" * 5000 + b"]" * 5000, b"[NaN]", b"\xef\xbb\xbf[]",
            b'[{"a": "\\ud800"}]', b"[{'event': 'bounce'}]", b"[{}] trailing", b'[{"notification_id": "\\u0000']
ODD_FIELDS = {"notification_id": [7, 1.5, True, [], {}, "", "n" * 5000, ["ntf-1"]],
              "customer_id": [5, [], {}, True], "event": [None, 5, [], {"bounce": 1}], "reason": [{}, [], 5],
              "fallback": [["sms"], 1, {}], "rule": [1, []], "sg_message_id": [1, {}],
              "timestamp": [1e20, -1e20, -1, True, "1700000000", 2 ** 70, 1e308, [], "now"]}


def sendgrid_shape(rng: random.Random, signer: Signer) -> Case:
    body = rng.choice(SHAPES)
    return sendgrid_signed(signer, f"signed shape {body[:20]!r}", body)


def sendgrid_not_json(rng: random.Random, signer: Signer) -> Case:
    body = rng.choice(NOT_JSON)
    return sendgrid_signed(signer, f"signed non-JSON {body[:20]!r}", body)


def sendgrid_odd_field(rng: random.Random, signer: Signer) -> Case:
    name = rng.choice(list(ODD_FIELDS))
    value = rng.choice(ODD_FIELDS[name])
    events = [event(notification_id=f"ntf-good-{rng.random()}"), event(**{name: value})]
    rng.shuffle(events)
    what = f"signed {name}={str(value)[:20]!r} beside a good event"
    return sendgrid_signed(signer, what, json.dumps(events).encode())


def sendgrid_bad_utf8(rng: random.Random, signer: Signer) -> Case:
    good = json.dumps([event()]).encode()
    at = rng.randrange(len(good))
    return sendgrid_signed(signer, "signed, not UTF-8", good[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])
                           + good[at:])


def sendgrid_odd_timestamp(rng: random.Random, signer: Signer) -> Case:
    now = int(time.time())
    timestamp = rng.choice(["1e20", "-5", "١٧٠٠٠٠٠٠٠٠", f" {now}", f"{now} ", "9" * 30, "0x10", "0", f"+{now}",
                            f"{now}.5", f"{now:_}", str(now - 10_000), str(now + 10_000)])
    return sendgrid_signed(signer, f"signed, timestamp {timestamp!r}", json.dumps([event()]).encode(), timestamp)


def sendgrid_wrong_content_type(rng: random.Random, signer: Signer) -> Case:
    content_type = rng.choice([c for c in CONTENT_TYPES if c != JSON] + [FORM])
    return sendgrid_signed(signer, f"signed, Content-Type {content_type}", json.dumps([event()]).encode(),
                           content_type=content_type)


def sendgrid_garbage_signature(rng: random.Random, signer: Signer) -> Case:
    body = json.dumps([event()]).encode()
    good = signer.sendgrid(body)
    der = base64.b64decode(good["X-Twilio-Email-Event-Webhook-Signature"])
    signature = rng.choice(["", "not base64!", base64.b64encode(rng.randbytes(rng.randint(0, 80))).decode(),
                            base64.b64encode(der + rng.randbytes(rng.randint(1, 4))).decode(),
                            base64.b64encode(der[:-1]).decode(), "é" * 8, "A" * 6000, "MAYCAQECAQE=", "MAYCAf8CAQE="])
    return Case("garbage SendGrid signature", SENDGRID_PATH, body,
                {**good, "X-Twilio-Email-Event-Webhook-Signature": signature})


def sendgrid_unsigned(rng: random.Random, signer: Signer) -> Case:
    headers = {"Content-Type": rng.choice([JSON, *CONTENT_TYPES[1:]])}
    if rng.random() < 0.5:
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(time.time()))
    return Case("unsigned events", SENDGRID_PATH, random_body(rng), headers)


def sendgrid_huge(rng: random.Random, signer: Signer) -> Case:
    body = json.dumps([event(reason="x" * rng.randint(2 * 1024 * 1024, 3 * 1024 * 1024))]).encode()
    return sendgrid_signed(signer, "signed, huge body", body)


def random_body(rng: random.Random) -> bytes:
    return rng.choice([lambda: rng.randbytes(rng.randint(0, 2000)), lambda: json.dumps([event()]).encode(),
                       lambda: form_body(good_params(rng)), lambda: quote(rng.randbytes(50)).encode(),
                       lambda: b"\x00" * rng.randint(1, 100)])()


GENERATORS = [twilio_odd_value, twilio_repeated_field, twilio_without_status, twilio_many_fields,
              twilio_wrong_content_type, twilio_multipart, twilio_bad_utf8, twilio_garbage_signature, twilio_unsigned,
              twilio_huge, sendgrid_shape, sendgrid_not_json, sendgrid_odd_field, sendgrid_bad_utf8,
              sendgrid_odd_timestamp, sendgrid_wrong_content_type, sendgrid_garbage_signature, sendgrid_unsigned,
              sendgrid_huge]
HUGE = {twilio_huge, sendgrid_huge}


def found_by_hand(signer: Signer) -> list[Case]:
    """The cases the issue names, each once."""
    rng = random.Random(0)
    return [Case("unsigned multipart", PATH, twilio_multipart(random.Random(1), signer).body,
                 {"Content-Type": "multipart/form-data; boundary=xyz"}),
            twilio_signed(signer, "signed ErrorCode of 5,000 digits",
                          good_params(rng) + [("ErrorCode", "9" * 5000)]),
            sendgrid_signed(signer, "signed timestamp 1e20", json.dumps([event(timestamp=1e20)]).encode()),
            sendgrid_signed(signer, "signed JSON string", b'"events"'),
            sendgrid_signed(signer, "signed list of numbers", b"[1, 2]"),
            sendgrid_huge(rng, signer), twilio_huge(rng, signer),
            sendgrid_wrong_content_type(rng, signer), twilio_bad_utf8(rng, signer), sendgrid_bad_utf8(rng, signer)]


def cases(signer: Signer, seed: int) -> list[Case]:
    rng = random.Random(seed)
    chosen = found_by_hand(signer)
    while len(chosen) < REQUESTS:
        generator = rng.choice(GENERATORS)
        if generator in HUGE and rng.random() < 0.8:
            continue  # a few megabytes each: some, not a sixth of the run
        chosen.append(generator(rng, signer))
    return chosen


async def send(session: aiohttp.ClientSession, base: str, case: Case, limit: asyncio.Semaphore) -> int:
    async with limit:
        # No Content-Type unless the case gives one: aiohttp would add application/octet-stream.
        async with session.post(base + case.path, data=case.body, headers=case.headers,
                                skip_auto_headers=["Content-Type"]) as response:
            await response.read()
            return response.status


def test_malformed_receipts_to_both_endpoints_get_a_4xx_and_record_nothing():
    seed = int(os.environ.get("FOREWARN_TEST_SEED") or random.randrange(2 ** 32))

    async def scenario():
        async with signed_receiver() as (signer, receiver, published):
            chosen = cases(signer, seed)
            limit = asyncio.Semaphore(8)
            async with aiohttp.ClientSession() as session:
                statuses = await asyncio.gather(*(send(session, receiver.url, case, limit) for case in chosen))
            return chosen, statuses, published

    chosen, statuses, published = asyncio.run(scenario())
    wrong = [f"{status}: {case.what}" for case, status in zip(chosen, statuses) if not 400 <= status < 500]
    assert len(chosen) == REQUESTS
    assert wrong == [], f"FOREWARN_TEST_SEED={seed}: {wrong[:20]}"
    assert published == {}, f"FOREWARN_TEST_SEED={seed}"
