"""After the demo, the console in a real headless browser (Debian's chromium through selenium).

The demo runs on a real worker and the embedded broker; the console's store catches up from the
topics. Screenshots are kept in ``artefacts/screenshots/`` and linked from the README.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp import web
from selenium.webdriver.common.by import By

from streams.console.feed import Feed
from streams.console.store import ActivityStore
from streams.console.web import ConsoleApp
from streams.kafka.embedded import free_port
from streams.tools.load_customers import load_customers
from tests.conftest import SCREENSHOTS
from tests.integration.test_pipeline import DEMO, drain, replay

pytestmark = pytest.mark.broker
OUTAGE_CUSTOMER = "C1004"  # in the outage area; the CRM has her no to marketing email: her cart reminder is held


@pytest.fixture
def console_url(broker, settings, start_worker, tmp_path):
    """The demo through a worker, then the console over a store caught up from the topics."""
    worker = start_worker()
    load_customers(broker.bootstrap, settings.topics.customers, DEMO / "customers.jsonl")
    drain(broker, settings, start_worker.app_id, worker)
    replay(broker.bootstrap, settings, DEMO.joinpath("events.jsonl").read_bytes().splitlines())
    drain(broker, settings, start_worker.app_id, worker)
    store = ActivityStore(tmp_path / "console.sqlite3", topics=settings.topics)
    Feed(store, broker.bootstrap, settings).catch_up()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(ConsoleApp(store, settings).app())
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        store.close()


def rows(browser) -> list[dict[str, str]]:
    found = []
    for row in browser.find_elements(By.CSS_SELECTOR, "#timeline tr[data-kind]"):
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        found.append({"kind": row.get_attribute("data-kind"), "rule": cells[2], "channel": cells[3],
                      "to": cells[4], "text": cells[5], "outcome": cells[6]})
    return found


def test_an_outage_customers_page_shows_notice_update_all_clear_with_delivery_and_the_held_reminder(
        browser, console_url):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, 1400)
    browser.get(f"{console_url}/customer/{OUTAGE_CUSTOMER}")
    seen = rows(browser)
    sent = {row["rule"]: row for row in seen if row["kind"] == "sent"}
    assert {"outage-started", "outage-updated", "outage-resolved"} <= set(sent), seen
    for rule in ("outage-started", "outage-updated", "outage-resolved"):
        assert sent[rule]["outcome"] in ("delivered", "sent", "accepted", "written"), sent[rule]
        assert "@" not in sent[rule]["to"] or "***" in sent[rule]["to"]
    held = [row for row in seen if row["kind"] == "held" and row["rule"] == "cart-reminder"]
    assert held and "opted_out" in held[0]["outcome"], seen  # the CRM has her no to marketing email
    browser.save_screenshot(str(SCREENSHOTS / "console-customer.png"))
    browser.get(f"{console_url}/outage/OUT-20261125-01")
    assert "Told, per channel and tier" in browser.page_source
    browser.save_screenshot(str(SCREENSHOTS / "console-outage.png"))
    browser.get(f"{console_url}/rules")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    browser.save_screenshot(str(SCREENSHOTS / "console-rules.png"))
