"""The URL a Twilio signature is checked against: the public one, or the loopback address; never the Host header."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from urllib.parse import urlencode

import pytest

from streams.channels.receipts import Receiver, require_public_url
from streams.errors import ConfigError
from streams.settings import Settings
from tests.channels.test_receipts import PUBLIC_URL, post, signed_receiver

PATH = "/twilio/status?" + urlencode({"n": "ntf-host", "c": "C4", "r": "outage-started"})
FORM = {"MessageSid": "SM" + "4" * 32, "MessageStatus": "delivered"}


def test_without_a_public_url_a_signature_for_the_host_header_s_host_is_forged():
    async def scenario():
        async with signed_receiver(public_url=None) as (signer, receiver, published):
            elsewhere = {"Host": "hooks.attacker.example"}
            signed_elsewhere = signer.twilio("http://hooks.attacker.example" + PATH, FORM)
            assert await post(receiver.url + PATH, data=FORM, headers={**signed_elsewhere, **elsewhere}) == 403
            # signed for the loopback address it listens on: taken, whatever Host says
            signed_here = signer.twilio(receiver.url + PATH, FORM)
            assert await post(receiver.url + PATH, data=FORM, headers={**signed_here, **elsewhere}) == 200
            assert [d["notification_id"] for d in published["deliveries"]] == ["ntf-host"]

    asyncio.run(scenario())


def test_with_a_public_url_only_a_signature_for_it_is_taken():
    async def scenario():
        async with signed_receiver() as (signer, receiver, published):
            proxy = {"Host": "hooks.example.nl", "X-Forwarded-Proto": "https"}
            for url in (receiver.url, "http://hooks.example.nl", "https://other.example.nl"):
                assert await post(receiver.url + PATH, data=FORM, headers={**signer.twilio(url + PATH, FORM),
                                                                           **proxy}) == 403
            assert await post(receiver.url + PATH, data=FORM, headers=signer.twilio(PUBLIC_URL + PATH, FORM)) == 200
            assert len(published["deliveries"]) == 1

    asyncio.run(scenario())


def test_a_receiver_without_a_public_url_will_not_listen_beyond_loopback():
    async def publish(*_):
        raise AssertionError("nothing is received")

    settings = dataclasses.replace(Settings(), twilio_auth_token="token", webhook_public_url=None)
    with pytest.raises(ConfigError, match="FOREWARN_WEBHOOK_PUBLIC_URL"):
        asyncio.run(Receiver(settings, publish).start(host="192.0.2.1", port=0))  # TEST-NET: never bound


@pytest.mark.parametrize("url", ["hooks.example.nl", "ftp://hooks.example.nl", "https://", "https://h.nl/?a=1",
                                 "https://h.nl:99999", "https://[::1"])
def test_a_public_url_that_twilio_could_not_have_signed_is_refused_at_start(url):
    with pytest.raises(ConfigError, match="FOREWARN_WEBHOOK_PUBLIC_URL"):
        Receiver(dataclasses.replace(Settings(), twilio_auth_token="token", webhook_public_url=url))


def test_the_loopback_flag_is_needed_without_a_public_url_and_allows_loopback_only():
    base = dataclasses.replace(Settings(), twilio_auth_token="token", webhook_public_url=None)
    with pytest.raises(ConfigError, match="FOREWARN_WEBHOOK_INSECURE_LOCAL"):
        require_public_url(base)
    require_public_url(dataclasses.replace(base, webhook_insecure_local=True))
    require_public_url(dataclasses.replace(base, webhook_insecure_local=True, webhook_host="::1"))
    with pytest.raises(ConfigError, match="loopback"):
        require_public_url(dataclasses.replace(base, webhook_insecure_local=True, webhook_host="0.0.0.0"))
    require_public_url(dataclasses.replace(base, webhook_public_url=PUBLIC_URL, webhook_host="0.0.0.0"))


def webhooks_command(tmp_path, **extra: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FOREWARN_", "TWILIO_", "SENDGRID"))}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "TWILIO_AUTH_TOKEN": "token", **extra})
    return subprocess.run([sys.executable, "-m", "streams.cli", "webhooks"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("extra, says", [({}, "FOREWARN_WEBHOOK_PUBLIC_URL"),
                                         ({"FOREWARN_WEBHOOK_INSECURE_LOCAL": "1",
                                           "FOREWARN_WEBHOOK_HOST": "0.0.0.0"}, "loopback")])
def test_forewarn_webhooks_without_a_public_url_is_one_plain_line_and_a_failed_exit(tmp_path, extra, says):
    result = webhooks_command(tmp_path, **extra)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and says in lines[0], result.stderr


def test_forewarn_webhooks_let_through_to_an_absent_kafka_says_so_without_a_traceback(tmp_path):
    result = webhooks_command(tmp_path, FOREWARN_WEBHOOK_INSECURE_LOCAL="1")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Kafka broker did not answer" in lines[-1], result.stderr
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr  # aiokafka logs one line of its own
