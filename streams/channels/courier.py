"""Hand notifications to their channels: pacing, retries, unknown outcomes, opt-outs, fallbacks.

Plain asyncio, no faust: the dispatch agent, the tests and the benchmark run
this same code. ``deliver_all`` sends a window of notifications concurrently
(one recipient's messages one after the other, in order) and returns when every
one has an outcome, so that the caller can commit the window's offsets knowing
nothing in it is unfinished.

Outcomes:

- handed over: a ``deliveries`` record (``queued``);
- refused for good (invalid number, landline, unsubscribed, bad address): ``failed``,
  no retry; an opt-out record when the provider says the customer withdrew
  consent, a fallback record when the notification names channels to fall back to;
- throttled or unreachable: retried with capped exponential backoff and jitter,
  Retry-After / X-RateLimit-Reset honoured;
- outcome unknown (5xx, time-out): the provider is asked whether it has the
  message before anything is sent again; how that ended is counted
  (``forewarn_outcome_unknown_total{resolution}``) and written in the record's ``error``;
- retry budget spent: ``parked``, for the caller to put on ``notifications.retry``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

from streams.core.consent import PreferenceChange, Scope, Statement
from streams.channels.base import Channel, Handover
from streams.channels.ratelimit import share
from streams.errors import ChannelError, ChannelRejected, ChannelUnavailable, OutcomeUnknown, Throttled
from streams.metrics import FALLBACKS, OPTOUTS, RETRIES, UNKNOWN_OUTCOMES

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def delivery(notification: dict[str, Any], status: str, provider: str, *, attempts: int,
             provider_message_id: str | None = None, error: str | None = None) -> dict[str, Any]:
    """A record for ``deliveries`` (schemas/delivery.json)."""
    return {"notification_id": notification["id"], "channel": notification["channel"], "status": status,
            "at": now_iso(), "provider": provider, "provider_message_id": provider_message_id, "error": error,
            "attempts": attempts}


def optout_record(customer_id: str, channel: str, reason: str, notification_id: str | None = None) -> dict[str, Any]:
    """For ``consent``: the provider says the customer opted out of ``channel`` (a STOP, an unsubscribe)."""
    detail = f"{reason} (notification {notification_id})" if notification_id else reason
    statement = Statement(Scope(channel), False, now_iso(), "provider", detail[:500])
    return PreferenceChange((statement,), customer_id=customer_id).to_record()


def fallback_record(notification_id: str, customer_id: str, rule: str, failed_channel: str, reason: str,
                    fallback: Sequence[str]) -> dict[str, Any]:
    """For ``fallbacks``: the decide side renders the rule for the next channel in ``fallback``, once."""
    return {"notification_id": notification_id, "customer_id": customer_id, "rule": rule,
            "failed_channel": failed_channel, "reason": reason, "fallback": list(fallback), "at": now_iso()}


async def _send(channel: Channel, notification: dict[str, Any]) -> Handover:
    """``channel.send``; an exception no channel should raise counts as an unknown outcome, not a crash."""
    try:
        return await channel.send(notification)
    except ChannelError:
        raise
    except Exception as exc:  # noqa: BLE001  it may have gone out: ask before sending again
        raise OutcomeUnknown(f"unexpected {type(exc).__name__} in {channel.provider}: {exc}"[:300]) from exc


async def _find_sent(channel: Channel, notification: dict[str, Any], since: datetime) -> Handover | None:
    try:
        return await channel.find_sent(notification, since)
    except ChannelError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ChannelUnavailable(f"unexpected {type(exc).__name__} in {channel.provider}'s look-up: {exc}"[:300]) \
            from exc


@dataclass
class DeliveryOutcome:
    notification: dict[str, Any]
    delivery: dict[str, Any]
    parked: str | None = None  # why the retry budget ran out; None when settled
    unknown: str | None = None  # parked with the outcome still unknown: look up before sending again
    since: str | None = None  # the first attempt, for that look-up
    optout: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None


class Courier:
    """Delivers notifications through ``channels`` (``{"sms": ..., "email": ...}``)."""

    backoff_base: ClassVar[float] = 0.5
    backoff_cap: ClassVar[float] = 30.0

    def __init__(self, channels: Mapping[str, Channel], *, attempts: int = 10,
                 backoff_base: float | None = None, backoff_cap: float | None = None):
        self.channels = channels
        self.attempts = max(1, attempts)
        self.backoff_base = backoff_base if backoff_base is not None else type(self).backoff_base
        self.backoff_cap = backoff_cap if backoff_cap is not None else type(self).backoff_cap
        # The configured rate is the whole account's; each worker paces itself with a share of it.
        self._account_rates = {id(c): c.limiter.rate for c in channels.values() if c.limiter is not None}

    def set_share(self, owned: int, total: int) -> None:
        """This worker owns ``owned`` of ``total`` partitions of ``notifications``: pace with that share."""
        for channel in {id(c): c for c in self.channels.values()}.values():
            if channel.limiter is not None:
                channel.limiter.set_rate(share(self._account_rates[id(channel)], owned, total))

    def backoff(self, step: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2 ** (step - 1)) * random.uniform(0.5, 1.0)

    def delay(self, exc: ChannelUnavailable, step: int) -> float:
        if exc.retry_after is not None:  # the provider said when; a little jitter so that not all come at once
            return exc.retry_after + random.uniform(0.0, self.backoff_base)
        return self.backoff(step)

    async def deliver_all(self, notifications: Sequence[dict[str, Any]],
                          unsure: Mapping[str, tuple[datetime | None, str]] | None = None) -> list[DeliveryOutcome]:
        """Every notification's outcome, in input order; one recipient's messages are sent in order.

        ``unsure``: notification id -> (first attempt, why), for those that may have been sent
        already; the provider is asked before they are sent.
        """
        unsure = unsure or {}
        by_recipient: dict[tuple[str, str], list[int]] = {}
        for index, notification in enumerate(notifications):
            by_recipient.setdefault((notification["channel"], notification["to"]), []).append(index)
        outcomes: list[DeliveryOutcome | None] = [None] * len(notifications)

        async def in_order(indices: list[int]) -> None:
            for index in indices:
                notification = notifications[index]
                since, unknown = unsure.get(notification["id"], (None, None))
                outcomes[index] = await self.deliver(notification, since=since, unknown=unknown)

        await asyncio.gather(*(in_order(indices) for indices in by_recipient.values()))
        return outcomes  # type: ignore[return-value]  every slot is filled

    async def deliver(self, notification: dict[str, Any], *, since: datetime | None = None,
                      unknown: str | None = None) -> DeliveryOutcome:
        """One notification, within the retry budget. ``unknown``: an earlier round left its outcome unknown."""
        channel = self.channels[notification["channel"]]
        provider = channel.provider
        since = since or datetime.now(timezone.utc)
        sends, resolution, last_error = 0, None, "no attempt"
        for step in range(1, self.attempts + 1):
            exc: ChannelUnavailable
            if unknown is not None:
                try:
                    found = await _find_sent(channel, notification, since)
                except ChannelUnavailable as failure:
                    # Still cannot tell: sending now could send twice, so wait and ask again.
                    exc, last_error = failure, f"{unknown}; look-up failed: {failure}"
                    RETRIES.labels(provider, "lookup").inc()
                    if step < self.attempts:
                        await asyncio.sleep(self.delay(exc, step))
                    continue
                if found is not None:
                    UNKNOWN_OUTCOMES.labels(provider, "found").inc()
                    note = f"resolved: outcome unknown ({unknown}); found at {provider}, not sent again"
                    return self._handed_over(notification, found, sends, note)
                UNKNOWN_OUTCOMES.labels(provider, "resent").inc()
                resolution = f"resolved: outcome unknown ({unknown}); not found at {provider}, sent again"
                unknown = None
            sends += 1
            try:
                handover = await _send(channel, notification)
            except ChannelRejected as refused:
                return self._refused(channel, notification, refused, sends)
            except ChannelUnavailable as failure:
                exc, last_error = failure, str(failure)
                if isinstance(failure, OutcomeUnknown):
                    unknown, reason = str(failure), "unknown"
                else:
                    reason = "throttled" if isinstance(failure, Throttled) else "unavailable"
                RETRIES.labels(provider, reason).inc()
                log.debug("notification %s: %s (%s); step %d", notification["id"], reason, failure, step)
                if step < self.attempts:
                    await asyncio.sleep(self.delay(exc, step))
            else:
                return self._handed_over(notification, handover, sends, resolution)
        if unknown is not None:
            UNKNOWN_OUTCOMES.labels(provider, "parked").inc()
        reason = f"retry budget of {self.attempts} steps spent after {sends} sends: {last_error}"
        log.warning("notification %s parked: %s", notification["id"], reason)
        return DeliveryOutcome(notification, delivery(notification, "parked", provider, attempts=sends, error=reason),
                       parked=reason, unknown=unknown, since=since.isoformat())

    def _handed_over(self, notification: dict[str, Any], handover: Handover, sends: int,
                     note: str | None) -> DeliveryOutcome:
        record = delivery(notification, handover.status, handover.provider, attempts=sends,
                          provider_message_id=handover.provider_message_id, error=note)
        return DeliveryOutcome(notification, record)

    def _refused(self, channel: Channel, notification: dict[str, Any], refused: ChannelRejected,
                 sends: int) -> DeliveryOutcome:
        reason = str(refused)
        outcome = DeliveryOutcome(notification, delivery(notification, "failed", channel.provider, attempts=sends,
                                                 error=reason))
        try:
            code = int(refused.code) if refused.code is not None else None
        except (TypeError, ValueError):
            code = None
        if code in channel.optout_codes:
            OPTOUTS.labels(notification["channel"], "send").inc()
            outcome.optout = optout_record(notification["customer_id"], notification["channel"], reason,
                                           notification["id"])
        if notification.get("fallback"):
            FALLBACKS.labels(notification["channel"], "send").inc()
            outcome.fallback = fallback_record(notification["id"], notification["customer_id"], notification["rule"],
                                               notification["channel"], reason, notification["fallback"])
        log.info("notification %s refused by %s: %s", notification["id"], channel.provider, reason)
        return outcome
