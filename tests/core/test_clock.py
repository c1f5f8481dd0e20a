"""The decision clock: watermarks per input, the event-time timeline, how long a quiet input holds back."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from streams.core.clock import FOREVER, NEVER, Quiet, Step, Timeline, Watermarks

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(minutes: float, event_id: str | None = None) -> dict:
    return {"id": event_id or f"e{minutes}", "type": "cart.updated", "occurred_at": t(minutes).isoformat()}


def ids(steps) -> list[str | None]:
    return [step.event["id"] if step.event else None for step in steps]


def test_an_input_not_heard_of_holds_everything_back():
    marks = Watermarks()
    marks.expect("carts", 2)
    marks.read(("carts", 0), t(10))
    assert marks.floor(["carts"]) is None  # partition 1 could still hold an earlier event
    marks.read(("carts", 1), t(5))
    assert marks.floor(["carts"]) == t(5)
    assert marks.floor(["carts", "orders"]) is None  # orders: not even its partitions are known
    assert marks.floor([]) == FOREVER  # a rule no input can change waits for nothing


def test_a_watermark_never_goes_back_and_the_floor_is_the_least_input():
    marks = Watermarks()
    marks.expect("orders", 1)
    marks.expect("carts", 1)
    marks.read(("orders", 0), t(30))
    marks.read(("orders", 0), t(20))  # a late record: the input was read past 30 already
    marks.read(("carts", 0), t(25))
    assert marks.floor(["orders"]) == t(30)
    assert marks.floor(["orders", "carts"]) == t(25)
    marks.expect("orders", 2)  # the topic grew: its new partition is unknown
    assert marks.floor(["orders"]) is None


def two_inputs() -> tuple[Watermarks, Timeline]:
    marks = Watermarks()
    marks.expect("orders", 1)
    marks.expect("carts", 1)
    return marks, Timeline(marks, ("orders", "carts"))


def test_events_are_handed_on_in_event_time_once_every_input_is_read_past_them():
    marks, timeline = two_inputs()
    timeline.add(event(10, "order-at-10"))
    marks.read(("orders", 0), t(10))
    assert list(timeline.release()) == []  # carts not heard of: a cart event before 10 may still come
    timeline.add(event(5, "cart-at-5"))
    marks.read(("carts", 0), t(12))
    steps = list(timeline.release())
    assert ids(steps) == ["cart-at-5", None]  # order-at-10 waits: orders is read up to 10, not past it
    assert steps[0] == Step(t(5), event(5, "cart-at-5"))
    assert steps[-1] == Step(t(10))  # what fell due up to the floor may fire
    marks.read(("orders", 0), t(11))
    assert ids(timeline.release()) == ["order-at-10", None]


def test_ties_are_decided_by_event_id_whatever_the_order_of_reading():
    orders = []
    for arrival in (["b", "a", "c"], ["c", "b", "a"]):
        marks, timeline = two_inputs()
        for event_id in arrival:
            timeline.add(event(1, event_id))
        marks.read(("orders", 0), t(2))
        marks.read(("carts", 0), t(2))
        orders.append(ids(timeline.release()))
    assert orders == [["a", "b", "c", None]] * 2


def test_any_interleaving_of_sorted_inputs_gives_the_sorted_whole():
    story = [event(minute, f"e{minute:03d}") for minute in range(60)]
    rng = random.Random(7)
    for _ in range(20):
        marks, timeline = two_inputs()
        inputs = {"orders": [e for e in story if rng.random() < 0.5], "carts": []}
        inputs["carts"] = [e for e in story if e not in inputs["orders"]]
        released = []
        while inputs["orders"] or inputs["carts"]:
            topic = rng.choice([name for name, left in inputs.items() if left])
            read = inputs[topic].pop(0)
            timeline.add(read)
            marks.read((topic, 0), datetime.fromisoformat(read["occurred_at"]))
            released += [step.event for step in timeline.release() if step.event]
        released += [step.event for step in timeline.flush() if step.event]
        assert released == story


def test_lateness_holds_back_longer_and_a_flush_hands_on_everything_then_fires_all():
    marks = Watermarks()
    marks.expect("orders", 1)
    timeline = Timeline(marks, ("orders",), lateness=timedelta(minutes=30))
    timeline.add(event(10))
    marks.read(("orders", 0), t(35))
    assert ids(timeline.release()) == [None]
    timeline.add(event(50))
    marks.read(("orders", 0), t(50))
    assert ids(timeline.release()) == ["e10", None]
    steps = list(timeline.flush())
    assert ids(steps) == ["e50", None] and steps[-1].until == FOREVER
    assert len(timeline) == 0


def test_a_late_event_is_decided_at_the_time_already_reached_not_before():
    marks = Watermarks()
    marks.expect("orders", 1)
    timeline = Timeline(marks, ("orders",))
    timeline.add(event(20))
    marks.read(("orders", 0), t(21))
    list(timeline.release())
    timeline.add(event(5))  # older than what was decided: decided now, at 20
    steps = list(timeline.release())
    assert steps[0] == Step(t(20), event(5))


def test_dropped_events_are_forgotten_and_refs_name_what_is_held():
    _, timeline = two_inputs()
    timeline.add(event(1), ref="record-1")
    timeline.add(event(2), ref="record-2")
    assert sorted(timeline.refs()) == ["record-1", "record-2"]
    assert timeline.drop() == 2 and len(timeline) == 0


@pytest.mark.parametrize("quiet_for, waiting", [(2.9, True), (3.0, False)])
def test_inputs_heard_of_wait_their_seconds_before_they_are_quiet_and_none_heard_of_are_quiet(quiet_for, waiting):
    now = [100.0]
    inputs = Quiet(3.0, monotonic=lambda: now[0])
    assert not inputs.waiting()
    inputs.heard()
    now[0] += quiet_for
    assert inputs.waiting() is waiting
    inputs.heard()
    assert inputs.waiting()


def test_an_input_read_to_its_end_holds_nothing_back_until_it_is_told_a_time_again():
    marks = Watermarks()
    marks.expect("orders", 1)
    marks.expect("carts", 1)
    marks.read(("orders", 0), t(10))
    marks.at_end(("carts", 0))
    assert marks.floor(("orders", "carts")) == t(10)
    marks.read(("carts", 0), NEVER)  # told again: not read past anything yet
    assert marks.floor(("orders", "carts")) == NEVER
    timeline = Timeline(marks, ("orders", "carts"), lateness=timedelta(hours=1))
    timeline.add(event(5))
    assert list(timeline.release()) == []
    marks.at_end(("orders", 0))
    marks.at_end(("carts", 0))
    assert marks.floor(("orders", "carts")) == FOREVER
