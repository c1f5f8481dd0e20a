"""Table recovery's changelog ends: never the broker's low ListOffsets answer, however long the check fails."""

from __future__ import annotations

import asyncio

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
