"""Delivery receipts: Twilio status callbacks and SendGrid's signed Event Webhook, onto ``deliveries``.

    POST /twilio/status    X-Twilio-Signature, checked with twilio's RequestValidator over the
                           public URL (FOREWARN_WEBHOOK_PUBLIC_URL + path and query as received);
                           without one, over the loopback address it listens on; never the Host header
    POST /sendgrid/events  ECDSA P-256 over timestamp + body (sendgrid's EventWebhook); a timestamp
                           more than FOREWARN_WEBHOOK_MAX_AGE seconds off is stale
    POST /twilio/inbound   an SMS to our number: STOP, START and kin (streams.channels.optouts)
    GET|POST /unsubscribe/<token>  the one-click unsubscribe page (streams.channels.optouts)
    GET  /metrics          Prometheus

Forged, stale and replayed receipts get 403, malformed ones 400 (413 too large,
415 wrong content type); each is counted (``forewarn_webhook_rejected_total{provider,reason}``)
and none becomes a record. A valid receipt goes to ``deliveries`` keyed by
notification id; a failed SMS or a bounced email whose notification names
fallback channels also to ``fallbacks``; an unsubscribe (Twilio 21610; SendGrid
unsubscribe, spam report, dropped as unsubscribed) also to ``consent``. The
answer is 2xx only once Kafka has the records, so the provider retries what did
not land.

A replay is known by what was signed (a digest of the URL and form, or of the
timestamp and body), never by the signature's text: ECDSA signatures have
other valid spellings. The digest is claimed before the records are produced,
so copies arriving together count once, and released if they do not land.
Twilio's signature has no timestamp: its replays are caught only while this
process remembers them (twice the maximum age). Several receivers do not share
that memory; the records are keyed by notification id, so a replay slipping
through repeats a status, nothing more.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from multidict import MultiDict
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from streams.channels.courier import fallback_record, optout_record
from streams.channels.optouts import (INBOUND_PATH, TWIML_EMPTY, UNSUBSCRIBE_PATH, UnsubscribePage, describe_change,
                                      keyword_change, link_change, utc_now)
from streams.channels.sms_twilio import KNOWN_CODES, STATUS_PATH, TwilioSmsChannel
from streams.core.directory import owner_partition
from streams.core.unsubscribe import Ticket, links_for
from streams.errors import ConfigError, ReceiptMalformed, ReceiptRefused, UnsubscribeRefused
from streams.stopping import until_stopped
from streams.metrics import FALLBACKS, OPTOUTS, RECEIPTS, REJECTED
from streams.settings import Settings

log = logging.getLogger(__name__)

SENDGRID_PATH = "/sendgrid/events"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"
FORM, JSON = "application/x-www-form-urlencoded", "application/json"

# A status callback is a few hundred bytes; SendGrid posts its events in batches of up to 768 KB.
TWILIO_MAX_BODY, SENDGRID_MAX_BODY = 64 * 1024, 2 * 1024 * 1024
MAX_FORM_FIELDS = 100  # Twilio sends about twenty
# Shapes of what Twilio sends; anything else is not a status callback.
STATUS_WORD = re.compile(r"[a-z_-]{1,32}")
ERROR_CODE = re.compile(r"[0-9]{1,6}")
MESSAGE_SID = re.compile(r"[A-Za-z0-9]{1,64}")
UNIX_SECONDS = re.compile(r"[0-9]{1,12}")  # int() would also take " 1", "1_0" and other scripts' digits

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
    """Digests of signed receipts seen in the last ``ttl`` seconds, at most ``limit`` of them."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic, limit: int = 200_000):
        self.ttl, self.clock, self.limit = ttl, clock, limit
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # in the order claimed, so oldest first
        self._full_since: float | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, digest: bytes) -> bool:
        """True the first time ``digest`` comes within ``ttl``: the caller records it, or ``release``s it."""
        now = self.clock()
        while self._seen and next(iter(self._seen.values())) <= now - self.ttl:
            self._seen.popitem(last=False)
        if digest in self._seen:
            return False
        self._seen[digest] = now
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
            self._warn_full(now)
        return True

    def release(self, digest: bytes) -> None:
        self._seen.pop(digest, None)

    def _warn_full(self, now: float) -> None:
        # Forgetting a digest before its time lets that receipt be replayed: worth an operator's look.
        if self._full_since is None or now - self._full_since > self.ttl:
            self._full_since = now
            log.warning("replay memory full (%d receipts in %.0f s): forgetting the oldest early",
                        self.limit, self.ttl)


def signed_digest(provider: str, signed: bytes) -> bytes:
    return hashlib.sha256(provider.encode() + b"\0" + signed).digest()


def require_strict_der(signature: str) -> None:
    """A signature is exactly base64 of DER: any other spelling of it is a forgery."""
    try:
        canonical = base64.b64encode(encode_dss_signature(*decode_dss_signature(
            base64.b64decode(signature, validate=True)))).decode()
    except ValueError:  # binascii.Error and asn1 parse errors are ValueErrors; so is non-ASCII text
        raise ReceiptRefused("forged") from None
    if canonical != signature:
        raise ReceiptRefused("forged")


class SendGridSignature:
    """sendgrid's ``EventWebhook`` with what it leaves out: strict decoding, staleness, the signed bytes."""

    def __init__(self, public_key: str, max_age: float, clock: Callable[[], float] = time.time):
        try:
            self._webhook = EventWebhook(public_key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key: {exc}") from None
        self.max_age, self.clock = max_age, clock

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> bytes:
        """What was signed (timestamp + body), or ReceiptRefused."""
        if not signature or not timestamp:
            raise ReceiptRefused("unsigned")
        if not UNIX_SECONDS.fullmatch(timestamp):
            raise ReceiptRefused("forged")
        require_strict_der(signature)
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ReceiptMalformed("body is not UTF-8") from None
        if not self._webhook.verify_signature(payload, signature, timestamp):
            raise ReceiptRefused("forged")
        if abs(self.clock() - int(timestamp)) > self.max_age:
            raise ReceiptRefused("stale")
        return timestamp.encode() + body


Text = Annotated[str, msgspec.Meta(max_length=2000)]


class SendGridEvent(msgspec.Struct):
    """The fields of one of our events (custom_args come back as top-level fields, all strings)."""

    notification_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    event: Text = ""
    customer_id: Text | None = None
    rule: Text | None = None
    fallback: Text | None = None
    reason: str | None = None  # SendGrid's words (an SMTP reply for a bounce): any length, cut when recorded
    sg_message_id: Text | None = None
    timestamp: Annotated[float, msgspec.Meta(ge=0, lt=2 ** 34)] | None = None  # unix seconds, before 2514


def sendgrid_events(body: bytes) -> list[SendGridEvent]:
    """Our events in a batch; a batch that is not a JSON list of objects, or one of ours odd, is malformed."""
    try:
        events = orjson.loads(body)  # not msgspec: it recurses into deep nesting until RecursionError
    except orjson.JSONDecodeError:
        raise ReceiptMalformed("not JSON") from None
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise ReceiptMalformed("not a list of events")
    try:
        return [msgspec.convert(event, SendGridEvent) for event in events if event.get("notification_id") is not None]
    except msgspec.ValidationError as exc:
        raise ReceiptMalformed(f"an event of ours is odd: {exc}") from None


def parse_form(body: bytes) -> MultiDict[str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict",
                          max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:  # not UTF-8, before or after percent-decoding; too many fields
        raise ReceiptMalformed(f"not a form: {type(exc).__name__}") from None
    return MultiDict(pairs)


def twilio_signed_text(url: str, form: MultiDict[str]) -> str:
    """What X-Twilio-Signature covers, strung together as RequestValidator.compute_signature does.

    Forms that string together the same (a field twice, "ab"="c" and "a"="bc") carry the same
    signature, so they are one receipt.
    """
    return url + "".join(name + value for name in sorted(set(form)) for value in sorted(set(form.getall(name))))


def _single(form: MultiDict[str], name: str) -> str:
    values = form.getall(name, [])
    if len(values) > 1:
        raise ReceiptMalformed(f"{name} twice")
    return values[0] if values else ""


@dataclass(frozen=True)
class TwilioStatus:
    """The fields of a status callback the receiver reads, each as Twilio writes it."""

    status: str
    code: int | None
    sid: str | None

    @classmethod
    def of(cls, form: MultiDict[str]) -> "TwilioStatus":
        status, code, sid = (_single(form, name) for name in ("MessageStatus", "ErrorCode", "MessageSid"))
        for name, value, shape in (("MessageStatus", status, STATUS_WORD), ("ErrorCode", code, ERROR_CODE),
                                   ("MessageSid", sid, MESSAGE_SID)):
            if (value or name == "MessageStatus") and not shape.fullmatch(value):
                raise ReceiptMalformed(f"{name} is not as Twilio writes it")
        return cls(status, int(code) if code else None, sid or None)


@dataclass
class Records:
    """What one receipt puts on Kafka."""

    deliveries: list[dict[str, Any]] = field(default_factory=list)
    optouts: list[dict[str, Any]] = field(default_factory=list)  # consent records, keyed by customer
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    by_phone: list[dict[str, Any]] = field(default_factory=list)  # consent records for a number: every partition


def twilio_records(query: Any, received: TwilioStatus) -> Records | None:
    """None when signed but not ours (no notification id) or not a status we record."""
    notification_id, status = query.get("n"), TWILIO_STATUS.get(received.status)
    if not notification_id or status is None:
        return None
    customer_id, rule = query.get("c", ""), query.get("r", "")
    fallback = [c for c in query.get("fb", "").split(",") if c]
    code = received.code
    error = f"Twilio {code}: {KNOWN_CODES.get(code, 'see twilio.com/docs/errors')}" if code else None
    records = Records([{"notification_id": notification_id, "channel": "sms", "status": status, "at": iso(),
                        "provider": "twilio", "provider_message_id": received.sid, "error": error}])
    if code in TwilioSmsChannel.optout_codes and customer_id:
        records.optouts.append(optout_record(customer_id, "sms", error or "unsubscribed", notification_id))
    if status in FAILED and fallback and customer_id:
        records.fallbacks.append(fallback_record(notification_id, customer_id, rule, "sms",
                                                 f"Twilio receipt: {status}" + (f" ({error})" if error else ""),
                                                 fallback))
    return records


def sendgrid_records(events: list[SendGridEvent]) -> Records:
    records = Records()
    for event in events:
        _add_sendgrid_event(event, records)
    return records


def _add_sendgrid_event(event: SendGridEvent, records: Records) -> None:
    notification_id, customer_id, kind = event.notification_id, event.customer_id or "", event.event
    reason = (event.reason or kind)[:500]
    unsubscribed = kind in SENDGRID_OPTOUT_EVENTS or (
        kind == "dropped" and any(word in reason for word in ("Unsubscribed", "Spam Report")))
    if unsubscribed and customer_id:
        records.optouts.append(optout_record(customer_id, "email", f"SendGrid {kind}: {reason}", notification_id))
    status = SENDGRID_STATUS.get(kind)
    if status is None:
        return
    error = f"SendGrid {kind}: {reason}" if status in FAILED else None
    records.deliveries.append({"notification_id": notification_id, "channel": "email", "status": status,
                               "at": iso(event.timestamp), "provider": "sendgrid",
                               "provider_message_id": (event.sg_message_id or "").split(".")[0] or None,
                               "error": error})
    fallback = [c for c in (event.fallback or "").split(",") if c]
    if status in FAILED and fallback and customer_id:
        records.fallbacks.append(fallback_record(notification_id, customer_id, event.rule or "", "email",
                                                 error or kind, fallback))


def iso(epoch: float | None = None) -> str:
    return datetime.fromtimestamp(epoch if epoch is not None else time.time(), timezone.utc).isoformat()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_public_url(url: str) -> str:
    """The public URL without its trailing slash; one Twilio could not have signed is a ConfigError."""
    try:
        parts = urlsplit(url)
        # .port raises on a port that is not one, as it would in Twilio's validator on every request
        usable = (parts.scheme in ("https", "http") and bool(parts.hostname) and not parts.query
                  and not parts.fragment and (parts.port or 0) >= 0)
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(f"FOREWARN_WEBHOOK_PUBLIC_URL={url!r} is not an http(s) URL (a path is fine, "
                          "a query is not)")
    return url.rstrip("/")


def require_public_url(settings: Settings) -> None:
    """A deployed receiver checks Twilio's signatures against its public URL; loopback-only is asked for."""
    if settings.webhook_public_url:
        checked_public_url(settings.webhook_public_url)
    elif not settings.webhook_insecure_local:
        raise ConfigError("set FOREWARN_WEBHOOK_PUBLIC_URL to the https:// URL Twilio and SendGrid call "
                          "(Twilio signs that URL), or FOREWARN_WEBHOOK_INSECURE_LOCAL=1 to receive on loopback only")
    elif not is_loopback(settings.webhook_host):
        raise ConfigError(f"FOREWARN_WEBHOOK_INSECURE_LOCAL=1 receives on loopback only, and "
                          f"FOREWARN_WEBHOOK_HOST is {settings.webhook_host}")


def http_url(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Receiver:
    """The aiohttp application and, when started without ``publish``, its Kafka producer."""

    def __init__(self, settings: Settings, publish: Publish | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.publish = publish
        self._producer: Any = None
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        self.public_url = checked_public_url(settings.webhook_public_url) if settings.webhook_public_url else None
        self.signed_base: str | None = None  # what Twilio's signatures are checked against, once listening
        self.replays = ReplayGuard(2 * settings.webhook_max_age)
        self.twilio = RequestValidator(settings.twilio_auth_token) if settings.twilio_auth_token else None
        self.sendgrid = (SendGridSignature(settings.sendgrid_webhook_public_key, settings.webhook_max_age, clock)
                         if settings.sendgrid_webhook_public_key else None)
        self.app = web.Application(client_max_size=SENDGRID_MAX_BODY + 1)
        self.app.router.add_post(STATUS_PATH, self.twilio_status)
        self.app.router.add_post(SENDGRID_PATH, self.sendgrid_events)
        self.app.router.add_post(INBOUND_PATH, self.twilio_inbound)
        self.links = links_for(settings)
        self.page = UnsubscribePage(settings.brand)
        self.app.router.add_get(UNSUBSCRIBE_PATH, self.unsubscribe_page)
        self.app.router.add_post(UNSUBSCRIBE_PATH, self.unsubscribe)
        self.app.router.add_get("/metrics", self.metrics)

    async def start(self, host: str | None = None, port: int | None = None) -> "Receiver":
        host = host or self.settings.webhook_host
        if self.public_url is None and not is_loopback(host):
            raise ConfigError(f"without FOREWARN_WEBHOOK_PUBLIC_URL the receiver listens on loopback only, not {host}")
        if self.publish is None:
            self.publish = await self._kafka()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self.settings.webhook_port if port is None else port)
        await site.start()
        self.url = http_url(site._server.sockets[0].getsockname())  # type: ignore[union-attr]
        self.signed_base = self.public_url or self.url
        log.info("webhook receiver on %s for %s (Twilio: %s, SendGrid: %s)", self.url, self.signed_base,
                 "on" if self.twilio else "off", "on" if self.sendgrid else "off")
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._producer is not None:
            await self._producer.stop()

    async def _kafka(self) -> Publish:
        from aiokafka import AIOKafkaProducer

        from streams.kafka.security import aiokafka_options

        if not self.settings.bootstrap_servers:
            raise ConfigError("the webhook receiver needs KAFKA_BOOTSTRAP_SERVERS")
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers.split(","),
                                    acks="all", linger_ms=5, client_id="forewarn-webhooks",
                                    **aiokafka_options(self.settings.kafka_security))
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # else it is left unclosed, and says so on the way out
            raise
        self._producer = producer

        async def publish(topic: str, key: bytes, value: bytes, partition: int | None) -> None:
            await self._producer.send_and_wait(topic, value=value, key=key, partition=partition)

        return publish

    # -- taking a receipt ------------------------------------------------------------------------------

    async def _body(self, request: web.Request, content_type: str, limit: int) -> bytes:
        """The body, if of ``content_type`` and at most ``limit`` bytes."""
        if request.content_type != content_type:
            raise ReceiptMalformed(f"Content-Type is not {content_type}", 415)
        if request.content_length is not None and request.content_length > limit:
            raise ReceiptMalformed(f"larger than {limit} bytes", 413)
        body = await request.read()  # aiohttp itself stops at client_max_size, the largest limit
        if len(body) > limit:
            raise ReceiptMalformed(f"larger than {limit} bytes", 413)
        return body

    async def _accept(self, provider: str, digest: bytes, records: Records) -> web.Response:
        if not self.replays.claim(digest):  # claimed before producing: a copy arriving meanwhile is a replay
            return self._refuse(provider, ReceiptRefused("replayed"))
        try:
            await self._emit(records)
        except Exception as exc:  # noqa: BLE001  Kafka unavailable: let the provider send it again
            self.replays.release(digest)
            log.error("%s receipt not recorded: %s", provider, type(exc).__name__)
            return web.Response(status=503, text="try again")
        RECEIPTS.labels(provider).inc()
        for optout in records.optouts:
            for statement in optout["statements"]:
                OPTOUTS.labels(statement["channel"] or "all", statement["source"]).inc()
        for fallback in records.fallbacks:
            FALLBACKS.labels(fallback["failed_channel"], "receipt").inc()
        return web.Response(status=200)

    async def _emit(self, records: Records) -> None:
        assert self.publish is not None
        topics, partitions = self.settings.topics, self.settings.partitions
        sends = [self.publish(topics.deliveries, d["notification_id"].encode(), orjson.dumps(d), None)
                 for d in records.deliveries]
        # Keyed and placed as the decide agent places a customer's events, so its owner gets them.
        sends += [self.publish(topic, r["customer_id"].encode(), orjson.dumps(r),
                               owner_partition(r["customer_id"], partitions))
                  for topic, rows in ((topics.consent, records.optouts), (topics.fallbacks, records.fallbacks))
                  for r in rows]
        # A number's customers may live in any partition: each partition answers for its own.
        sends += [self.publish(topics.consent, r["phone"].encode(), orjson.dumps(r), partition)
                  for r in records.by_phone for partition in range(partitions)]
        await asyncio.gather(*sends)

    def _refuse(self, provider: str, refused: ReceiptRefused) -> web.Response:
        REJECTED.labels(provider, refused.reason).inc()
        log.warning("%s receipt refused: %s", provider, refused)
        return web.Response(status=getattr(refused, "status", 403), text=str(refused))

    # -- Twilio --------------------------------------------------------------------------------------

    async def twilio_status(self, request: web.Request) -> web.Response:
        if self.twilio is None:
            return web.Response(status=404, text="Twilio receipts are not configured")
        try:
            digest, records = await self._twilio_receipt(request)
        except ReceiptRefused as refused:
            return self._refuse("twilio", refused)
        if records is None:
            return web.Response(status=204)  # signed, but not one of ours or not a status we record
        return await self._accept("twilio", digest, records)

    async def _twilio_receipt(self, request: web.Request) -> tuple[bytes, Records | None]:
        digest, form = await self._twilio_form(request)
        return digest, twilio_records(request.query, TwilioStatus.of(form))

    async def _twilio_form(self, request: web.Request) -> tuple[bytes, MultiDict[str]]:
        """The form of a request Twilio signed, and the digest that recognises its replays."""
        assert self.twilio is not None and self.signed_base is not None
        signature = request.headers.get(TWILIO_SIGNATURE, "")
        if not signature:
            raise ReceiptRefused("unsigned")
        form = parse_form(await self._body(request, FORM, TWILIO_MAX_BODY))
        url = self.signed_base + request.raw_path  # never the Host header: the client chooses that
        if not self.twilio.validate(url, form, signature):
            raise ReceiptRefused("forged")
        return signed_digest("twilio", twilio_signed_text(url, form).encode()), form

    async def twilio_inbound(self, request: web.Request) -> web.Response:
        """An SMS to our number: STOP and its kin opt the number out of SMS, START back in."""
        if self.twilio is None:
            return web.Response(status=404, text="Twilio is not configured")
        try:
            digest, form = await self._twilio_form(request)
            phone, body, sid = (_single(form, name) for name in ("From", "Body", "MessageSid"))
        except ReceiptRefused as refused:
            return self._refuse("twilio-inbound", refused)
        change = keyword_change(phone, body, utc_now(), sid or None) if phone.startswith("+") else None
        if change is None:
            return web.Response(text=TWIML_EMPTY, content_type="text/xml")  # a reply, not a keyword: not ours
        response = await self._accept("twilio-inbound", digest, Records(by_phone=[change.to_record()]))
        if response.status == 200:
            log.info("SMS keyword: %s", describe_change(change))
            return web.Response(text=TWIML_EMPTY, content_type="text/xml")
        return response

    # -- unsubscribe links -----------------------------------------------------------------------------

    def _ticket(self, request: web.Request) -> tuple[str, Ticket | None]:
        if self.links is None:
            return "invalid", None
        try:
            return "ask", self.links.read(request.match_info["token"])
        except UnsubscribeRefused as refused:
            return ("expired", refused.ticket) if refused.ticket is not None else ("invalid", None)

    def _page(self, state: str, ticket: Ticket | None) -> web.Response:
        status = {"ask": 200, "done": 200, "expired": 410, "invalid": 400}[state]
        return web.Response(status=status, text=self.page.render(state, ticket), content_type="text/html",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def unsubscribe_page(self, request: web.Request) -> web.Response:
        state, ticket = self._ticket(request)
        return self._page(state, ticket)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """RFC 8058: a POST unsubscribes at once, whatever its body; the page's button posts the same."""
        state, ticket = self._ticket(request)
        if state != "ask" or ticket is None:
            return self._page(state, ticket)
        change = link_change(ticket, utc_now())
        try:
            await self._emit(Records(optouts=[change.to_record()]))
        except Exception as exc:  # noqa: BLE001  Kafka unavailable: the customer may press again
            log.error("unsubscribe not recorded: %s", type(exc).__name__)
            return web.Response(status=503, text="try again in a minute")
        OPTOUTS.labels("email", "unsubscribe-link").inc()
        log.info("unsubscribed: %s", describe_change(change))
        return self._page("done", ticket)

    # -- SendGrid ------------------------------------------------------------------------------------

    async def sendgrid_events(self, request: web.Request) -> web.Response:
        if self.sendgrid is None:
            return web.Response(status=404, text="SendGrid receipts are not configured")
        try:
            body = await self._body(request, JSON, SENDGRID_MAX_BODY)
            signed = self.sendgrid.verify(body, request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP))
            records = sendgrid_records(sendgrid_events(body))
        except ReceiptRefused as refused:
            return self._refuse("sendgrid", refused)
        return await self._accept("sendgrid", signed_digest("sendgrid", signed), records)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def run(settings: Settings) -> None:
    """Receive until SIGINT / SIGTERM."""
    receiver = await Receiver(settings).start()
    try:
        await until_stopped()
    finally:
        await receiver.stop()


def serve(settings: Settings) -> None:
    """``forewarn webhooks``: the receiver on FOREWARN_WEBHOOK_HOST:FOREWARN_WEBHOOK_PORT."""
    if not (settings.twilio_auth_token or settings.sendgrid_webhook_public_key or settings.unsubscribe_secret):
        raise ConfigError("nothing to receive: set TWILIO_AUTH_TOKEN, SENDGRID_WEBHOOK_PUBLIC_KEY and/or "
                          "FOREWARN_UNSUBSCRIBE_SECRET")
    require_public_url(settings)
    asyncio.run(run(settings))
