"""The test-only fault hook: which records of which hop fail."""

from __future__ import annotations

import pytest

from streams.agents.contain import InjectedFault, Poison


def test_each_named_hop_fails_on_its_own_marker_only():
    poison = Poison("ingest:BAD-I, decide:BAD-D")
    with pytest.raises(InjectedFault):
        poison.check("ingest", b'{"id": "BAD-I-1"}')
    with pytest.raises(InjectedFault):
        poison.check("decide", b'{"id": "BAD-D-1"}')
    poison.check("decide", b'{"id": "BAD-I-1"}')  # another hop's marker
    poison.check("dispatch", b'{"id": "BAD-D-1"}')
    poison.check("ingest", None)


def test_unset_poisons_nothing():
    Poison(None).check("ingest", b"anything")
    Poison("").check("ingest", b"")
