"""SMS through Twilio's Messages API, with the twilio SDK and its asynchronous HTTP client.

- Time-outs: the SDK sets none, and ``AsyncTwilioHttpClient`` even drops the one
  given to its constructor (it hands aiohttp the per-request value, None);
  ``TwilioTransport`` applies ``timeout`` to every request.
- No ``max_retries``: aiohttp_retry would POST again after a 5xx and could send
  the SMS twice. The dispatcher retries, after asking Twilio (``find_sent``).
- ``base_url`` points the SDK at another host (the imitation). The client gets
  an explicit, non-empty environment so that TWILIO_REGION / TWILIO_EDGE cannot
  redirect it: ``environment={}`` is not enough, the SDK reads ``{} or os.environ``.
- The status callback URL carries the notification id, customer, rule and
  fallback channels as query parameters; Twilio signs the URL with them, so
  the receiver (``streams.channels.receipts``) can trust them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from streams.channels.base import Channel, Handover, overloaded
from streams.channels.ratelimit import TokenBucket
from streams.core.segments import count_segments
from streams.errors import ChannelRejected, ChannelUnavailable, ConfigError, OutcomeUnknown, Throttled
from streams.privacy import mask

log = logging.getLogger(__name__)

STATUS_PATH = "/twilio/status"
API_HOST = "https://api.twilio.com"
# What Twilio's codes mean, in our words: its own messages quote the phone number.
KNOWN_CODES = {
    21211: "invalid 'To' number",
    21408: "sending to this region is not enabled",
    21610: "recipient unsubscribed (replied STOP)",
    21612: "cannot route to this number",
    21614: "not a mobile number",
    21617: "body too long",
    20003: "authentication failed",
    20429: "too many requests",
    30003: "handset unreachable",
    30004: "message blocked",
    30005: "unknown or inactive handset",
    30006: "landline or unreachable carrier",
    30007: "filtered by the carrier",
    30008: "unknown delivery error",
}


def retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None when absent or unreadable."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class TwilioTransport(AsyncTwilioHttpClient):
    """The SDK's aiohttp client with a time-out that holds, no retries, and a movable base URL.

    HTTP 429 and 5xx are raised here, where the headers (Retry-After) are still
    known; the SDK raises its own exception for the other errors.
    """

    def __init__(self, timeout: float, base_url: str | None = None, max_connections: int = 64):
        # pool_connections=False: the session is made on first use, inside the running loop.
        super().__init__(pool_connections=False, timeout=timeout, logger=log)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.max_connections = max_connections

    def _rebase(self, url: str) -> str:
        if not self.base_url:
            return url
        parts = urlsplit(url)
        return self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")

    async def request(self, method: str, url: str, params=None, data=None, headers=None, auth=None,
                      timeout: float | None = None, allow_redirects: bool = False):
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        posting = method.upper() == "POST"
        if auth is not None:  # as a header: aiohttp deprecates the BasicAuth object the SDK would build
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        try:
            response = await super().request(method, self._rebase(url), params=params, data=data, headers=headers,
                                             auth=None, timeout=timeout or self.timeout,
                                             allow_redirects=allow_redirects)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # No connection was made: the request never reached Twilio.
            raise ChannelUnavailable(f"cannot connect to Twilio ({type(exc).__name__})") from None
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            if posting:
                raise OutcomeUnknown(f"Twilio request broke off ({type(exc).__name__})") from None
            raise ChannelUnavailable(f"Twilio request broke off ({type(exc).__name__})") from None
        trouble = overloaded("Twilio", response.status_code, posting=posting, wait=retry_after(response.headers))
        if trouble is not None:
            raise trouble
        return response

    def log_request(self, kwargs: dict[str, Any]) -> None:
        # The SDK logs query parameters at INFO, and a message list filters by phone number.
        log.debug("%s %s", kwargs["method"], urlsplit(kwargs["url"]).path)

    def log_response(self, status_code: int, response: Any) -> None:
        log.debug("Twilio answered %s", status_code)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


class TwilioSmsChannel(Channel):
    """One Twilio account: sends from ``sender`` or through a Messaging Service."""

    provider: ClassVar[str] = "twilio"
    channels: ClassVar[tuple[str, ...]] = ("sms",)
    max_body_chars: ClassVar[int] = 1600
    optout_codes: ClassVar[frozenset[int]] = frozenset({21610})
    timeout: ClassVar[float] = 10.0
    max_in_flight: ClassVar[int] = 64
    # Segments per second: one long code sends about one; a Messaging Service pool more.
    default_rate: ClassVar[float] = 1.0
    # How many recent messages to a number are searched when an outcome is unknown.
    lookup_limit: ClassVar[int] = 50

    def __init__(self, account_sid: str, auth_token: str, *, sender: str | None = None,
                 messaging_service_sid: str | None = None, callback_url: str | None = None,
                 rate: float | None = None, timeout: float | None = None, base_url: str | None = None):
        if not (sender or messaging_service_sid):
            raise ConfigError("Twilio needs TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID")
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.callback_url = callback_url.rstrip("/") if callback_url else None
        self.timeout = timeout or type(self).timeout
        self.limiter = TokenBucket(rate or self.default_rate)
        self.transport = TwilioTransport(self.timeout, base_url, self.max_in_flight)
        self.client = Client(account_sid, auth_token, http_client=self.transport,
                             environment={"TWILIO_ACCOUNT_SID": account_sid})
        self._in_flight = asyncio.Semaphore(self.max_in_flight)

    def cost(self, notification: dict[str, Any]) -> float:
        return float(notification.get("segments") or count_segments(notification["body"]).segments)

    def status_callback(self, notification: dict[str, Any]) -> str | None:
        if not self.callback_url:
            return None
        query = {"n": notification["id"], "c": notification["customer_id"], "r": notification["rule"]}
        if notification.get("fallback"):
            query["fb"] = ",".join(notification["fallback"])
        return f"{self.callback_url}{STATUS_PATH}?{urlencode(query)}"

    async def send(self, notification: dict[str, Any]) -> Handover:
        body = notification["body"]
        if len(body) > self.max_body_chars:
            raise ChannelRejected(f"SMS body of {len(body)} characters is over {self.max_body_chars}", code=21617)
        async with self._in_flight:
            await self.limiter.acquire(self.cost(notification))
            try:
                message = await self.client.messages.create_async(
                    to=notification["to"], body=body, from_=self.sender,
                    messaging_service_sid=self.messaging_service_sid,
                    status_callback=self.status_callback(notification))
            except Throttled as exc:
                self.limiter.pause(exc.retry_after or 1.0)  # hold every sender of this account, not only this one
                raise
            except TwilioException as exc:
                raise refusal(exc) from None
        return Handover(self.provider, message.sid, status="queued")

    async def find_sent(self, notification: dict[str, Any], since: datetime) -> Handover | None:
        """A message with our body to this number, created since our first attempt.

        Twilio's message resource has neither our id nor the callback URL, so the
        body and the time must do; ``startswith`` because a Messaging Service may
        append opt-out text.
        """
        try:
            messages = await self.client.messages.list_async(to=notification["to"], limit=self.lookup_limit,
                                                             page_size=self.lookup_limit)
        except TwilioException as exc:
            raise ChannelUnavailable(f"cannot list Twilio messages ({describe(exc)})") from None
        earliest = since - timedelta(seconds=2)  # date_created has whole seconds
        body = notification["body"]
        for message in messages:
            created = message.date_created
            if message.body and message.body.startswith(body) and (created is None or created >= earliest):
                return Handover(self.provider, message.sid, status="queued")
        return None

    async def close(self) -> None:
        await self.transport.close()


def describe(exc: TwilioException) -> str:
    code = getattr(exc, "code", None)
    text = KNOWN_CODES.get(code) or mask(str(getattr(exc, "msg", None) or getattr(exc, "title", None) or "error"))
    return f"{code}: {text}" if code else text


def refusal(exc: TwilioException) -> Exception:
    """Twilio's 4xx answer as our exception: permanent unless it is about our account."""
    status = getattr(exc, "status", None)
    if status == 401 or getattr(exc, "code", None) == 20003:
        # Our credentials, not the message: retrying is pointless now, but rejecting would drop it.
        log.error("Twilio refused the account credentials (20003)")
        return ChannelUnavailable("Twilio refused our credentials (20003)")
    if status is None or status >= 500:
        return OutcomeUnknown(f"Twilio error without an answer ({describe(exc)})")
    return ChannelRejected(f"Twilio {describe(exc)}", code=getattr(exc, "code", None) or status)
