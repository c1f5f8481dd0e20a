"""The input lag gauge: the age of the last record read per topic partition."""

from __future__ import annotations

from streams.agents.lag import latest_per_partition, observe_lag
from streams.metrics import INPUT_LAG
from tests.fakes import Offsets


def test_the_last_record_of_each_partition_counts_and_records_without_a_time_are_left_out():
    offsets = Offsets()
    events = [offsets.event("orders", 0, b"{}", timestamp=100.0), offsets.event("orders", 0, b"{}", timestamp=105.0),
              offsets.event("carts", 2, b"{}", timestamp=90.0), offsets.event("carts", 3, b"{}")]
    assert latest_per_partition(events) == {("orders", 0): 105.0, ("carts", 2): 90.0}


def test_a_backlog_shows_as_its_age_and_a_caught_up_input_as_zero():
    offsets = Offsets()
    observe_lag("ingest", [offsets.event("orders", 1, b"{}", timestamp=1_000.0)], now=lambda: 1_600.0)
    assert INPUT_LAG.labels("ingest", "orders", "1")._value.get() == 600.0
    observe_lag("ingest", [offsets.event("orders", 1, b"{}", timestamp=1_601.0)], now=lambda: 1_600.0)
    assert INPUT_LAG.labels("ingest", "orders", "1")._value.get() == 0.0
