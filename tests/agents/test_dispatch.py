"""The dispatch hop with fakes: marks before sends, one send per id, dead letters, parking and the retry round."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, ClassVar

import orjson

from streams.agents.contain import Poison
from streams.agents.dispatch import Dispatch, GuardedSends
from streams.channels.base import Channel, Handover
from streams.channels.courier import Courier
from streams.channels.ledger import DONE
from streams.channels.outbox import OutboxChannel
from streams.errors import ChannelUnavailable
from streams.kafka.sends import Sends
from streams.settings import Settings
from tests.channels.support import notification
from tests.fakes import FakeProducer, Offsets, fake_pipeline


class Down(Channel):
    """A provider that never takes a message now."""

    provider: ClassVar[str] = "down"
    channels: ClassVar[tuple[str, ...]] = ("sms",)

    def __init__(self) -> None:
        self.tried = 0

    async def send(self, notification: dict[str, Any]) -> Handover:
        self.tried += 1
        raise ChannelUnavailable("connection refused")


class Hop:
    def __init__(self, channels: dict[str, Channel], poison: Poison | None = None, **settings: Any):
        self.pipeline = fake_pipeline(dataclasses.replace(Settings(), **settings))
        self.producer = FakeProducer(auto_ack=True)
        courier = Courier(channels, attempts=1, backoff_base=0.0)
        self.hop = Dispatch(self.pipeline, courier,
                            GuardedSends(self.pipeline, courier, Sends(lambda: self.producer)),
                            GuardedSends(self.pipeline, courier, Sends(lambda: self.producer)), lambda: 4, poison)
        self.offsets = Offsets()
        self.topics = self.pipeline.settings.topics
        self.loop = asyncio.new_event_loop()

    def window(self, *values: bytes, retry: bool = False) -> None:
        topic = self.topics.retry if retry else self.topics.notifications
        events = [self.offsets.event(topic, 0, value) for value in values]
        self.loop.run_until_complete((self.hop.retry_window if retry else self.hop.window)(events))

    def on(self, topic: str) -> list[dict]:
        return [record.json() for record in self.producer.on(topic)]


def test_a_notification_is_marked_sending_before_it_is_sent_and_recorded_once_done(tmp_path):
    outbox = OutboxChannel(tmp_path)
    hop = Hop({"sms": outbox, "email": outbox})
    sms = notification(1)
    hop.window(orjson.dumps(sms))
    lines = (tmp_path / "notifications.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == [sms["id"]]
    [delivery] = hop.on(hop.topics.deliveries)
    assert (delivery["notification_id"], delivery["provider"]) == (sms["id"], "outbox")
    topics = hop.producer.topics()
    ledger = "forewarn-dispatched-changelog"
    assert topics.index(ledger) < topics.index(hop.topics.deliveries)  # the mark first
    assert topics[-1] == ledger  # then "done", after the delivery record
    assert hop.hop.first.ledger.get(sms["id"]).state == DONE


def test_a_notification_sent_before_is_not_sent_again(tmp_path):
    outbox = OutboxChannel(tmp_path)
    hop = Hop({"sms": outbox, "email": outbox})
    sms = orjson.dumps(notification(1))
    hop.window(sms, sms)  # twice in one window
    hop.window(sms)  # and again later, re-delivered
    assert len((tmp_path / "notifications.jsonl").read_bytes().splitlines()) == 1
    assert len(hop.on(hop.topics.deliveries)) == 1


def test_what_is_no_notification_is_dead_lettered(tmp_path):
    outbox = OutboxChannel(tmp_path)
    hop = Hop({"sms": outbox, "email": outbox})
    hop.window(b"not json", orjson.dumps({"id": "x", "channel": "pigeon"}))
    assert [d["offset"] for d in hop.on(hop.topics.deadletter)] == [0, 1]
    assert hop.on(hop.topics.deliveries) == []


def test_a_spent_retry_budget_parks_and_the_retry_round_dead_letters_what_still_fails_after_park_for():
    down = Down()
    hop = Hop({"sms": down}, retry_delay=0.0)
    hop.hop.park_for = 0.0
    sms = notification(1)
    hop.window(orjson.dumps(sms))
    [parked] = hop.on(hop.topics.retry)
    assert parked["notification"]["id"] == sms["id"] and parked["retry_at"] > 0 and parked["reason"]
    assert hop.on(hop.topics.deadletter) == []
    hop.window(hop.producer.on(hop.topics.retry)[0].value, retry=True)
    [dead] = hop.on(hop.topics.deadletter)
    assert dead["reason"].startswith("undeliverable for")
    assert down.tried == 2
    assert [d["status"] for d in hop.on(hop.topics.deliveries)] == ["parked", "parked"]


def test_a_notification_the_outbox_cannot_write_is_parked_again_and_again_and_sent_once_the_disk_has_room(tmp_path):
    outbox = OutboxChannel(tmp_path)
    hop = Hop({"sms": outbox, "email": outbox}, retry_delay=0.0)
    kept = tmp_path / "kept"
    (tmp_path / "notifications.jsonl").touch()
    (tmp_path / "notifications.jsonl").rename(kept)
    (tmp_path / "notifications.jsonl").symlink_to("/dev/full")
    sms = notification(1)
    hop.window(orjson.dumps(sms))
    for _ in range(3):  # the disk stays full: parked again each round, never dropped, never dead
        hop.window(hop.producer.on(hop.topics.retry)[-1].value, retry=True)
    assert len(hop.on(hop.topics.retry)) == 4 and hop.on(hop.topics.deadletter) == []
    (tmp_path / "notifications.jsonl").unlink()
    kept.rename(tmp_path / "notifications.jsonl")
    hop.window(hop.producer.on(hop.topics.retry)[-1].value, retry=True)
    assert [orjson.loads(line)["id"] for line in (tmp_path / "notifications.jsonl").read_bytes().splitlines()] \
        == [sms["id"]]
    assert [d["status"] for d in hop.on(hop.topics.deliveries)][-1] == "sent"
    assert len(hop.on(hop.topics.retry)) == 4


class Broken(Channel):
    """A channel with a bug: it raises what no channel should."""

    provider: ClassVar[str] = "broken"
    channels: ClassVar[tuple[str, ...]] = ("sms",)

    async def send(self, notification: dict[str, Any]) -> Handover:
        raise KeyError("sid")


def test_a_channel_that_raises_something_unexpected_leaves_the_outcome_unknown_and_the_notification_parked():
    hop = Hop({"sms": Broken()}, retry_delay=0.0)
    hop.window(orjson.dumps(notification(1)))
    [parked] = hop.on(hop.topics.retry)
    assert "unexpected KeyError" in parked["unknown"]
    assert [d["status"] for d in hop.on(hop.topics.deliveries)] == ["parked"]


def test_a_poisoned_notification_is_dead_lettered_and_the_rest_of_its_window_is_sent(tmp_path):
    outbox = OutboxChannel(tmp_path)
    hop = Hop({"sms": outbox, "email": outbox}, poison=Poison("dispatch:POISON"))
    first, poisoned, last = notification(1), notification(2, body="POISON"), notification(3)
    hop.window(*(orjson.dumps(n) for n in (first, poisoned, last)))
    [dead] = hop.on(hop.topics.deadletter)
    assert dead["hop"] == "dispatch" and dead["offset"] == 1 and dead["reason"].startswith("dispatch: InjectedFault")
    written = [orjson.loads(line)["id"] for line in (tmp_path / "notifications.jsonl").read_bytes().splitlines()]
    assert written == [first["id"], last["id"]]


def test_a_customer_who_opted_out_since_the_decision_is_not_sent_to_and_that_is_recorded(tmp_path):
    from streams.core.consent import PreferenceBook, Scope, Statement

    outbox = OutboxChannel(tmp_path)
    hop = Hop({"sms": outbox, "email": outbox})
    book = hop.hop.preferences = PreferenceBook()
    stopped, marketing, service = notification(1), notification(2, "email", category="marketing"), notification(3)
    book.state(stopped["customer_id"], [Statement(Scope("sms"), False, "2026-12-03T18:00:00+00:00", "sms-stop")])
    book.from_crm(service["customer_id"], {"sms": True, "email": True}, "2026-01-01T00:00:00+00:00")
    hop.window(*(orjson.dumps(n) for n in (stopped, marketing, service)))
    sent = [orjson.loads(line)["id"] for line in (tmp_path / "notifications.jsonl").read_bytes().splitlines()]
    assert sent == [service["id"]]
    assert sorted((s["customer_id"], s["reason"]) for s in hop.on(hop.topics.suppressed)) == [
        (stopped["customer_id"], "opted_out"), (marketing["customer_id"], "no_marketing_consent")]
    assert all("withheld at dispatch" in s["detail"] for s in hop.on(hop.topics.suppressed))
