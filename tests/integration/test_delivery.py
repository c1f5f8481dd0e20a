"""A real worker sends through the real SDKs to the provider imitation; receipts come back signed.

Notifications are put on ``notifications`` directly (decide is tested elsewhere).
Completion is read from the imitation, not from consumer lag: after a batched
produce the embedded broker reports a partition's end offset as 1, which makes
``wait_drained`` return as soon as anything is committed.
Counted from the imitation's record: each deliverable message taken exactly
once; refusals, opt-outs, fallbacks and receipts land on their topics; no
phone number or address in the worker's log.
"""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest

from streams.kafka.admin import produce_json, read_topic
from streams.tools.local_providers import LocalProviders
from tests.channels.support import notification

pytestmark = pytest.mark.broker


def records(bootstrap: str, topic: str) -> list[dict]:
    return [orjson.loads(m.value) for m in read_topic(bootstrap, topic)]


def taken_ids(imitation) -> set[str]:
    return {a.notification_id for a in imitation.accepted}


def wait_for(check, timeout: float = 90.0) -> None:  # generous: a loaded CI machine, it returns when done
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_a_worker_delivers_through_the_providers_and_receipts_come_back(broker, settings, start_worker):
    topics = settings.topics
    with LocalProviders(settings, broker.bootstrap, sms_rate=100, email_rate=100) as local:
        fake = local.imitation
        worker = start_worker(**local.env, FOREWARN_SMS_RATE="40", FOREWARN_EMAIL_RATE="40",
                              FOREWARN_DISPATCH_WINDOW="16")
        sms = [notification(i, "sms", fallback=["email"]) for i in range(30)]
        emails = [notification(i, "email") for i in range(100, 130)]
        stopped, lost, bounced = sms[0], sms[1], emails[2]
        fake.reject(stopped["to"], 21610)
        fake.undeliverable(lost["to"], "undelivered", 30003)
        fake.bounce(bounced["to"], "bounce")
        produce_json(broker.bootstrap, topics.notifications,
                     [(n["customer_id"], orjson.dumps(n)) for n in sms + emails])
        deliverable = {n["id"] for n in sms + emails} - {stopped["id"]}
        wait_for(lambda: taken_ids(fake) >= deliverable or not worker.running, timeout=90)
        wait_for(lambda: len(records(broker.bootstrap, topics.deliveries)) >= len(sms + emails))
        taken = Counter(a.notification_id for a in fake.accepted)
        assert set(taken) == deliverable, worker.log()[-3000:]
        assert max(taken.values()) == 1

        def receipts_in() -> bool:
            final = {(d["notification_id"], d["status"]) for d in records(broker.bootstrap, topics.deliveries)}
            return {(n["id"], "delivered") for n in sms[2:] + emails if n is not bounced} <= final

        wait_for(receipts_in)
        deliveries = records(broker.bootstrap, topics.deliveries)
        by_status = Counter(d["status"] for d in deliveries)
        assert by_status["queued"] == 59 and by_status["failed"] == 2 and by_status["undelivered"] == 1
        refused = next(d for d in deliveries if d["notification_id"] == stopped["id"])
        assert refused["status"] == "failed" and "21610" in refused["error"]

        optouts = records(broker.bootstrap, topics.consent)
        assert [(o["customer_id"], [(s["channel"], s["allow"], s["source"]) for s in o["statements"]])
                for o in optouts] == [(stopped["customer_id"], [("sms", False, "provider")])]
        wait_for(lambda: len(records(broker.bootstrap, topics.fallbacks)) == 2)
        fallbacks = records(broker.bootstrap, topics.fallbacks)
        assert sorted(f["notification_id"] for f in fallbacks) == sorted([stopped["id"], lost["id"]])
        assert records(broker.bootstrap, topics.retry) == []

    log = worker.log()
    assert "Traceback" not in log
    for n in sms + emails:
        assert n["to"] not in log


def test_a_worker_killed_mid_window_sends_nothing_twice_when_it_comes_back(broker, settings, start_worker):
    """SIGKILL while a window is being sent: the rest is sent after the restart, and nothing twice.

    The window's messages were marked ``sending`` before the kill; the new worker asks the provider
    about those before it sends them.
    """
    topics = settings.topics
    window, rate = 20, 25
    with LocalProviders(settings, broker.bootstrap, post_callbacks=False) as local:
        env = {**local.env, "FOREWARN_SMS_RATE": str(rate), "FOREWARN_DISPATCH_WINDOW": str(window)}
        first = start_worker(**env)
        sms = [notification(i, "sms") for i in range(150)]
        produce_json(broker.bootstrap, topics.notifications, [(n["customer_id"], orjson.dumps(n)) for n in sms])
        wait_for(lambda: len(local.imitation.accepted) >= 40, timeout=60)
        first.kill()
        before = len(local.imitation.accepted)
        start_worker(**env)
        wait_for(lambda: taken_ids(local.imitation) >= {n["id"] for n in sms}, timeout=90)  # none lost
        time.sleep(2)  # anything sent twice would be in by now
        taken = Counter(a.notification_id for a in local.imitation.accepted)
        assert set(taken) == {n["id"] for n in sms}
        assert max(taken.values()) == 1, {k: v for k, v in taken.items() if v > 1}
        assert before < len(sms)  # the kill did come mid-send
