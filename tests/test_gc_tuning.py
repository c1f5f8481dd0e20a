from __future__ import annotations

import gc

import pytest

from streams import gc_tuning


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_settle_freezes_the_survivors(unfrozen):
    kept = [[i] for i in range(1000)]
    gc_tuning.settle()
    assert gc.get_freeze_count() >= len(kept)


def test_no_settling_while_an_event_is_in_progress(unfrozen):
    with gc_tuning.in_progress():
        gc_tuning.settle_when_idle()
        assert gc.get_freeze_count() == 0
    gc_tuning.settle_when_idle()
    assert gc.get_freeze_count() > 0
