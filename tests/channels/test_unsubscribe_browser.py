"""The unsubscribe page in a real headless browser (Debian's chromium and chromedriver, through selenium).

Screenshots of the page before and after the click are kept in ``artefacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from datetime import datetime, timezone

import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from streams.channels.receipts import Receiver
from streams.core.consent import MARKETING, Scope
from streams.settings import ROOT, Settings

from tests.conftest import SCREENSHOTS


@pytest.fixture
def receiver():
    """A receiver on its own loop in a thread, its records in ``published``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    published: list[dict] = []

    async def publish(topic, key, value, partition):
        published.append({"topic": topic, **orjson.loads(value)})

    settings = dataclasses.replace(Settings(), unsubscribe_secret="browser-test-secret")
    running = asyncio.run_coroutine_threadsafe(Receiver(settings, publish).start(port=0), loop).result(10)
    try:
        yield running, published
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.mark.parametrize("locale, stops, keeps, done", [
    ("nl", "winkelwagen", "storingen", "Je bent afgemeld"),
    ("en", "shopping cart", "outages", "You are unsubscribed"),
])
def test_the_page_says_what_stops_and_what_goes_on_and_the_button_unsubscribes(browser, receiver, locale, stops,
                                                                              keeps, done):
    running, published = receiver
    token = running.links.token("C1014", Scope("email", MARKETING), locale, datetime.now(timezone.utc))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{running.url}/unsubscribe/{token}")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == locale
    assert stops in browser.find_element(By.ID, "stops").text
    assert keeps in browser.find_element(By.ID, "keeps").text
    browser.save_screenshot(str(SCREENSHOTS / f"unsubscribe-{locale}.png"))
    assert published == []  # showing the page changes nothing

    browser.find_element(By.ID, "unsubscribe").click()
    WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located((By.ID, "done")))
    assert browser.find_element(By.ID, "done").text == done
    browser.save_screenshot(str(SCREENSHOTS / f"unsubscribed-{locale}.png"))
    [record] = published
    assert record["topic"] == "consent" and record["customer_id"] == "C1014"
    assert [(s["channel"], s["category"], s["allow"]) for s in record["statements"]] == [("email", "marketing", False)]
    assert (SCREENSHOTS / f"unsubscribed-{locale}.png").stat().st_size > 5_000
