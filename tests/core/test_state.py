"""Customer states decode whatever the version that wrote them: new fields come last, with defaults."""

from __future__ import annotations

import msgspec
import orjson

from streams.core.state import Contact, CustomerState, Fact, decode_state, encode_state


class StateBeforeFacts(msgspec.Struct, array_like=True):
    """CustomerState as it was encoded before it kept the facts sent."""

    pending: dict = {}
    sent: list[Contact] = []
    sent_ids: dict[str, str] = {}
    cancels: dict[str, str] = {}
    outages: dict = {}
    fallbacks: dict = {}
    last: dict[str, str] = {}


def test_a_state_encoded_before_facts_were_kept_still_decodes_with_none():
    old = msgspec.msgpack.encode(StateBeforeFacts(sent=[Contact("2026-11-25T13:00:00+00:00", "order-shipped")],
                                                  sent_ids={"n1": "2026-11-25T13:00:00+00:00"}))
    state = decode_state(old)
    assert state.facts == {} and state.sent_ids == {"n1": "2026-11-25T13:00:00+00:00"}
    assert state.sent[0].rule == "order-shipped"


def test_a_legacy_json_state_decodes_with_no_facts():
    state = decode_state(orjson.dumps({"ledger": {"n1": "2026-11-25T13:00:00+00:00"}}))
    assert state.facts == {} and state.sent_ids == {"n1": "2026-11-25T13:00:00+00:00"}


def test_facts_survive_encoding():
    state = CustomerState(facts={"abc": Fact("2026-11-25T13:00:00+00:00", "s1")})
    assert decode_state(encode_state(state)).facts == {"abc": Fact("2026-11-25T13:00:00+00:00", "s1")}
