"""The real twilio and sendgrid SDKs against the imitation: what goes over the wire, time-outs, routing."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from streams.kafka.embedded import free_port
from streams.errors import OutcomeUnknown
from streams.channels.email_sendgrid import SendGridEmailChannel
from streams.channels.outbox import OutboxChannel
from streams.channels.registry import channels_for
from streams.channels.sms_twilio import TwilioSmsChannel
from streams.errors import ChannelUnavailable, ConfigError
from streams.settings import Settings
from tests.channels.support import notification, providers


def test_sms_and_email_reach_the_imitation_through_the_real_sdks():
    async def scenario():
        async with providers() as (fake, sms, email):
            text, mail = notification(1, "sms"), notification(2, "email", html="<p>Storing</p>", fallback=["sms"])
            sms_handover = await sms.send(text)
            email_handover = await email.send(mail)
            assert sms_handover.provider == "twilio" and sms_handover.provider_message_id.startswith("SM")
            assert sms_handover.status == "queued"
            assert email_handover.provider == "sendgrid" and email_handover.provider_message_id
            taken = {a.notification_id: a for a in fake.accepted}
            assert taken[text["id"]].to == text["to"] and taken[text["id"]].body == text["body"]
            assert taken[text["id"]].sid == sms_handover.provider_message_id
            assert taken[mail["id"]].to == mail["to"] and taken[mail["id"]].subject == mail["subject"]
            assert taken[mail["id"]].sid == email_handover.provider_message_id
            # custom_args and the StatusCallback carry our id (and what a receipt needs for a fallback)
            assert fake._emails[0]["custom_args"] == {"notification_id": mail["id"], "customer_id": mail["customer_id"],
                                                      "rule": mail["rule"], "fallback": "sms"}
            callback = sms.status_callback(text)
            assert parse_qs(urlsplit(callback).query)["n"] == [text["id"]]
            # the look-up the dispatcher uses when an outcome is unknown finds both, and nothing else
            since = datetime.now(timezone.utc).replace(microsecond=0)
            assert (await sms.find_sent(text, since)).provider_message_id == sms_handover.provider_message_id
            assert (await email.find_sent(mail, since)).provider_message_id == email_handover.provider_message_id
            assert await sms.find_sent(notification(3), since) is None
            assert await email.find_sent(notification(4, "email"), since) is None

    asyncio.run(scenario())


def test_a_hanging_provider_is_cut_off_by_the_timeout_and_the_outcome_is_unknown():
    async def scenario():
        async with providers(timeout=0.5) as (fake, sms, email):
            fake.hang(1, accept=True)
            for channel, n in ((sms, notification(1)), (email, notification(2, "email"))):
                started = asyncio.get_running_loop().time()
                with pytest.raises(OutcomeUnknown):
                    await channel.send(n)
                assert asyncio.get_running_loop().time() - started < 2.0
            assert len(fake.accepted) == 2  # taken, but the answer never came

    asyncio.run(scenario())


def test_no_connection_means_not_sent_and_a_5xx_means_unknown():
    async def scenario():
        nowhere = f"http://127.0.0.1:{free_port()}"
        sms = TwilioSmsChannel("AC" + "0" * 32, "token", sender="+3197010000000", base_url=nowhere, timeout=1)
        email = SendGridEmailChannel("SG.key", "noreply@forewarn.example", base_url=nowhere, timeout=1)
        for channel, n in ((sms, notification(1)), (email, notification(2, "email"))):
            with pytest.raises(ChannelUnavailable) as raised:
                await channel.send(n)
            assert not isinstance(raised.value, OutcomeUnknown)
        await sms.close()
        await email.close()
        async with providers() as (fake, sms, email):
            fake.outage(10, status=502)
            for channel, n in ((sms, notification(1)), (email, notification(2, "email"))):
                with pytest.raises(OutcomeUnknown):
                    await channel.send(n)

    asyncio.run(scenario())


def test_twilio_region_and_edge_in_the_environment_cannot_redirect_the_client(monkeypatch):
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")

    async def scenario():
        async with providers() as (fake, sms, _):
            await sms.send(notification(1))
            assert len(fake.accepted) == 1
            assert sms.client.region is None and sms.client.edge is None

    asyncio.run(scenario())


def test_the_twilio_transport_never_retries_by_itself_and_always_has_a_timeout():
    async def scenario():
        async with providers(timeout=3.0) as (fake, sms, _):
            await sms.send(notification(1))
            assert isinstance(sms.transport.session, aiohttp.ClientSession)  # not aiohttp_retry's RetryClient
            assert sms.transport.session.timeout.total == 3.0
            fake.outage(5)
            with pytest.raises(OutcomeUnknown):
                await sms.send(notification(2))
            assert fake.stats["twilio"]["failed"] == 1  # one POST, not several

    asyncio.run(scenario())


def test_the_registry_picks_providers_only_when_their_credentials_are_set(tmp_path):
    base = dataclasses.replace(Settings(), outbox_dir=tmp_path)
    offline = channels_for(base)
    assert isinstance(offline["sms"], OutboxChannel) and offline["sms"] is offline["email"]
    online = channels_for(dataclasses.replace(
        base, twilio_account_sid="AC1", twilio_auth_token="t", twilio_messaging_service_sid="MG1",
        sendgrid_api_key="SG.k", sendgrid_from="noreply@forewarn.example"))
    assert isinstance(online["sms"], TwilioSmsChannel) and isinstance(online["email"], SendGridEmailChannel)
    half = channels_for(dataclasses.replace(base, twilio_account_sid="AC1", twilio_auth_token="t"))
    assert isinstance(half["sms"], OutboxChannel)  # no sender: not configured
    with pytest.raises(ConfigError):
        TwilioSmsChannel("AC1", "t")
    assert "s3cr3t" not in repr(dataclasses.replace(base, twilio_auth_token="s3cr3t", sendgrid_api_key="s3cr3t"))
