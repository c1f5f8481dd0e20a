"""The feed (``streams.console.feed``) on the embedded broker: catch up, resume from the store's offsets, rebuild."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from streams.console.feed import Feed
from streams.console.store import ActivityStore, TopicRecord
from streams.errors import BrokerError
from streams.kafka.admin import producer
from streams.kafka.embedded import free_port
from streams.settings import Settings
from streams.tools import topic_input
from tests.console.test_store import OUTAGE, Records, outage_day


def send(bootstrap: str, records: list[TopicRecord]) -> None:
    """Each record to its own topic partition, in order."""
    sender = producer(bootstrap)
    try:
        for record in records:
            sender.send(record.topic, key=record.key, value=record.value, partition=record.partition)
        sender.flush()
    finally:
        sender.close()


def snapshot(store: ActivityStore) -> tuple:
    """Every answer the console gives about the records of ``outage_day``."""
    return (store.customer_timeline("C1"), store.customer_timeline("C2"), store.customer_timeline("C3"),
            store.outage_story(OUTAGE), store.rule_days(), store.dead_letters(), store.search("C"))


def more(day: Records) -> Records:
    """Records after ``day``'s: a dead letter, a watermark and C2 calling support."""
    later = Records(next=dict(day.next))
    later.dead("orders", 1, 5, b'{"id": "bad"}', "schema: data is required", "2026-11-25T21:00:00+01:00")
    later.put(day.made[0].topic, {"marks": [], "partitions": {}}, partition=2, key="\x00watermarks")
    later.event("evt-call-2", "support.contacted", "2026-11-25T21:05:00+01:00",
                {"channel": "chat", "topic": "outage", "outage_id": OUTAGE}, "C2")
    return later


@pytest.mark.broker
def test_catch_up_resumes_from_the_store_and_a_deleted_file_is_rebuilt_the_same(broker, settings, tmp_path: Path):
    path = tmp_path / "console.sqlite3"
    day = outage_day()
    send(broker.bootstrap, day.made)
    first = ActivityStore(path, topics=settings.topics)
    assert Feed(first, broker.bootstrap, settings).catch_up() == len(day.made) - 3  # an outage on four partitions
    assert first.next_offsets() == day.next
    assert Feed(first, broker.bootstrap, settings).catch_up() == 0
    answers = snapshot(first)
    first.close()

    again = ActivityStore(path, topics=settings.topics)  # a restart: a new store and feed on the same file
    assert Feed(again, broker.bootstrap, settings).catch_up() == 0
    assert snapshot(again) == answers
    later = more(day)
    send(broker.bootstrap, later.made)
    assert Feed(again, broker.bootstrap, settings).catch_up() == 2  # the watermark is only an offset
    assert again.next_offsets() == later.next
    assert [e.kind for e in again.customer_timeline("C2")][-1] == "contact"
    answers = snapshot(again)
    again.close()

    path.unlink()
    rebuilt = ActivityStore(path, topics=settings.topics)
    try:
        assert Feed(rebuilt, broker.bootstrap, settings).catch_up() == len(day.made) - 3 + 2
        assert snapshot(rebuilt) == answers
        assert rebuilt.next_offsets() == later.next
    finally:
        rebuilt.close()


@pytest.mark.broker
def test_run_follows_the_topics_until_stopped_and_a_missing_topic_is_empty(broker, settings, tmp_path: Path):
    absent = replace(settings, topics=replace(settings.topics, deadletter="no-dead-letters-here"))
    store = ActivityStore(tmp_path / "console.sqlite3", topics=absent.topics)
    feed = Feed(store, broker.bootstrap, absent)
    assert feed.catch_up() == 0
    stop = threading.Event()
    follower = threading.Thread(target=feed.run, args=(stop, 0.2), daemon=True)
    follower.start()
    try:
        day = outage_day()
        send(broker.bootstrap, day.made)
        deadline = time.monotonic() + 30
        while store.next_offsets() != day.next and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.next_offsets() == day.next
        assert store.outage_story(OUTAGE).told == {("sms", "premium"): 1, ("email", "premium"): 1,
                                                   ("sms", "basic"): 1}
    finally:
        stop.set()
        follower.join(timeout=10)
        store.close()
    assert not follower.is_alive()


def test_an_unreachable_broker_is_one_plain_line(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(topic_input, "CONNECT_SECONDS", 1.0)
    bootstrap = f"127.0.0.1:{free_port()}"
    store = ActivityStore(tmp_path / "console.sqlite3")
    try:
        feed = Feed(store, bootstrap, Settings.from_env())
        with pytest.raises(BrokerError) as raised:
            feed.catch_up()
        assert str(raised.value) == f"no answer from Kafka at {bootstrap} within 1 s"
        with pytest.raises(BrokerError):
            feed.run(threading.Event())
    finally:
        store.close()
