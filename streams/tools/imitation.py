"""A provider imitation: Twilio's Messages API and SendGrid's Mail Send API on one local server.

For tests, the demo and benchmarks, never production. The real SDKs reach it
through their own hooks (``TwilioTransport(base_url=...)``,
``SendGridAPIClient(host=...)``); it listens on 127.0.0.1 only.

It answers as the providers do (Twilio: form body, Basic auth, ``SM…`` sids,
``queued``, error JSON with ``code`` 21211 / 21610 / 21614 / 20429 ...; SendGrid:
202 with X-Message-Id, 429 with X-RateLimit-Reset, 400 / 401 / 403), keeps
every message it accepted (``accepted``), enforces a rate per account, can be
told to fail (``outage``, ``hang``, ``throttle``, ``reject``, ``undeliverable``,
``bounce``), and posts status callbacks signed as the real ones are: Twilio's
X-Twilio-Signature by ``RequestValidator``'s algorithm, SendGrid's Event
Webhook with an ECDSA P-256 key generated here (``public_key``).

Also: GET on the Twilio message list (filtered by To) and a small imitation of
SendGrid's Email Activity API (``GET /v3/messages?query=unique_args['notification_id']="…"``),
which is what the dispatcher asks when an outcome is unknown. Control from
another process: ``/_imitation/stats``, ``/_imitation/accepted``,
``/_imitation/public-key`` and ``POST /_imitation/fault``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shlex
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from streams.core.segments import count_segments

TWILIO = "twilio"
SENDGRID = "sendgrid"
API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ACTIVITY_QUERY = re.compile(r"""unique_args\['(\w+)'\]\s*=\s*"((?:[^"\\]|\\.)*)\"""")
TWILIO_ERRORS = {
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    21211: (400, "The 'To' number is not a valid phone number."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21612: (400, "The 'To' phone number is not currently reachable via SMS."),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
}


@dataclass(frozen=True)
class Accepted:
    """One message the imitation took: what a test counts."""

    provider: str
    notification_id: str | None
    to: str
    body: str
    at: float  # time.time() when accepted
    sid: str
    segments: int = 1
    subject: str | None = None
    headers: dict[str, str] | None = None  # an email's own headers (List-Unsubscribe ...)


class _Bucket:
    """The provider's side of the rate limit: a plain token bucket that answers "wait this long"."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.capacity = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self, cost: float) -> float:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= min(cost, self.capacity):
            self.tokens -= cost
            return 0.0
        return (min(cost, self.capacity) - self.tokens) / self.rate


def twilio_date(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")


class Imitation:
    """The server. ``await start()``, use ``url`` and ``env()``, ``await stop()``."""

    def __init__(self, *, sms_rate: float | None = None, email_rate: float | None = None,
                 burst: float | None = None, callback_delay: float = 0.05, post_callbacks: bool = True,
                 event_webhook_url: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 twilio_from: str = "+3197010000000", sendgrid_from: str = "noreply@forewarn.example"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the imitation listens on the loopback interface only")
        self.host, self.port = host, port
        self.account_sid = "AC" + uuid.uuid4().hex
        self.auth_token = secrets.token_hex(16)
        self.sendgrid_api_key = "SG." + secrets.token_urlsafe(16) + "." + secrets.token_urlsafe(32)
        self.twilio_from, self.sendgrid_from = twilio_from, sendgrid_from
        self.callback_delay = callback_delay
        self.post_callbacks = post_callbacks  # False: read the notification id from StatusCallback, post nothing
        self.event_webhook_url = event_webhook_url
        self.validator = RequestValidator(self.auth_token)
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = base64.b64encode(self._signing_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
        # A quarter second of burst: enough to absorb this process's own scheduling hiccups (a provider
        # would see the requests arrive evenly), little enough that twice the rate is refused at once.
        self._buckets = {provider: _Bucket(rate, burst if burst is not None else max(5.0, rate * 0.25))
                         for provider, rate in ((TWILIO, sms_rate), (SENDGRID, email_rate)) if rate}
        self.accepted: list[Accepted] = []
        self.stats: dict[str, Counter[str]] = {TWILIO: Counter(), SENDGRID: Counter()}
        self._twilio_messages: list[dict[str, Any]] = []
        self._emails: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self.heal()

    # -- failures on demand --------------------------------------------------------------------

    def heal(self) -> None:
        """Forget every fault that was asked for."""
        self._outage: dict[str, tuple[float, int, float]] = {}  # provider -> (until, status, accept ratio)
        self._hang: dict[str, tuple[int, bool, float]] = {}  # provider -> (count, accept, hold seconds)
        self._throttle: dict[str, tuple[int, float]] = {}  # provider -> (count, retry_after)
        self._rejected: dict[str, int] = {}  # to -> Twilio code, or HTTP status for an address
        self._undeliverable: dict[str, tuple[str, int]] = {}  # to -> (final status, ErrorCode)
        self._bounces: dict[str, str] = {}  # address -> SendGrid event (bounce, dropped, unsubscribe ...)

    @staticmethod
    def _providers(provider: str | None) -> tuple[str, ...]:
        return (provider,) if provider else (TWILIO, SENDGRID)

    def outage(self, seconds: float, *, provider: str | None = None, status: int = 503, accept: float = 0.0) -> None:
        """Answer ``status`` to every request for ``seconds``; ``accept``: share of sends taken all the same."""
        for name in self._providers(provider):
            self._outage[name] = (time.monotonic() + seconds, status, accept)

    def hang(self, count: int, *, provider: str | None = None, accept: bool = True, hold: float = 60.0) -> None:
        """The next ``count`` sends get no answer for ``hold`` s (after being taken, when ``accept``)."""
        for name in self._providers(provider):
            self._hang[name] = (count, accept, hold)

    def throttle(self, count: int, *, provider: str | None = None, retry_after: float = 1.0) -> None:
        """The next ``count`` requests get 429, whatever the rate."""
        for name in self._providers(provider):
            self._throttle[name] = (count, retry_after)

    def reject(self, to: str, code: int = 21211) -> None:
        """Refuse every send to ``to``: a Twilio code (21211, 21610, 21614 ...) or, for an address, 400."""
        self._rejected[to] = code

    def undeliverable(self, to: str, status: str = "undelivered", code: int = 30003) -> None:
        """Take SMS to ``to`` but report ``status`` (undelivered / failed) with ``code`` in the callback."""
        self._undeliverable[to] = (status, code)

    def bounce(self, to: str, event: str = "bounce") -> None:
        """Take email to ``to`` but report ``event`` (bounce, dropped, unsubscribe, spamreport) afterwards."""
        self._bounces[to] = event

    # -- what tests look at ----------------------------------------------------------------------

    def accepted_by(self, provider: str) -> list[Accepted]:
        return [a for a in self.accepted if a.provider == provider]

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for provider in (TWILIO, SENDGRID):
            times = [a.at for a in self.accepted if a.provider == provider]
            result[provider] = {**self.stats[provider], "accepted": len(times),
                                "first_at": min(times) if times else None, "last_at": max(times) if times else None}
        return result

    def env(self) -> dict[str, str]:
        """The environment that points a worker's channels at this imitation."""
        return {"TWILIO_ACCOUNT_SID": self.account_sid, "TWILIO_AUTH_TOKEN": self.auth_token,
                "TWILIO_FROM": self.twilio_from, "SENDGRID_API_KEY": self.sendgrid_api_key,
                "SENDGRID_FROM": self.sendgrid_from, "SENDGRID_WEBHOOK_PUBLIC_KEY": self.public_key,
                "FOREWARN_TWILIO_BASE_URL": self.url, "FOREWARN_SENDGRID_BASE_URL": self.url}

    # -- life cycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> "Imitation":
        app = web.Application(client_max_size=4 * 1024 * 1024)
        messages = "/2010-04-01/Accounts/{sid}/Messages"
        app.router.add_post(messages + ".json", self._twilio_create)
        app.router.add_get(messages + ".json", self._twilio_list)
        app.router.add_get(messages + "/{message_sid}.json", self._twilio_fetch)
        app.router.add_post("/v3/mail/send", self._sendgrid_send)
        app.router.add_get("/v3/messages", self._sendgrid_activity)
        app.router.add_get("/_imitation/stats", self._control_stats)
        app.router.add_get("/_imitation/accepted", self._control_accepted)
        app.router.add_get("/_imitation/public-key", self._control_public_key)
        app.router.add_post("/_imitation/fault", self._control_fault)
        self._closing = asyncio.Event()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  port 0: the one we got
        return self

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> "Imitation":
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- faults shared by both APIs --------------------------------------------------------------

    def _fault(self, provider: str, *, sending: bool) -> tuple[int, float, float] | None:
        """(status, accept ratio, retry_after) when an outage or a 429 burst answers this request."""
        outage = self._outage.get(provider)
        if outage and time.monotonic() < outage[0]:
            return outage[1], outage[2] if sending else 0.0, 0.0
        burst = self._throttle.get(provider)
        if burst and burst[0] > 0:
            self._throttle[provider] = (burst[0] - 1, burst[1])
            return 429, 0.0, burst[1]
        return None

    def _take_hang(self, provider: str) -> tuple[bool, float] | None:
        hang = self._hang.get(provider)
        if hang and hang[0] > 0:
            self._hang[provider] = (hang[0] - 1, hang[1], hang[2])
            return hang[1], hang[2]
        return None

    async def _hold(self, seconds: float) -> None:
        assert self._closing is not None
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _rate(self, provider: str, cost: float) -> float:
        bucket = self._buckets.get(provider)
        return bucket.take(cost) if bucket else 0.0

    # -- Twilio --------------------------------------------------------------------------------------

    def _twilio_error(self, code: int, message: str | None = None, headers: dict[str, str] | None = None):
        status, default = TWILIO_ERRORS.get(code, (400, "Bad request"))
        return web.json_response({"code": code, "message": message or default, "more_info":
                                  f"https://www.twilio.com/docs/errors/{code}", "status": status},
                                 status=status, headers=headers)

    def _twilio_authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.match_info["sid"] == self.account_sid and secrets.compare_digest(auth, expected)

    def _twilio_fault_response(self, fault: tuple[int, float, float]):
        status, _, retry_after = fault
        if status == 429:
            self.stats[TWILIO]["throttled"] += 1
            return self._twilio_error(20429, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})
        self.stats[TWILIO]["failed"] += 1
        return web.json_response({"code": 20500, "message": "Service Unavailable", "status": status}, status=status)

    async def _twilio_create(self, request: web.Request) -> web.StreamResponse:
        if not self._twilio_authorised(request):
            return self._twilio_error(20003)
        form = await request.post()
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        callback = form.get("StatusCallback")
        fault = self._fault(TWILIO, sending=True)
        if fault and fault[0] != 429:
            if fault[1] and random.random() < fault[1]:
                self._twilio_accept(to, body, sender, service, callback)  # taken, yet the answer is an error
            return self._twilio_fault_response(fault)
        if fault:
            return self._twilio_fault_response(fault)
        hang = self._take_hang(TWILIO)
        if hang:
            self.stats[TWILIO]["hung"] += 1
            if hang[0]:
                self._twilio_accept(to, body, sender, service, callback)
            await self._hold(hang[1])
            return web.json_response({"code": 20500, "message": "late", "status": 500}, status=500)
        segments = count_segments(body).segments
        wait = self._rate(TWILIO, segments)
        if wait:
            self.stats[TWILIO]["throttled"] += 1
            return self._twilio_error(20429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
        if not E164.match(to):
            return self._reject_twilio(21211)
        if not (sender or service):
            return self._reject_twilio(21603)
        if not body:
            return self._reject_twilio(21602)
        if len(body) > 1600:
            return self._reject_twilio(21617)
        if to in self._rejected:
            return self._reject_twilio(self._rejected[to])
        message = self._twilio_accept(to, body, sender, service, callback)
        return web.json_response(message, status=201)

    def _reject_twilio(self, code: int):
        self.stats[TWILIO]["rejected"] += 1
        return self._twilio_error(code)

    def _twilio_accept(self, to: str, body: str, sender: Any, service: Any, callback: Any) -> dict[str, Any]:
        now = time.time()
        sid = "SM" + uuid.uuid4().hex
        notification_id = None
        if callback:
            notification_id = (parse_qs(urlsplit(str(callback)).query).get("n") or [None])[0]
        segments = count_segments(body).segments
        message = {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": body,
            "date_created": twilio_date(now), "date_sent": None, "date_updated": twilio_date(now),
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": str(sender) if sender else None,
            "messaging_service_sid": str(service) if service else None,
            "num_media": "0", "num_segments": str(segments), "price": None, "price_unit": "USD", "sid": sid,
            "status": "accepted" if service and not sender else "queued",
            "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
            "to": to, "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        self._twilio_messages.append(message)
        self.accepted.append(Accepted(TWILIO, notification_id, to, body, now, sid, segments))
        self.stats[TWILIO]["taken"] += 1
        if callback and self.post_callbacks:
            self._spawn(self._twilio_callbacks(str(callback), message))
        return message

    async def _twilio_callbacks(self, url: str, message: dict[str, Any]) -> None:
        final, code = self._undeliverable.get(message["to"], ("delivered", None))
        for status in ("sent", final):
            await asyncio.sleep(self.callback_delay)
            params = {"AccountSid": self.account_sid, "ApiVersion": API_VERSION, "MessageSid": message["sid"],
                      "MessageStatus": status, "SmsSid": message["sid"], "SmsStatus": status, "To": message["to"]}
            if message["from"]:
                params["From"] = message["from"]
            if message["messaging_service_sid"]:
                params["MessagingServiceSid"] = message["messaging_service_sid"]
            if code and status == final:
                params["ErrorCode"] = str(code)
            message["status"] = status
            await self._post_callback(TWILIO, url, data=params,
                                      headers={"X-Twilio-Signature": self.validator.compute_signature(url, params)})

    async def reply(self, url: str, phone: str, body: str, *, signed: bool = True) -> tuple[int, str]:
        """A customer texts ``body`` to our number: Twilio's incoming-message webhook, signed, to ``url``."""
        assert self._session is not None
        sid = "SM" + uuid.uuid4().hex
        params = {"AccountSid": self.account_sid, "ApiVersion": API_VERSION, "Body": body, "From": phone,
                  "To": self.twilio_from, "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "NumMedia": "0",
                  "NumSegments": "1", "SmsStatus": "received", "FromCountry": "NL", "ToCountry": "NL"}
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, params) if signed else "forged"}
        async with self._session.post(url, data=params, headers=headers) as response:
            return response.status, await response.text()

    async def _post_callback(self, provider: str, url: str, **kwargs: Any) -> None:
        assert self._session is not None
        try:
            async with self._session.post(url, **kwargs) as response:
                self.stats[provider]["callbacks_ok" if response.status < 300 else "callbacks_refused"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.stats[provider]["callbacks_failed"] += 1

    async def _twilio_list(self, request: web.Request) -> web.StreamResponse:
        if not self._twilio_authorised(request):
            return self._twilio_error(20003)
        fault = self._fault(TWILIO, sending=False)
        if fault:
            return self._twilio_fault_response(fault)
        to = request.query.get("To")
        size = int(request.query.get("PageSize", "50"))
        found = [m for m in reversed(self._twilio_messages) if to is None or m["to"] == to][:size]
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json?PageSize={size}&Page=0"
        return web.json_response({"messages": found, "end": max(0, len(found) - 1), "first_page_uri": uri,
                                  "next_page_uri": None, "page": 0, "page_size": size, "previous_page_uri": None,
                                  "start": 0, "uri": uri})

    async def _twilio_fetch(self, request: web.Request) -> web.StreamResponse:
        if not self._twilio_authorised(request):
            return self._twilio_error(20003)
        for message in self._twilio_messages:
            if message["sid"] == request.match_info["message_sid"]:
                return web.json_response(message)
        return web.json_response({"code": 20404, "message": "The requested resource was not found",
                                  "status": 404}, status=404)

    # -- SendGrid --------------------------------------------------------------------------------------

    @staticmethod
    def _sendgrid_error(status: int, message: str, field: str | None = None,
                        headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"errors": [{"message": message, "field": field, "help": None}]},
                                 status=status, headers=headers)

    def _sendgrid_authorised(self, request: web.Request) -> bool:
        return secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self.sendgrid_api_key}")

    def _sendgrid_fault_response(self, fault: tuple[int, float, float]) -> web.Response:
        status, _, retry_after = fault
        if status == 429:
            return self._sendgrid_throttled(retry_after)
        self.stats[SENDGRID]["failed"] += 1
        return self._sendgrid_error(status, "Service Unavailable")

    def _sendgrid_throttled(self, wait: float) -> web.Response:
        self.stats[SENDGRID]["throttled"] += 1
        reset = math.ceil(time.time() + wait)  # an epoch second, as SendGrid sends it
        return self._sendgrid_error(429, "too many requests", headers={
            "X-RateLimit-Limit": str(int(self._buckets[SENDGRID].rate) if SENDGRID in self._buckets else 0),
            "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})

    async def _sendgrid_send(self, request: web.Request) -> web.StreamResponse:
        if not self._sendgrid_authorised(request):
            return self._sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked")
        raw = await request.read()
        fault = self._fault(SENDGRID, sending=True)
        if fault and fault[0] != 429:
            if fault[1] and random.random() < fault[1]:
                self._sendgrid_accept_raw(raw)
            return self._sendgrid_fault_response(fault)
        if fault:
            return self._sendgrid_fault_response(fault)
        hang = self._take_hang(SENDGRID)
        if hang:
            self.stats[SENDGRID]["hung"] += 1
            if hang[0]:
                self._sendgrid_accept_raw(raw)
            await self._hold(hang[1])
            return self._sendgrid_error(500, "late")
        wait = self._rate(SENDGRID, 1.0)
        if wait:
            return self._sendgrid_throttled(wait)
        problem = self._sendgrid_problem(raw)
        if problem:
            self.stats[SENDGRID]["rejected"] += 1
            return self._sendgrid_error(*problem)
        message_id = self._sendgrid_accept_raw(raw)
        return web.Response(status=202, headers={"X-Message-Id": message_id})

    def _sendgrid_problem(self, raw: bytes) -> tuple[int, str, str | None] | None:
        try:
            mail = json.loads(raw)
            recipients = [r["email"] for p in mail["personalizations"] for r in p["to"]]
        except (ValueError, KeyError, TypeError):
            return 400, "Bad Request", None
        if not recipients:
            return 400, "The personalizations field is required and must have at least one personalization.", \
                "personalizations"
        if (mail.get("from") or {}).get("email") != self.sendgrid_from:
            return 403, ("The from address does not match a verified Sender Identity. Mail cannot be sent "
                         "until this error is resolved."), "from"
        for index, address in enumerate(recipients):
            if not EMAIL.match(address) or address in self._rejected:
                return 400, "Does not contain a valid address.", f"personalizations.0.to.{index}.email"
        if not mail.get("subject"):
            return 400, "The subject is required.", "subject"
        if not mail.get("content"):
            return 400, "Unless a valid template_id is provided, the content parameter is required.", "content"
        return None

    def _sendgrid_accept_raw(self, raw: bytes) -> str:
        mail = json.loads(raw)
        message_id = secrets.token_urlsafe(16)[:22]
        now = time.time()
        text = next((c["value"] for c in mail.get("content", []) if c.get("type") == "text/plain"), "")
        for personalization in mail["personalizations"]:
            args = {**(mail.get("custom_args") or {}), **(personalization.get("custom_args") or {})}
            for recipient in personalization["to"]:
                email = {"msg_id": message_id, "to_email": recipient["email"], "from_email": mail["from"]["email"],
                         "subject": mail.get("subject"), "custom_args": args, "at": now}
                self._emails.append(email)
                self.accepted.append(Accepted(SENDGRID, args.get("notification_id"), recipient["email"], text, now,
                                              message_id, 1, mail.get("subject"), mail.get("headers")))
                self.stats[SENDGRID]["taken"] += 1
                if self.event_webhook_url and self.post_callbacks:
                    self._spawn(self._sendgrid_events(email))
        return message_id

    async def _sendgrid_events(self, email: dict[str, Any]) -> None:
        await asyncio.sleep(self.callback_delay)
        final = self._bounces.get(email["to_email"], "delivered")
        events = []
        for kind in ("processed", final):
            event = {"email": email["to_email"], "timestamp": int(time.time()), "event": kind,
                     "sg_event_id": secrets.token_urlsafe(16), "sg_message_id": f"{email['msg_id']}.recvd-0-0",
                     "smtp-id": f"<{email['msg_id']}@forewarn.example>", **email["custom_args"]}
            if kind == "dropped":
                event["reason"] = "Unsubscribed Address"
            elif kind == "bounce":
                event.update(reason="550 5.1.1 The email account that you tried to reach does not exist",
                             type="bounce", status="5.1.1")
            events.append(event)
        await self.post_events(events)

    def sign_events(self, payload: str, timestamp: str | None = None) -> dict[str, str]:
        """The headers SendGrid puts on an Event Webhook POST of ``payload``."""
        timestamp = timestamp or str(int(time.time()))
        signature = self._signing_key.sign((timestamp + payload).encode(), ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp, "Content-Type": "application/json"}

    async def post_events(self, events: list[dict[str, Any]]) -> None:
        if not self.event_webhook_url:
            return
        payload = json.dumps(events, separators=(",", ":"))
        await self._post_callback(SENDGRID, self.event_webhook_url, data=payload.encode(),
                                  headers=self.sign_events(payload))

    async def _sendgrid_activity(self, request: web.Request) -> web.StreamResponse:
        if not self._sendgrid_authorised(request):
            return self._sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked")
        fault = self._fault(SENDGRID, sending=False)
        if fault:
            return self._sendgrid_fault_response(fault)
        wanted = {key: value.replace('\\"', '"').replace("\\\\", "\\")
                  for key, value in ACTIVITY_QUERY.findall(request.query.get("query", ""))}
        limit = int(request.query.get("limit", "10"))
        found = [e for e in reversed(self._emails)
                 if all(e["custom_args"].get(key) == value for key, value in wanted.items())][:limit]
        return web.json_response({"messages": [
            {"from_email": e["from_email"], "msg_id": e["msg_id"], "subject": e["subject"], "to_email": e["to_email"],
             "status": "delivered", "opens_count": 0, "clicks_count": 0,
             "last_event_time": datetime.fromtimestamp(e["at"], timezone.utc).isoformat()} for e in found]})

    # -- control, for another process -----------------------------------------------------------

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.summary())

    async def _control_accepted(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(a) for a in self.accepted])

    async def _control_public_key(self, request: web.Request) -> web.Response:
        return web.Response(text=self.public_key)

    async def _control_fault(self, request: web.Request) -> web.Response:
        """``{"kind": "outage"|"hang"|"throttle"|"reject"|"undeliverable"|"bounce"|"heal", ...arguments}``."""
        order = await request.json()
        kind = order.pop("kind")
        actions = {"outage": self.outage, "hang": self.hang, "throttle": self.throttle, "reject": self.reject,
                   "undeliverable": self.undeliverable, "bounce": self.bounce, "heal": self.heal}
        if kind not in actions:
            return web.json_response({"error": f"unknown fault {kind!r}"}, status=400)
        actions[kind](**order)
        return web.json_response({"ok": True})


class ImitationThread:
    """The imitation on its own event loop in a background thread: for synchronous callers (tests, demo)."""

    def __init__(self, **options: Any):
        self.imitation = Imitation(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="imitation", daemon=True)

    def __enter__(self) -> Imitation:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.imitation.start(), self._loop).result(10)
        return self.imitation

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.imitation.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def serve(host: str = "127.0.0.1", port: int = 0, as_json: bool = False, **options: Any) -> None:
    """Run the imitation until interrupted; prints the worker's environment as shell exports (or one JSON line)."""

    async def run() -> None:
        imitation = await Imitation(host=host, port=port, **options).start()
        print(json.dumps({"url": imitation.url, "env": imitation.env()}) if as_json else exports(imitation),
              flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await imitation.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def exports(imitation: Imitation) -> str:
    """``export NAME=value`` lines a shell can eval, after a comment saying where the imitation listens."""
    lines = [f"# the Twilio and SendGrid imitation on {imitation.url}; in another shell: eval \"$(...)\" or paste"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(imitation.env().items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Twilio / SendGrid imitation on 127.0.0.1, for tests and benchmarks")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sms-rate", type=float, default=None, help="segments per second (default: no limit)")
    parser.add_argument("--email-rate", type=float, default=None, help="emails per second (default: no limit)")
    parser.add_argument("--burst", type=float, default=None)
    parser.add_argument("--event-webhook-url", default=None, help="where to post SendGrid events")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of shell exports")
    args = parser.parse_args(argv)
    serve(port=args.port, as_json=args.json, sms_rate=args.sms_rate, email_rate=args.email_rate, burst=args.burst,
          event_webhook_url=args.event_webhook_url)


if __name__ == "__main__":
    main()
