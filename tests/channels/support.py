"""Shared by the channel tests: the imitation with both real SDK channels pointed at it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, AsyncIterator

from streams.channels.courier import Courier, DeliveryOutcome
from streams.channels.email_sendgrid import SendGridEmailChannel
from streams.channels.sms_twilio import TwilioSmsChannel
from streams.tools.imitation import Imitation

# A callback URL the imitation only reads the notification id from (post_callbacks=False).
NOWHERE = "http://127.0.0.1:9"


def notification(i: int, channel: str = "sms", *, to: str | None = None, body: str | None = None,
                 fallback: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    sms = channel == "sms"
    record = {"id": f"ntf-{i:06d}", "rule": "outage-started", "channel": channel, "customer_id": f"C{i:06d}",
              "to": to or (f"+3161{i:07d}" if sms else f"klant{i}@example.nl"), "locale": "nl",
              "subject": None if sms else "Storing in uw buurt", "body": body or f"Storing in uw buurt ({i}).",
              "created_at": "2026-11-25T13:02:04+01:00", "event_ids": ["evt-1"], **extra}
    if fallback is not None:
        record["fallback"] = fallback
    return record


@asynccontextmanager
async def providers(*, sms_per_second: float = 1000.0, email_per_second: float = 1000.0, timeout: float = 5.0,
                    callback_url: str | None = NOWHERE, **imitation: Any
                    ) -> AsyncIterator[tuple[Imitation, TwilioSmsChannel, SendGridEmailChannel]]:
    """The imitation (``imitation``: its options, e.g. its own ``sms_rate``) and both channels, paced as given."""
    imitation.setdefault("post_callbacks", callback_url != NOWHERE)
    async with Imitation(**imitation) as fake:
        sms = TwilioSmsChannel(fake.account_sid, fake.auth_token, sender=fake.twilio_from, rate=sms_per_second,
                               timeout=timeout, base_url=fake.url, callback_url=callback_url)
        email = SendGridEmailChannel(fake.sendgrid_api_key, fake.sendgrid_from, rate=email_per_second, timeout=timeout,
                                     base_url=fake.url)
        try:
            yield fake, sms, email
        finally:
            await sms.close()
            await email.close()


async def dispatch_all(courier: Courier, notifications: list[dict[str, Any]], window: int = 100
                       ) -> list[DeliveryOutcome]:
    """As the agent does: window after window; parked ones get the retry agent's second round."""
    outcomes: list[DeliveryOutcome] = []
    for start in range(0, len(notifications), window):
        outcomes += await courier.deliver_all(notifications[start:start + window])
    for index, outcome in enumerate(outcomes):
        if outcome.parked:
            since = datetime.fromisoformat(outcome.since) if outcome.since else None
            outcomes[index] = await courier.deliver(outcome.notification, since=since, unknown=outcome.unknown)
    return outcomes


def measured_rate(times: list[float]) -> float:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])
