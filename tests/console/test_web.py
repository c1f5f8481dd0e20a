"""The console's pages over a real store: what each shows, masking and reveal, the token, re-drive."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.console.store import ActivityStore
from streams.console.web import ConsoleApp, Redrive, require_token
from streams.core.cost import Costs
from streams.errors import ConfigError
from streams.settings import Settings
from tests.console.test_store import OUTAGE, TOPICS, outage_day

COSTS = Costs.parse({"currency": "EUR", "sms": {"+31": 0.085, "default": 0.1}, "email": 0.001})


class FakeRedrive:
    """Records what it was asked to send; refuses what ``refuse`` names."""

    def __init__(self, refuse: str | None = None):
        self.sent: list = []
        self.refuse = refuse

    def redrive(self) -> Redrive:
        return Redrive(lambda entry: self.refuse, self.sent.append)


@pytest.fixture
def store(tmp_path):
    opened = ActivityStore(tmp_path / "console.sqlite3", topics=TOPICS)
    records = outage_day()
    records.dead("orders", 0, 17, b'{"id": "bad", "type": "order.placed"}', "data: 'order_id' is a required property",
                 "2026-11-25T13:20:00+01:00")
    opened.add_many(records.made)
    yield opened
    opened.close()


def fetch(app: ConsoleApp, *requests: tuple[str, str, dict]) -> list[tuple[int, str, dict]]:
    """Each (method, path, options) against the app on a real local server; (status, text, cookies)."""
    async def run() -> list[tuple[int, str, dict]]:
        async with TestClient(TestServer(app.app())) as client:
            answers = []
            for method, path, options in requests:
                response = await client.request(method, path, allow_redirects=False, **options)
                answers.append((response.status, await response.text(), dict(response.cookies)))
            return answers
    return asyncio.run(run())


def page(app: ConsoleApp, path: str, **options) -> str:
    [(status, text, _)] = fetch(app, ("GET", path, options))
    assert status == 200, text
    return text


def test_the_customer_page_shows_sent_held_back_and_delivery_with_addresses_masked(store, caplog):
    app = ConsoleApp(store, Settings())
    html = page(app, "/customer/C1")
    assert "Storing internet in uw buurt." in html and "Nieuwe verwachting: 20:00." in html and "Opgelost." in html
    assert "delivered" in html and "no_marketing_consent" in html and "held back" in html
    assert "+31612345678" not in html and "anna@example.nl" not in html and "+316" in html
    with caplog.at_level(logging.WARNING, logger="forewarn.console"):
        revealed = page(app, "/customer/C1?reveal=1")
    assert "+31612345678" in revealed and "anna@example.nl" in revealed
    assert any("customer C1 revealed" in r.getMessage() for r in caplog.records)
    assert all("+31612345678" not in r.getMessage() for r in caplog.records)


def test_the_outage_page_tells_the_story(store):
    html = page(ConsoleApp(store, Settings()), f"/outage/{OUTAGE}")
    assert "Told, per channel and tier" in html and "<svg" in html
    assert "outage.resolved" in html and "no_consent" in html and "1 delivery failure(s)" in html


def test_the_rules_page_charts_each_rule_per_day_with_its_cost(store):
    html = page(ConsoleApp(store, Settings(), costs=COSTS), "/rules")
    assert 'id="rule-outage-started"' in html and "<svg" in html and "2026-11-25" in html
    assert "Cost: EUR" in html


def test_search_finds_a_customer_by_phone_and_an_outage_by_id(store):
    app = ConsoleApp(store, Settings())
    (by_phone, _, _), (by_outage, _, _) = fetch(app, ("GET", "/search?q=0612345678", {}),
                                                ("GET", f"/search?q={OUTAGE}", {}))
    assert by_phone == 302 and by_outage == 302


def test_a_dead_letter_is_re_driven_once_with_who_did_it(store, caplog):
    fake = FakeRedrive()
    app = ConsoleApp(store, Settings(), fake.redrive())
    assert "data: &#39;order_id&#39; is a required property" in page(app, "/deadletters")
    form = {"data": {"topic": "orders", "partition": "0", "offset": "17", "who": "Femke"}}
    (status, _, _), (again, _, _) = fetch(app, ("POST", "/deadletters/redrive", form),
                                          ("POST", "/deadletters/redrive", form))
    assert status == again == 303 and len(fake.sent) == 1
    assert store.dead_letter("orders", 0, 17).redriven_by == "Femke"
    assert "re-driven by Femke" in page(app, "/deadletters")


def test_a_dead_letter_that_would_fail_again_is_not_re_driven(store):
    fake = FakeRedrive(refuse="it would be refused again")
    app = ConsoleApp(store, Settings(), fake.redrive())
    form = {"data": {"topic": "orders", "partition": "0", "offset": "17", "who": "Femke"}}
    fetch(app, ("POST", "/deadletters/redrive", form))
    assert fake.sent == [] and store.dead_letter("orders", 0, 17).redriven_by is None


def test_with_a_token_nothing_shows_without_it_and_the_query_token_becomes_a_cookie(store):
    app = ConsoleApp(store, replace(Settings(), console_token="s3cret"))
    (without, _, _), (wrong, _, _), (with_token, _, cookies) = fetch(
        app, ("GET", "/customer/C1", {}), ("GET", "/customer/C1?token=nope", {}),
        ("GET", "/customer/C1?token=s3cret", {}))
    assert without == wrong == 401 and with_token == 200 and "forewarn_console" in cookies
    [(bearer, _, _)] = fetch(app, ("GET", "/rules", {"headers": {"Authorization": "Bearer s3cret"}}))
    assert bearer == 200


def test_the_console_off_loopback_needs_a_token():
    with pytest.raises(ConfigError, match="FOREWARN_CONSOLE_TOKEN"):
        require_token(replace(Settings(), console_host="0.0.0.0"))
    require_token(replace(Settings(), console_host="0.0.0.0", console_token="s3cret"))
    require_token(Settings())
