"""Generated bad events interleaved with the demo's, through a real worker on the embedded broker.

Every bad one must end on ``deadletter`` with its bytes and a reason, the
worker must keep running, and the demo's valid events must still come out
exactly as the simulator decides them.
"""

from __future__ import annotations

import base64
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streams.core.config import load_config
from streams.core.events import default_schemas
from streams.kafka.admin import read_topic
from streams.tools.load_customers import load_customers
from streams.settings import ROOT
from streams.tools.simulate import simulate
from tests.faults.test_bad_input import VALID_EVENTS, json_values, paths, refused_or_valid, replaced
from tests.integration.test_pipeline import comparable, drain, outbox_lines, replay

pytestmark = pytest.mark.broker
DEMO = ROOT / "config" / "demo"


@st.composite
def mutated_event(draw) -> bytes:
    event = draw(st.sampled_from(VALID_EVENTS))
    path = draw(st.sampled_from(list(paths(event))))
    return json.dumps(replaced(event, path, draw(json_values))).encode()


bad_payloads = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), mutated_event())


def refused(raw: bytes) -> bool:
    return refused_or_valid(raw, default_schemas()) is None


@seed(20261125)
@hypothesis_settings(max_examples=1, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                            HealthCheck.data_too_large])
@given(st.lists(bad_payloads, min_size=120, max_size=120))
def test_generated_bad_events_between_the_demo_events(broker, settings, start_worker, tmp_path, payloads):
    bad = [p for p in payloads if refused(p)]
    assert len(bad) >= 80  # most generated payloads are bad; the few valid ones are left out
    demo = [line for line in DEMO.joinpath("events.jsonl").read_bytes().splitlines() if line.strip()]
    lines, step = [], max(1, len(bad) // len(demo))
    for number, line in enumerate(demo):
        lines += bad[number * step:(number + 1) * step] + [line]
    lines += bad[len(demo) * step:]

    worker = start_worker()
    load_customers(broker.bootstrap, settings.topics.customers, DEMO / "customers.jsonl")
    drain(broker, settings, start_worker.app_id, worker)
    replay(broker.bootstrap, settings, lines)
    drain(broker, settings, start_worker.app_id, worker)
    assert worker.running

    dead = [orjson.loads(m.value) for m in read_topic(broker.bootstrap, settings.topics.deadletter)]
    demo_refused = [line for line in demo if refused(line)]  # the demo has invalid lines of its own
    assert sorted(base64.b64decode(d["value_b64"]) for d in dead) == sorted(bad + demo_refused)
    assert all(d["reason"] for d in dead)

    simulate(load_config(settings), DEMO / "customers.jsonl", DEMO / "events.jsonl", tmp_path / "sim")
    simulated = [orjson.loads(line) for line in (tmp_path / "sim" / "notifications.jsonl").read_bytes().splitlines()]
    assert sorted(map(comparable, outbox_lines(tmp_path))) == sorted(map(comparable, simulated))
