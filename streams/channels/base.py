"""What every channel is: one async ``send`` that hands a notification over or raises."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Handover:
    """The provider took the message; ``provider_message_id`` identifies it there."""

    provider: str
    provider_message_id: str | None
    status: str = "sent"


class Channel(ABC):
    """A way to reach a customer. Limits are class attributes; failures are exceptions.

    ``send`` raises ``ChannelRejected`` when the provider refuses for good and
    ``ChannelUnavailable`` when it may accept later.
    """

    provider: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    max_body_chars: ClassVar[int] = 1600

    @abstractmethod
    async def send(self, notification: dict[str, Any]) -> Handover: ...

    async def close(self) -> None:
        """Release files or connections; most channels hold none."""
