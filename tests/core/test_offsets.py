"""The commit guard: no commit past a message that was not processed."""

from __future__ import annotations

from streams.offsets import CommitGuard

P = ("notifications", 1)


def never(_: int) -> bool:
    return False


def test_a_commit_goes_ahead_when_the_head_was_processed():
    guard = CommitGuard()
    assert guard.check(P, [40, 41, 42], 40, never, 0.0) == (True, None)


def test_the_message_at_the_committed_offset_must_be_processed_before_a_commit():
    guard = CommitGuard()  # faust itself would commit 43 here, passing over offset 40
    assert guard.check(P, [41, 42], 40, never, 0.0) == (False, None)
    assert guard.check(P, [40, 41, 42], 40, never, 1.0) == (True, None)


def test_a_partition_without_a_commit_is_held_to_where_it_was_started():
    guard = CommitGuard()
    guard.first_offsets[P] = 0
    assert guard.check(P, [2, 3, 4], None, never, 0.0) == (False, None)
    assert guard.check(P, [0, 1, 2], None, never, 0.0) == (True, None)
    assert guard.check(("other", 0), [7], None, never, 0.0) == (True, None)  # start unknown: as faust


def test_offsets_the_broker_has_no_message_for_do_not_hold_a_commit():
    guard = CommitGuard()
    assert guard.check(P, [45], 40, lambda offset: 40 <= offset < 45, 0.0) == (True, None)


def test_a_head_left_unprocessed_is_read_again_after_a_while_and_then_held_anew():
    guard = CommitGuard()
    assert guard.check(P, [41], 40, never, 100.0) == (False, None)
    assert guard.check(P, [41, 42], 40, never, 105.0) == (False, None)
    assert guard.check(P, [41, 42], 40, never, 110.5) == (False, 40)
    assert guard.check(P, [41, 42], 40, never, 111.0) == (False, None)  # a new wait after the re-read
