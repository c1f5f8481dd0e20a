"""Delivery receipts: Twilio status callbacks and SendGrid's signed Event Webhook, onto ``deliveries``.

    POST /twilio/status    X-Twilio-Signature, checked with twilio's RequestValidator over the
                           public URL (FOREWARN_WEBHOOK_PUBLIC_URL + path and query as received)
    POST /sendgrid/events  ECDSA P-256 over timestamp + body (sendgrid's EventWebhook); a timestamp
                           more than FOREWARN_WEBHOOK_MAX_AGE seconds off is stale
    GET  /metrics          Prometheus

Forged, stale and replayed receipts get 403 and are counted
(``forewarn_webhook_rejected_total{provider,reason}``). A valid receipt goes to
``deliveries`` keyed by notification id; a failed SMS or a bounced email whose
notification names fallback channels also to ``fallbacks``; an unsubscribe
(Twilio 21610; SendGrid unsubscribe, spam report, dropped as unsubscribed) also
to ``optouts``. The answer is 2xx only once Kafka has the records, so the
provider retries what did not land.

Twilio's signature has no timestamp: a replay is caught only by its signature
having been seen, which this process remembers for twice the maximum age.
Several receivers do not share that memory; the records are keyed by
notification id, so a replay slipping through repeats a status, nothing more.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from streams.channels.courier import fallback_record, optout_record
from streams.channels.sms_twilio import KNOWN_CODES, STATUS_PATH, TwilioSmsChannel
from streams.core.directory import owner_partition
from streams.errors import ConfigError, ReceiptRefused
from streams.metrics import FALLBACKS, OPTOUTS, RECEIPTS, REJECTED
from streams.settings import Settings

log = logging.getLogger(__name__)

SENDGRID_PATH = "/sendgrid/events"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


TWILIO_STATUS = {"queued": "queued", "accepted": "queued", "scheduled": "queued", "sending": "queued",
                 "sent": "sent", "delivered": "delivered", "read": "delivered", "undelivered": "undelivered",
                 "failed": "failed", "canceled": "failed"}
# SendGrid events that say something about delivery; opens, clicks and deferrals do not.
SENDGRID_STATUS = {"processed": "sent", "delivered": "delivered", "bounce": "failed", "dropped": "failed"}
SENDGRID_OPTOUT_EVENTS = {"unsubscribe", "group_unsubscribe", "spamreport"}
FAILED = {"failed", "undelivered"}

# (topic, key, value, partition) -> produced and acknowledged
Publish = Callable[[str, bytes, bytes, "int | None"], Awaitable[None]]


class ReplayGuard:
    """Signatures seen in the last ``ttl`` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic, limit: int = 1_000_000):
        self.ttl, self.clock, self.limit = ttl, clock, limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen(self, signature: str) -> bool:
        now = self.clock()
        while self._seen and (next(iter(self._seen.values())) < now - self.ttl or len(self._seen) > self.limit):
            self._seen.popitem(last=False)
        return signature in self._seen

    def remember(self, signature: str) -> None:
        self._seen[signature] = self.clock()


class SendGridSignature:
    """sendgrid's ``EventWebhook`` with what it leaves out: malformed input, staleness."""

    def __init__(self, public_key: str, max_age: float, clock: Callable[[], float] = time.time):
        try:
            self._webhook = EventWebhook(public_key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key: {exc}") from None
        self.max_age, self.clock = max_age, clock

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> None:
        if not signature or not timestamp:
            raise ReceiptRefused("unsigned")
        try:
            valid = self._webhook.verify_signature(body.decode("utf-8"), signature, timestamp)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            valid = False  # not base64, not DER, not text: the library raises where it should say no
        if not valid:
            raise ReceiptRefused("forged")
        try:
            age = self.clock() - int(timestamp)
        except ValueError:
            raise ReceiptRefused("forged") from None
        if abs(age) > self.max_age:
            raise ReceiptRefused("stale")


def iso(epoch: float | None = None) -> str:
    return datetime.fromtimestamp(epoch if epoch is not None else time.time(), timezone.utc).isoformat()


class Receiver:
    """The aiohttp application and, when started without ``publish``, its Kafka producer."""

    def __init__(self, settings: Settings, publish: Publish | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.publish = publish
        self._producer: Any = None
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        self.replays = ReplayGuard(2 * settings.webhook_max_age)
        self.twilio = RequestValidator(settings.twilio_auth_token) if settings.twilio_auth_token else None
        self.sendgrid = (SendGridSignature(settings.sendgrid_webhook_public_key, settings.webhook_max_age, clock)
                         if settings.sendgrid_webhook_public_key else None)
        self.app = web.Application(client_max_size=8 * 1024 * 1024)
        self.app.router.add_post(STATUS_PATH, self.twilio_status)
        self.app.router.add_post(SENDGRID_PATH, self.sendgrid_events)
        self.app.router.add_get("/metrics", self.metrics)

    async def start(self, host: str | None = None, port: int | None = None) -> "Receiver":
        if self.publish is None:
            self.publish = await self._kafka()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or self.settings.webhook_host,
                           self.settings.webhook_port if port is None else port)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.url = f"http://{bound[0]}:{bound[1]}"
        log.info("webhook receiver on %s (Twilio: %s, SendGrid: %s)", self.url,
                 "on" if self.twilio else "off", "on" if self.sendgrid else "off")
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._producer is not None:
            await self._producer.stop()

    async def _kafka(self) -> Publish:
        from aiokafka import AIOKafkaProducer

        if not self.settings.bootstrap_servers:
            raise ConfigError("the webhook receiver needs KAFKA_BOOTSTRAP_SERVERS")
        self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers.split(","),
                                          acks="all", linger_ms=5, client_id="forewarn-webhooks")
        await self._producer.start()

        async def publish(topic: str, key: bytes, value: bytes, partition: int | None) -> None:
            await self._producer.send_and_wait(topic, value=value, key=key, partition=partition)

        return publish

    # -- producing ---------------------------------------------------------------------------------

    async def _emit(self, deliveries: list[dict[str, Any]], optouts: list[dict[str, Any]],
                    fallbacks: list[dict[str, Any]]) -> None:
        assert self.publish is not None
        topics, partitions = self.settings.topics, self.settings.partitions
        sends = [self.publish(topics.deliveries, d["notification_id"].encode(), orjson.dumps(d), None)
                 for d in deliveries]
        # Keyed and placed as the decide agent places a customer's events, so its owner gets them.
        sends += [self.publish(topic, r["customer_id"].encode(), orjson.dumps(r),
                               owner_partition(r["customer_id"], partitions))
                  for topic, records in ((topics.optouts, optouts), (topics.fallbacks, fallbacks)) for r in records]
        await asyncio.gather(*sends)

    def _refuse(self, provider: str, reason: str) -> web.Response:
        REJECTED.labels(provider, reason).inc()
        log.warning("%s receipt refused: %s", provider, reason)
        return web.Response(status=403, text=reason)

    # -- Twilio --------------------------------------------------------------------------------------

    def _public_url(self, request: web.Request) -> str:
        base = self.settings.webhook_public_url or f"{request.scheme}://{request.host}"
        return base.rstrip("/") + request.raw_path

    async def twilio_status(self, request: web.Request) -> web.Response:
        if self.twilio is None:
            return web.Response(status=404, text="Twilio receipts are not configured")
        form = await request.post()
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not self.twilio.validate(self._public_url(request), form, signature):
            return self._refuse("twilio", "forged" if signature else "unsigned")
        if self.replays.seen(signature):
            return self._refuse("twilio", "replayed")
        notification_id, status = request.query.get("n"), TWILIO_STATUS.get(str(form.get("MessageStatus", "")))
        if not notification_id or status is None:
            self.replays.remember(signature)
            return web.Response(status=204)  # signed, but not one of ours or not a status we record
        customer_id, rule = request.query.get("c", ""), request.query.get("r", "")
        fallback = [c for c in request.query.get("fb", "").split(",") if c]
        code = int(form["ErrorCode"]) if str(form.get("ErrorCode", "")).isdigit() else None
        error = f"Twilio {code}: {KNOWN_CODES.get(code, 'see twilio.com/docs/errors')}" if code else None
        deliveries = [{"notification_id": notification_id, "channel": "sms", "status": status, "at": iso(),
                       "provider": "twilio", "provider_message_id": str(form.get("MessageSid") or "") or None,
                       "error": error}]
        optouts, fallbacks = [], []
        if code in TwilioSmsChannel.optout_codes and customer_id:
            OPTOUTS.labels("sms", "receipt").inc()
            optouts.append(optout_record(customer_id, "sms", error or "unsubscribed", notification_id))
        if status in FAILED and fallback and customer_id:
            FALLBACKS.labels("sms", "receipt").inc()
            fallbacks.append(fallback_record(notification_id, customer_id, rule, "sms",
                                             f"Twilio receipt: {status}" + (f" ({error})" if error else ""), fallback))
        return await self._accept("twilio", signature, deliveries, optouts, fallbacks)

    async def _accept(self, provider: str, signature: str, deliveries: list[dict[str, Any]],
                      optouts: list[dict[str, Any]], fallbacks: list[dict[str, Any]]) -> web.Response:
        try:
            await self._emit(deliveries, optouts, fallbacks)
        except Exception as exc:  # noqa: BLE001  Kafka unavailable: let the provider send it again
            log.error("%s receipt not recorded: %s", provider, type(exc).__name__)
            return web.Response(status=503, text="try again")
        self.replays.remember(signature)  # only now: a retry of a receipt that did not land is welcome
        RECEIPTS.labels(provider).inc()
        return web.Response(status=200)

    # -- SendGrid ------------------------------------------------------------------------------------

    async def sendgrid_events(self, request: web.Request) -> web.Response:
        if self.sendgrid is None:
            return web.Response(status=404, text="SendGrid receipts are not configured")
        body = await request.read()
        signature = request.headers.get(SIGNATURE, "")
        try:
            self.sendgrid.verify(body, signature, request.headers.get(TIMESTAMP))
        except ReceiptRefused as refused:
            return self._refuse("sendgrid", refused.reason)
        if self.replays.seen(signature):
            return self._refuse("sendgrid", "replayed")
        try:
            events = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="not JSON")
        deliveries, optouts, fallbacks = [], [], []
        for event in events if isinstance(events, list) else []:
            self._sendgrid_event(event, deliveries, optouts, fallbacks)
        return await self._accept("sendgrid", signature, deliveries, optouts, fallbacks)

    @staticmethod
    def _sendgrid_event(event: Any, deliveries: list, optouts: list, fallbacks: list) -> None:
        if not isinstance(event, dict) or not event.get("notification_id"):
            return  # custom_args come back as top-level fields; without ours it is not our message
        notification_id, customer_id = str(event["notification_id"]), str(event.get("customer_id") or "")
        kind = str(event.get("event", ""))
        reason = str(event.get("reason") or kind)
        at = iso(event["timestamp"]) if isinstance(event.get("timestamp"), (int, float)) else iso()
        unsubscribed = kind in SENDGRID_OPTOUT_EVENTS or (
            kind == "dropped" and any(word in reason for word in ("Unsubscribed", "Spam Report")))
        if unsubscribed and customer_id:
            OPTOUTS.labels("email", "receipt").inc()
            optouts.append(optout_record(customer_id, "email", f"SendGrid {kind}: {reason}", notification_id))
        status = SENDGRID_STATUS.get(kind)
        if status is None:
            return
        message_id = str(event.get("sg_message_id") or "").split(".")[0] or None
        error = f"SendGrid {kind}: {reason}" if status in FAILED else None
        deliveries.append({"notification_id": notification_id, "channel": "email", "status": status, "at": at,
                           "provider": "sendgrid", "provider_message_id": message_id, "error": error})
        fallback = [c for c in str(event.get("fallback") or "").split(",") if c]
        if status in FAILED and fallback and customer_id:
            FALLBACKS.labels("email", "receipt").inc()
            fallbacks.append(fallback_record(notification_id, customer_id, str(event.get("rule") or ""), "email",
                                             error or kind, fallback))

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def run(settings: Settings) -> None:
    """Receive until SIGINT / SIGTERM."""
    receiver = await Receiver(settings).start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await receiver.stop()


def serve(settings: Settings) -> None:
    """``forewarn webhooks``: the receiver on FOREWARN_WEBHOOK_HOST:FOREWARN_WEBHOOK_PORT."""
    if not (settings.twilio_auth_token or settings.sendgrid_webhook_public_key):
        raise ConfigError("nothing to receive: set TWILIO_AUTH_TOKEN and/or SENDGRID_WEBHOOK_PUBLIC_KEY")
    asyncio.run(run(settings))
