"""What every channel is: one async ``send`` that hands a notification over or raises."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from streams.channels.ratelimit import TokenBucket
from streams.errors import ChannelUnavailable, OutcomeUnknown, Throttled


@dataclass(frozen=True)
class Handover:
    """The provider took the message; ``provider_message_id`` identifies it there."""

    provider: str
    provider_message_id: str | None
    status: str = "sent"


def overloaded(provider: str, status: int, *, posting: bool, wait: float | None) -> ChannelUnavailable | None:
    """A provider's 429 or 5xx as our exception, None for any other status.

    After a send (``posting``) a 5xx leaves it unknown whether the message went out.
    """
    if status == 429:
        return Throttled(f"{provider} answered 429 (too many requests)", wait)
    if status >= 500:
        kind = OutcomeUnknown if posting else ChannelUnavailable
        return kind(f"{provider} answered {status}", wait)
    return None


class Channel(ABC):
    """A way to reach a customer. Limits are class attributes; failures are exceptions.

    ``send`` raises ``ChannelRejected`` when the provider refuses for good,
    ``Throttled`` or ``ChannelUnavailable`` when it may accept later, and
    ``OutcomeUnknown`` when it cannot be told whether the message went out.
    """

    provider: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    max_body_chars: ClassVar[int] = 1600
    # Provider error codes that mean the customer withdrew consent (e.g. Twilio 21610, STOP).
    optout_codes: ClassVar[frozenset[int]] = frozenset()
    # Paces this provider account; None for channels without a limit (the outbox).
    limiter: TokenBucket | None = None

    @abstractmethod
    async def send(self, notification: dict[str, Any]) -> Handover: ...

    async def find_sent(self, notification: dict[str, Any], since: datetime) -> Handover | None:
        """The provider's record of ``notification`` if it took it at or after ``since``; None if not.

        Raises ``ChannelUnavailable`` when the provider cannot be asked now. The
        default cannot look anything up and answers None (send again): right for
        channels that are idempotent themselves, like the outbox.
        """
        return None

    def cost(self, notification: dict[str, Any]) -> float:
        """Tokens one send takes from the limiter: 1 message, or the SMS's segments."""
        return 1.0

    async def close(self) -> None:
        """Release files or connections; most channels hold none."""
