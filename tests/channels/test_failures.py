"""Provider trouble: 429 storms, outages, hangs, permanent refusals, opt-outs and fallbacks.

Counted from the imitation's own record: every message taken exactly once, none lost.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime

import pytest

from streams.channels.courier import Courier
from streams.metrics import UNKNOWN_OUTCOMES
from streams.core.events import Schemas
from tests.channels.support import dispatch_all, notification, providers


def exactly_once(fake, notifications) -> None:
    taken = Counter(a.notification_id for a in fake.accepted)
    wanted = {n["id"] for n in notifications}
    assert set(taken) == wanted, f"missing {len(wanted - set(taken))}, unexpected {len(set(taken) - wanted)}"
    assert [nid for nid, count in taken.items() if count > 1] == []


def unknown_count(provider: str, resolution: str) -> float:
    return UNKNOWN_OUTCOMES.labels(provider, resolution)._value.get()


def test_a_429_storm_is_waited_out_and_every_message_goes_once():
    async def scenario():
        async with providers() as (fake, sms, email):
            fake.throttle(40, retry_after=1)  # per provider: 80 answers of 429 in a row
            notifications = [notification(i, "sms" if i % 2 else "email") for i in range(300)]
            outcomes = await dispatch_all(Courier({"sms": sms, "email": email}, backoff_base=0.1), notifications)
            assert {o.delivery["status"] for o in outcomes} == {"queued"}
            assert fake.stats["twilio"]["throttled"] + fake.stats["sendgrid"]["throttled"] == 80
            exactly_once(fake, notifications)

    asyncio.run(scenario())


def test_a_provider_slower_than_configured_answers_429_and_its_reset_is_honoured():
    async def scenario():
        # We think we may send 200 a second; the account allows 40. SendGrid says when to come back.
        async with providers(email_per_second=200, email_rate=40, burst=5) as (fake, sms, email):
            notifications = [notification(i, "email") for i in range(60)]
            outcomes = await dispatch_all(Courier({"sms": sms, "email": email}, backoff_base=0.1), notifications)
            assert {o.delivery["status"] for o in outcomes} == {"queued"}
            assert fake.stats["sendgrid"]["throttled"] > 0
            exactly_once(fake, notifications)

    asyncio.run(scenario())


async def outage_during_send(messages: int, outage: float, rate: float, attempts: int = 10) -> None:
    async with providers(sms_per_second=rate, email_per_second=rate) as (fake, sms, email):
        notifications = [notification(i, "sms" if i % 2 else "email") for i in range(messages)]
        # The outage starts once a fifth has been taken, however fast the machine is today. Half of what
        # arrives during it is taken all the same: the answer is a 503 either way.
        async def outage_after_a_fifth() -> None:
            while len(fake.accepted) < messages // 5:
                await asyncio.sleep(0.005)
            fake.outage(outage, accept=0.5)

        starting = asyncio.get_running_loop().create_task(outage_after_a_fifth())
        found_before = unknown_count("twilio", "found") + unknown_count("sendgrid", "found")
        resent_before = unknown_count("twilio", "resent") + unknown_count("sendgrid", "resent")
        outcomes = await dispatch_all(Courier({"sms": sms, "email": email}, attempts=attempts), notifications)
        assert starting.done(), "the outage never started: the check below would prove nothing"
        assert {o.delivery["status"] for o in outcomes} == {"queued"}
        exactly_once(fake, notifications)
        found = unknown_count("twilio", "found") + unknown_count("sendgrid", "found") - found_before
        resent = unknown_count("twilio", "resent") + unknown_count("sendgrid", "resent") - resent_before
        assert found > 0 and resent > 0  # both ways out of an unknown outcome happened, and were counted
        resolved = [o.delivery["error"] for o in outcomes if o.delivery["error"]]
        assert len(resolved) == found + resent
        assert all(e.startswith("resolved: outcome unknown") for e in resolved)
        assert [p for o in outcomes[:50] for p in Schemas().problems("delivery.json", o.delivery)] == []


def test_a_5s_outage_during_a_500_message_send_loses_nothing_and_doubles_nothing():
    asyncio.run(outage_during_send(500, outage=5.0, rate=200))


@pytest.mark.slow
def test_a_60s_outage_during_a_5000_message_send_loses_nothing_and_doubles_nothing():
    asyncio.run(outage_during_send(5000, outage=60.0, rate=200))


def test_a_send_that_hangs_is_looked_up_before_it_is_sent_again():
    async def scenario():
        async with providers(timeout=0.5) as (fake, sms, email):
            fake.hang(3, provider="twilio", accept=True)
            fake.hang(3, provider="sendgrid", accept=False)
            notifications = [notification(i, "sms" if i < 3 else "email") for i in range(6)]
            outcomes = await Courier({"sms": sms, "email": email}, backoff_base=0.1).deliver_all(notifications)
            errors = [o.delivery["error"] for o in outcomes]
            assert all("found at twilio, not sent again" in e for e in errors[:3])
            assert all("not found at sendgrid, sent again" in e for e in errors[3:])
            exactly_once(fake, notifications)

    asyncio.run(scenario())


def test_a_spent_retry_budget_parks_and_the_next_round_still_looks_up_first():
    async def scenario():
        async with providers() as (fake, sms, email):
            fake.outage(60, provider="twilio", accept=1.0)
            courier = Courier({"sms": sms, "email": email}, attempts=3, backoff_base=0.05)
            first = await courier.deliver(notification(1))
            assert first.parked and first.unknown and first.delivery["status"] == "parked"
            assert "retry budget" in first.delivery["error"]
            assert Schemas().problems("delivery.json", first.delivery) == []
            fake.heal()
            again = await courier.deliver(first.notification, since=datetime.fromisoformat(first.since),
                                             unknown=first.unknown)
            assert again.delivery["status"] == "queued" and "found at twilio" in again.delivery["error"]
            exactly_once(fake, [notification(1)])

    asyncio.run(scenario())


def test_permanent_refusals_are_not_retried_and_an_unsubscribe_is_an_opt_out():
    async def scenario():
        async with providers() as (fake, sms, email):
            invalid, landline, stopped = notification(1), notification(2, fallback=["email"]), notification(3)
            bad_address = notification(4, "email", to="klant4@example.nl", fallback=["sms"])
            fake.reject(invalid["to"], 21211)
            fake.reject(landline["to"], 21614)
            fake.reject(stopped["to"], 21610)
            fake.reject(bad_address["to"], 400)
            outcomes = await Courier({"sms": sms, "email": email}).deliver_all(
                [invalid, landline, stopped, bad_address])
            assert [o.delivery["status"] for o in outcomes] == ["failed"] * 4
            assert [o.delivery["attempts"] for o in outcomes] == [1] * 4
            assert fake.stats["twilio"]["rejected"] == 3 and fake.stats["sendgrid"]["rejected"] == 1
            assert "21211" in outcomes[0].delivery["error"] and "21614" in outcomes[1].delivery["error"]
            assert [o.optout is not None for o in outcomes] == [False, False, True, False]
            assert outcomes[2].optout["customer_id"] == stopped["customer_id"]
            [statement] = outcomes[2].optout["statements"]
            assert statement["channel"] == "sms" and not statement["allow"] and "21610" in statement["detail"]
            # valid records, and no PII in them
            for outcome in outcomes:
                assert Schemas().problems("delivery.json", outcome.delivery) == []
                assert outcome.notification["to"] not in str(outcome.delivery)

    asyncio.run(scenario())


def test_a_permanently_failed_sms_with_a_fallback_asks_for_the_email_once():
    async def scenario():
        async with providers() as (fake, sms, email):
            stopped = notification(1, fallback=["email"])
            plain = notification(2)
            fake.reject(stopped["to"], 21610)
            fake.reject(plain["to"], 21211)
            outcomes = await Courier({"sms": sms, "email": email}).deliver_all([stopped, plain])
            assert outcomes[0].fallback == {**outcomes[0].fallback, "notification_id": stopped["id"],
                                            "customer_id": stopped["customer_id"], "rule": stopped["rule"],
                                            "failed_channel": "sms", "fallback": ["email"]}
            assert "21610" in outcomes[0].fallback["reason"]
            assert outcomes[1].fallback is None  # the rule named no fallback

    asyncio.run(scenario())
