"""The decision clock: event time (watermark, lateness, idle end of a replay) and wall time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streams.core.clock import FOREVER, EventClock, Tick, WallClock

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def at(minutes: float, event_type: str = "order.delayed") -> dict:
    return {"type": event_type, "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat()}


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_watermark_is_the_latest_event_time_and_never_goes_back():
    clock = EventClock()
    assert clock.tick(at(10)) == Tick(T0 + timedelta(minutes=10), T0 + timedelta(minutes=10))
    assert clock.tick(at(5)) == Tick(T0 + timedelta(minutes=10), T0 + timedelta(minutes=10))  # late: decided then
    assert clock.tick(at(20)).now == T0 + timedelta(minutes=20)


def test_lateness_holds_back_what_fell_due_just_before_the_watermark():
    clock = EventClock(lateness=timedelta(hours=1))
    tick = clock.tick(at(90))
    assert tick.now == T0 + timedelta(minutes=90)
    assert tick.fire_until == T0 + timedelta(minutes=30)


def test_customer_records_move_no_clock_and_fire_nothing():
    clock = EventClock()
    loaded_years_later = {"type": "customer.upserted", "occurred_at": "2099-01-01T00:00:00+00:00"}
    assert clock.tick(loaded_years_later) == Tick(datetime(2099, 1, 1, tzinfo=timezone.utc))  # nothing seen yet
    assert clock.watermark is None
    clock.tick(at(10))
    assert clock.tick(loaded_years_later) == Tick(T0 + timedelta(minutes=10))
    assert clock.watermark == T0 + timedelta(minutes=10)


def test_a_replay_is_over_after_idle_seconds_without_events():
    monotonic = Monotonic()
    clock = EventClock(idle=3.0, monotonic=monotonic)
    clock.tick(at(0))
    monotonic.now += 2.9
    assert clock.timer_until() is None
    monotonic.now += 0.2
    assert clock.timer_until() == FOREVER
    clock.tick(at(1))  # a new event: the replay goes on
    assert clock.timer_until() is None


def test_event_time_fires_a_due_message_at_its_own_time_and_falls_back_on_the_watermark():
    clock = EventClock()
    due = T0 + timedelta(minutes=3)
    assert clock.due_now(due) == due
    clock.tick(at(7))
    assert clock.current() == T0 + timedelta(minutes=7)


def test_wall_time_is_the_wall_clock_for_events_due_records_and_the_timer():
    now = T0 + timedelta(days=1)
    clock = WallClock(lambda: now)
    assert clock.tick(at(0)) == Tick(now)  # fires nothing itself: the timer does
    assert clock.due_now(T0) == now
    assert clock.current() == now
    assert clock.timer_until() == now
