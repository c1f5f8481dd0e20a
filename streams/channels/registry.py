"""Which channel serves ``sms`` and which serves ``email``: an explicit dict, no discovery.

A provider is used when its credentials are in the environment (Twilio:
TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM or
TWILIO_MESSAGING_SERVICE_SID; SendGrid: SENDGRID_API_KEY and SENDGRID_FROM);
otherwise that channel goes to the local outbox.
"""

from __future__ import annotations

from streams.channels.base import Channel
from streams.channels.outbox import OutboxChannel
from streams.settings import Settings


def twilio_configured(settings: Settings) -> bool:
    return bool(settings.twilio_account_sid and settings.twilio_auth_token
                and (settings.twilio_from or settings.twilio_messaging_service_sid))


def sendgrid_configured(settings: Settings) -> bool:
    return bool(settings.sendgrid_api_key and settings.sendgrid_from)


def channels_for(settings: Settings) -> dict[str, Channel]:
    """Provider channels where their credentials are set; otherwise the local outbox."""
    outbox: OutboxChannel | None = None

    def offline() -> OutboxChannel:
        nonlocal outbox
        outbox = outbox or OutboxChannel(settings.outbox_dir)
        return outbox

    channels: dict[str, Channel] = {}
    if twilio_configured(settings):
        from streams.channels.sms_twilio import TwilioSmsChannel  # the SDKs only load when used

        channels["sms"] = TwilioSmsChannel(
            settings.twilio_account_sid, settings.twilio_auth_token, sender=settings.twilio_from,
            messaging_service_sid=settings.twilio_messaging_service_sid, callback_url=settings.webhook_public_url,
            rate=settings.sms_rate, timeout=settings.provider_timeout, base_url=settings.twilio_base_url)
    else:
        channels["sms"] = offline()
    if sendgrid_configured(settings):
        from streams.channels.email_sendgrid import SendGridEmailChannel

        channels["email"] = SendGridEmailChannel(
            settings.sendgrid_api_key, settings.sendgrid_from, rate=settings.email_rate,
            timeout=settings.provider_timeout, base_url=settings.sendgrid_base_url)
    else:
        channels["email"] = offline()
    return channels
