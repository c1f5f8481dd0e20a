"""Table recovery: the changelog ends are never the broker's low ListOffsets answer; a rebalance restarts it."""

from __future__ import annotations

import asyncio

import pytest
from faust.tables import recovery as faust_recovery
from faust.types import TP
from kafka import TopicPartition

from streams.kafka import faust_fixes


def test_changelog_ends_are_asked_for_again_until_read_and_never_taken_from_the_low_answer(monkeypatch):
    tp = TP("app-customers-changelog", 0)
    answers = [OSError("broker busy"), OSError("probe timed out"), OSError("probe timed out"), OSError("refused"),
               {TopicPartition(tp.topic, 0): 1_000}]

    def read_end_offsets(bootstrap, partitions):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(faust_fixes, "read_end_offsets", read_end_offsets)
    monkeypatch.setattr(faust_fixes.time, "sleep", lambda seconds: None)
    assert asyncio.run(faust_fixes.true_ends({tp: 720}, ["127.0.0.1:9"])) == {tp: 1_000}
    assert answers == []


class _Consumer:
    def __init__(self) -> None:
        self.sought: list[dict] = []

    async def seek_wait(self, offsets) -> None:
        self.sought.append(dict(offsets))


class _Recovery:
    def __init__(self, rebalanced: bool) -> None:
        self.signal_recovery_start = asyncio.Event()
        if rebalanced:
            self.signal_recovery_start.set()


def test_a_recovery_interrupted_by_a_rebalance_starts_again_instead_of_seeking_unread_standbys():
    standby = TP("app-states-changelog", 3)
    consumer = _Consumer()
    # The new generation's standby has no offset yet: faust would seek it to None and crash.
    with pytest.raises(faust_recovery.RebalanceAgain):
        asyncio.run(faust_fixes._seek_fenced_recovery(_Recovery(rebalanced=True), consumer, {standby},
                                                      {standby: None}, "standby"))
    assert consumer.sought == []


def test_a_recovery_of_the_current_generation_seeks_as_faust_does():
    standby = TP("app-states-changelog", 3)
    consumer = _Consumer()
    asyncio.run(faust_fixes._seek_fenced_recovery(_Recovery(rebalanced=False), consumer, {standby},
                                                  {standby: -1}, "standby"))
    assert consumer.sought == [{standby: 0}]


def test_an_interrupted_recovery_is_not_completed():
    with pytest.raises(faust_recovery.RebalanceAgain):
        asyncio.run(faust_fixes._complete_current_recovery(_Recovery(rebalanced=True), 2))


def test_a_re_read_that_fails_is_logged_and_let_go(caplog):
    class Refusing:
        async def seek(self, tp, offset):
            raise OSError("broker gone")

    async def scenario():
        faust_fixes._seek_soon(Refusing(), TP("forewarn-events", 2), 456)
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert faust_fixes._seeks_asked == set()
    assert "reading a partition again failed (OSError('broker gone'))" in caplog.text
