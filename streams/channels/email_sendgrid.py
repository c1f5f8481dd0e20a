"""Email through SendGrid's v3 Mail Send API, with the sendgrid SDK in a bounded thread pool.

The SDK is synchronous (urllib) and sets no time-out; every call here runs in
this channel's own pool of ``max_in_flight`` threads with ``timeout`` set, so
the event loop never blocks and a hanging SendGrid cannot pile up threads.

The notification id, customer, rule and fallback channels travel in
``custom_args``: SendGrid copies them into every Event Webhook event (so the
receiver knows what a bounce belongs to) and the Email Activity API can be
searched by them (``find_sent``).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

import orjson
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Header, Mail

from streams.channels.base import Channel, Handover, overloaded
from streams.channels.ratelimit import TokenBucket
from streams.errors import ChannelRejected, ChannelUnavailable, OutcomeUnknown, Throttled
from streams.privacy import mask

log = logging.getLogger(__name__)
# The SDK's HTTP layer logs whole request bodies (addresses, text) at DEBUG; never let it.
logging.getLogger("python_http_client.client").setLevel(logging.INFO)

API_HOST = "https://api.sendgrid.com"


def custom_args(notification: dict[str, Any]) -> dict[str, str]:
    """What every SendGrid event of this message will carry back (strings only, SendGrid's rule)."""
    args = {"notification_id": notification["id"], "customer_id": notification["customer_id"],
            "rule": notification["rule"]}
    if notification.get("fallback"):
        args["fallback"] = ",".join(notification["fallback"])
    return args


def reset_after(headers: Any) -> float | None:
    """Seconds until X-RateLimit-Reset (an epoch second), or Retry-After; None when neither is there."""
    if headers is None:
        return None
    reset = headers.get("X-RateLimit-Reset")
    try:
        if reset is not None:
            return max(0.0, float(reset) - time.time())
        after = headers.get("Retry-After")
        return max(0.0, float(after)) if after is not None else None
    except ValueError:
        return None


class SendGridEmailChannel(Channel):
    """One SendGrid account sending from one verified sender."""

    provider: ClassVar[str] = "sendgrid"
    channels: ClassVar[tuple[str, ...]] = ("email",)
    max_body_chars: ClassVar[int] = 1_000_000
    timeout: ClassVar[float] = 10.0
    max_in_flight: ClassVar[int] = 16  # threads; SendGrid answers in tens of ms, so 16 carry hundreds a second
    default_rate: ClassVar[float] = 100.0  # messages per second
    lookup_limit: ClassVar[int] = 10

    def __init__(self, api_key: str, sender: str, *, rate: float | None = None, timeout: float | None = None,
                 base_url: str | None = None):
        self.sender = sender
        self.timeout = timeout or type(self).timeout
        self.limiter = TokenBucket(rate or self.default_rate)
        self.client = SendGridAPIClient(api_key=api_key, host=(base_url or API_HOST).rstrip("/"))
        self.client.client.timeout = self.timeout  # the default for calls that do not pass one
        self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="sendgrid")
        self._in_flight = asyncio.Semaphore(self.max_in_flight)
        self._lookup_available = True

    def message(self, notification: dict[str, Any]) -> dict[str, Any]:
        mail = Mail(from_email=self.sender, to_emails=notification["to"], subject=notification["subject"] or "",
                    plain_text_content=notification["body"], html_content=notification.get("html") or None)
        mail.custom_arg = [CustomArg(key, value) for key, value in custom_args(notification).items()]
        mail.header = [Header(name, value) for name, value in (notification.get("unsubscribe") or {}).items()]
        return mail.get()

    async def _call(self, function, *args: Any, **kwargs: Any):
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(function, *args, **kwargs))

    async def send(self, notification: dict[str, Any]) -> Handover:
        if len(notification["body"]) > self.max_body_chars:
            raise ChannelRejected(f"email body over {self.max_body_chars} characters", code=413)
        payload = self.message(notification)
        async with self._in_flight:
            await self.limiter.acquire(self.cost(notification))
            try:
                response = await self._call(self.client.client.mail.send.post, request_body=payload,
                                            timeout=self.timeout)
            except HTTPError as exc:
                error = refusal(exc, posting=True)
                if isinstance(error, Throttled):
                    self.limiter.pause(error.retry_after or 1.0)  # hold every sender of this account
                raise error from None
            except Exception as exc:  # noqa: BLE001  urllib's many ways of failing, sorted below
                raise broken_off(exc, posting=True) from None
        return Handover(self.provider, response.headers.get("X-Message-Id"), status="queued")

    async def find_sent(self, notification: dict[str, Any], since: datetime) -> Handover | None:
        """Search the Email Activity API by our ``notification_id`` custom arg.

        That API is a paid add-on and lags by up to minutes. Where the account does
        not have it (401/403/404) this answers "not found": sending again (maybe
        twice) is better than never.
        """
        if not self._lookup_available:
            return None
        wanted = notification["id"].replace("\\", "\\\\").replace('"', '\\"')
        query = {"query": f"unique_args['notification_id']=\"{wanted}\"", "limit": self.lookup_limit}
        try:
            response = await self._call(self.client.client.messages.get, query_params=query, timeout=self.timeout)
        except HTTPError as exc:
            if exc.status_code in (401, 403, 404):
                log.warning("SendGrid Email Activity API not available (%s); unknown outcomes are sent again",
                            exc.status_code)
                self._lookup_available = False
                return None
            raise ChannelUnavailable(f"cannot search SendGrid activity ({exc.status_code})",
                                     reset_after(exc.headers)) from None
        except Exception as exc:  # noqa: BLE001
            raise broken_off(exc, posting=False) from None
        for message in (orjson.loads(response.body or b"{}").get("messages") or []):
            return Handover(self.provider, message.get("msg_id"), status="queued")
        return None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def refusal(exc: HTTPError, *, posting: bool) -> Exception:
    """SendGrid's error answer as our exception."""
    status = exc.status_code
    trouble = overloaded("SendGrid", status, posting=posting, wait=reset_after(exc.headers))
    if trouble is not None:
        return trouble
    if status in (401, 403):
        # Our key or sender identity, not this message: retry (and park) rather than reject.
        log.error("SendGrid refused the API key or sender (%s)", status)
        return ChannelUnavailable(f"SendGrid refused our key or sender ({status})")
    return ChannelRejected(f"SendGrid {status}: {first_error(exc)}", code=status)


def first_error(exc: HTTPError) -> str:
    """SendGrid's own explanation, by field: ``personalizations.0.to.0.email: Does not contain a valid address.``"""
    try:
        error = orjson.loads(exc.body)["errors"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return "bad request"
    field, message = error.get("field"), mask(str(error.get("message") or "bad request"))
    return f"{field}: {message}" if field else message

def broken_off(exc: Exception, *, posting: bool) -> ChannelUnavailable:
    """A failure without an HTTP answer: not sent when no connection was made, unknown otherwise."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
        return ChannelUnavailable(f"cannot connect to SendGrid ({type(reason).__name__})")
    if isinstance(exc, (urllib.error.URLError, OSError, http.client.HTTPException)):
        kind = type(reason).__name__
        return OutcomeUnknown(f"SendGrid request broke off ({kind})") if posting else \
            ChannelUnavailable(f"SendGrid request broke off ({kind})")
    raise exc
