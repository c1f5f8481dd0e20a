"""What waits to be sent, read from the decide hop's state changelog into the console's store."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp.test_utils import TestClient, TestServer

from streams.console.store import ActivityStore, TopicRecord
from streams.console.web import ConsoleApp
from streams.core.state import CustomerState, Pending, encode_state
from streams.settings import Settings
from tests.console.test_store import TOPICS

CHANGELOG = "forewarn-states-changelog"


def state_record(offset: int, customer_id: str, state: CustomerState | None) -> TopicRecord:
    return TopicRecord(CHANGELOG, 0, offset, orjson.dumps(customer_id),
                       None if state is None else encode_state(state), 1_764_000_000_000)


def waiting(rule: str, key: str, due: str, hold: str = "wait") -> Pending:
    return Pending(rule, key, {"id": "e"}, ["e"], "o", due, due, 1, hold, due)


def test_the_latest_state_says_what_waits_and_a_tombstone_clears_it(tmp_path):
    store = ActivityStore(tmp_path / "console.sqlite3", topics=TOPICS, states_changelog=CHANGELOG)
    store.add(state_record(0, "C1", CustomerState(pending={
        "cart-reminder|K1": waiting("cart-reminder", "K1", "2026-11-25T15:12:00+01:00"),
        "order-delayed|O1": waiting("order-delayed", "O1", "2026-11-26T08:00:00+01:00", "defer")})))
    assert [(p.rule, p.key, p.due.isoformat(), p.hold) for p in store.pending("C1")] == [
        ("cart-reminder", "K1", "2026-11-25T14:12:00+00:00", "wait"),
        ("order-delayed", "O1", "2026-11-26T07:00:00+00:00", "defer")]
    store.add(state_record(1, "C1", CustomerState()))
    assert store.pending("C1") == []
    store.add(state_record(2, "C1", CustomerState(pending={"x|K": waiting("x", "K", "2026-11-27T10:00:00+01:00")})))
    store.add(state_record(3, "C1", None))
    assert store.pending("C1") == [] and store.next_offsets()[(CHANGELOG, 0)] == 4
    store.close()


def test_the_customer_page_shows_what_waits_with_its_due_time(tmp_path):
    store = ActivityStore(tmp_path / "console.sqlite3", topics=TOPICS, states_changelog=CHANGELOG)
    store.add(state_record(0, "C1", CustomerState(pending={
        "cart-reminder|K1": waiting("cart-reminder", "K1", "2026-11-25T15:12:00+01:00")})))

    async def get() -> str:
        async with TestClient(TestServer(ConsoleApp(store, Settings()).app())) as client:
            return await (await client.get("/customer/C1")).text()

    html = asyncio.run(get())
    assert "Waiting to be sent" in html and "cart-reminder" in html and "K1" in html and "waiting (a wait" in html
    store.close()
