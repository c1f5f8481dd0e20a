"""The receiver's consent endpoints: SMS keywords through Twilio's signed webhook, and the unsubscribe link."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import aiohttp
import orjson
import pytest

from streams.channels.optouts import INBOUND_PATH, keyword_change
from streams.channels.receipts import Receiver
from streams.core.consent import MARKETING, Scope
from streams.core.events import Schemas
from streams.core.unsubscribe import ONE_CLICK, UnsubscribeLinks
from streams.errors import UnsubscribeRefused
from streams.settings import Settings
from streams.tools.imitation import Imitation

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=timezone.utc)
PHONE = "+31612345678"


@pytest.mark.parametrize("body, allow", [
    ("STOP", False), (" stop! ", False), ("Stop.", False), ("AFMELDEN", False), ("afmelden", False),
    ("UITSCHRIJVEN", False), ("STOPALL", False), ("unsubscribe", False), ("CANCEL", False), ("END", False),
    ("QUIT", False), ("START", True), ("unstop", True), ("Aanmelden", True),
    ("stop met die berichten", None), ("Is de storing voorbij?", None), ("", None), ("STOPP", None),
])
def test_only_a_message_that_is_one_keyword_changes_anything(body, allow):
    change = keyword_change(PHONE, body, NOW, "SM1")
    if allow is None:
        assert change is None
    else:
        [statement] = change.statements
        assert (change.phone, statement.scope, statement.allow, statement.source) == (PHONE, Scope("sms"), allow,
                                                                                      "sms-stop")


def test_a_token_holds_its_customer_scope_and_language_until_it_expires():
    links = UnsubscribeLinks("secret", "https://hooks.example.nl", "unsubscribe@example.nl", timedelta(days=90))
    token = links.token("C1", Scope("email", MARKETING), "en", NOW)
    ticket = links.read(token, NOW + timedelta(days=89))
    assert (ticket.customer_id, ticket.scope, ticket.locale) == ("C1", Scope("email", MARKETING), "en")
    assert token == links.token("C1", Scope("email", MARKETING), "en", NOW)  # the simulator writes the same link
    with pytest.raises(UnsubscribeRefused, match="expired") as expired:
        links.read(token, NOW + timedelta(days=91))
    assert expired.value.ticket.customer_id == "C1"
    other = UnsubscribeLinks("another", "https://x", "u@x", timedelta(days=90))
    for forged in (other.token("C1", Scope("email", MARKETING), "nl", NOW), token[:-2] + "xx", "C2", ""):
        with pytest.raises(UnsubscribeRefused, match="not a valid"):
            links.read(forged, NOW)
    headers = links.headers("C1", Scope("email", MARKETING), "nl", NOW).as_email_headers()
    dutch = links.token("C1", Scope("email", MARKETING), "nl", NOW)
    assert headers == {"List-Unsubscribe": f"<https://hooks.example.nl/unsubscribe/{dutch}>, "
                                           f"<mailto:unsubscribe@example.nl?subject=unsubscribe%20{dutch}>",
                       "List-Unsubscribe-Post": ONE_CLICK}


@asynccontextmanager
async def receiver(fail: bool = False):
    """The imitation (Twilio's side) and a receiver whose records land in ``published``."""
    published: list[tuple[str, bytes, dict, int | None]] = []

    async def publish(topic, key, value, partition):
        if fail:
            raise ConnectionError("Kafka is away")
        published.append((topic, key, orjson.loads(value), partition))

    async with Imitation(post_callbacks=False) as fake:
        settings = dataclasses.replace(Settings(), twilio_auth_token=fake.auth_token,
                                       unsubscribe_secret="tests-secret")
        running = await Receiver(settings, publish).start(port=0)
        try:
            yield fake, running, published
        finally:
            await running.stop()


def test_stop_by_sms_goes_to_every_partition_and_forgeries_and_replays_do_not():
    async def scenario():
        async with receiver() as (fake, running, published):
            url = running.url + INBOUND_PATH
            assert (await fake.reply(url, PHONE, "Stop"))[0] == 200
            partitions = Settings().partitions
            assert [(t, k, p) for t, k, _, p in published] == [("consent", PHONE.encode(), p)
                                                               for p in range(partitions)]
            assert Schemas().problems("consent.json", published[0][2]) == []
            published.clear()
            assert (await fake.reply(url, PHONE, "START", signed=False))[0] == 403
            assert (await fake.reply(url, PHONE, "hoe lang duurt het nog?"))[0] == 200  # a reply, not a keyword
            assert published == []
            # The same signed request twice: the second is a replay.
            params = {"From": PHONE, "Body": "STOP", "MessageSid": "SM42", "To": fake.twilio_from}
            headers = {"X-Twilio-Signature": fake.validator.compute_signature(url, params)}
            async with aiohttp.ClientSession() as session:
                statuses = []
                for _ in range(2):
                    async with session.post(url, data=params, headers=headers) as response:
                        statuses.append(response.status)
            assert statuses == [200, 403] and len(published) == partitions

    asyncio.run(scenario())


def test_the_unsubscribe_link_shows_a_page_and_a_post_unsubscribes_at_once():
    async def scenario():
        async with receiver() as (_, running, published):
            links = running.links
            now = datetime.now(timezone.utc)
            token = links.token("C7", Scope("email", MARKETING), "nl", now)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{running.url}/unsubscribe/{token}") as page:
                    text = await page.text()
                    assert page.status == 200 and "Afmelden" in text and "winkelwagen" in text
                    assert "storingen" in text and 'method="post"' in text
                assert published == []  # looking is not unsubscribing (mail scanners follow links)
                async with session.post(f"{running.url}/unsubscribe/{token}", data=ONE_CLICK,
                                        headers={"Content-Type": "application/x-www-form-urlencoded"}) as done:
                    assert done.status == 200 and "Je bent afgemeld" in await done.text()
                expired = links.token("C7", Scope("email", MARKETING), "en", now - timedelta(days=91))
                async with session.post(f"{running.url}/unsubscribe/{expired}", data=ONE_CLICK) as old:
                    assert old.status == 410 and "expired" in await old.text()
                async with session.get(f"{running.url}/unsubscribe/{token[:-3]}abc") as forged:
                    assert forged.status == 400
            [(topic, key, record, partition)] = published
            [statement] = record["statements"]
            assert (topic, key, record["customer_id"]) == ("consent", b"C7", "C7")
            assert (statement["channel"], statement["category"], statement["allow"], statement["source"]) == (
                "email", "marketing", False, "unsubscribe-link")

    asyncio.run(scenario())


def test_an_unsubscribe_kafka_does_not_take_asks_to_try_again():
    async def scenario():
        async with receiver(fail=True) as (_, running, published):
            token = running.links.token("C7", Scope("email", MARKETING), "nl", datetime.now(timezone.utc))
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{running.url}/unsubscribe/{token}", data=ONE_CLICK) as response:
                    assert response.status == 503

    asyncio.run(scenario())


def test_a_marketing_email_carries_one_click_unsubscribe_through_the_sendgrid_sdk():
    from tests.channels.support import notification, providers

    links = UnsubscribeLinks("secret", "https://hooks.example.nl", "unsubscribe@example.nl", timedelta(days=90))
    headers = links.headers("C1", Scope("email", MARKETING), "nl", NOW).as_email_headers()

    async def scenario():
        async with providers() as (fake, _, email):
            await email.send(notification(1, "email", category="marketing", unsubscribe=headers))
            await email.send(notification(2, "email", category="service"))
            marketing, service = fake.accepted
            assert marketing.headers == headers and service.headers is None

    asyncio.run(scenario())
