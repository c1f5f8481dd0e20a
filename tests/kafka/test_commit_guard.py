"""The commit guard: no commit past a message that was not processed."""

from __future__ import annotations

from streams.kafka.commit_guard import AckWatch, CommitGuard, Holds, ProcessOrder, ReadFence, StallWatch

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


def hold_and_reread(guard: CommitGuard, acked, skipped, start: float) -> float:
    """Check until the guard asks for the head to be read again; the time it did."""
    now = start
    while True:
        may_commit, reread = guard.check(P, acked, 40, skipped, now)
        assert not may_commit
        if reread is not None:
            return now
        now += 1.0


def test_offsets_the_broker_has_no_message_for_hold_a_commit_until_two_rereads_found_nothing_there():
    guard = CommitGuard()
    gap = lambda offset: 40 <= offset < 45  # noqa: E731
    reread = hold_and_reread(guard, [45], gap, 0.0)  # a jump is not believed at once ...
    reread = hold_and_reread(guard, [45], gap, reread + 1)
    assert guard.check(P, [45], 40, gap, reread + 1) == (True, None)  # ... only after two reads found nothing


def test_a_gap_that_reading_again_fills_is_committed_through_normally():
    guard = CommitGuard()
    gap = lambda offset: 40 <= offset < 45  # noqa: E731  faust took 40..44 for a gap; they were there
    reread = hold_and_reread(guard, [45, 46], gap, 0.0)
    assert guard.check(P, [40, 41, 42, 43, 44, 45, 46], 40, gap, reread + 1) == (True, None)


def test_a_head_left_unprocessed_is_read_again_after_a_while_and_then_held_anew():
    guard = CommitGuard()
    assert guard.check(P, [41], 40, never, 100.0) == (False, None)
    assert guard.check(P, [41, 42], 40, never, 105.0) == (False, None)
    assert guard.check(P, [41, 42], 40, never, 110.5) == (False, 40)
    assert guard.check(P, [41, 42], 40, never, 111.0) == (False, None)  # a new wait after the re-read


def test_a_record_a_seek_made_stale_is_held_back_and_the_seek_reads_it_again():
    fence = ReadFence(CommitGuard())
    token = fence.batch()
    assert [fence.admit(token, P, offset) for offset in (175, 176)] == [True, True]
    fence.seek_started()  # faust seeks to the committed offset while 177 and 178 are still being handed on
    fence.seek_done({P: 0})
    assert fence.admit(token, P, 177) is False  # handing it on would move faust's read offset past 0..176
    assert fence.admit(token, P, 178) is False
    again = fence.batch()
    assert [fence.admit(again, P, offset) for offset in (0, 1, 2)] == [True, True, True]


def test_a_fetch_that_began_during_a_seek_is_trusted_only_in_sequence():
    fence = ReadFence(CommitGuard())
    fence.seek_started()
    token = fence.batch()
    fence.seek_done({P: 40})
    assert fence.admit(token, P, 40) is True
    assert fence.admit(token, P, 41) is True
    assert fence.admit(token, P, 60) is False


def test_a_jump_without_a_seek_is_a_real_gap_and_is_handed_on():
    fence = ReadFence(CommitGuard())
    token = fence.batch()
    assert fence.admit(token, P, 10) is True
    assert fence.admit(token, P, 12) is True  # 11: a transaction marker, say
    assert fence.admit(token, P, 13) is True


def test_what_a_read_from_a_seek_shows_missing_no_longer_holds_a_commit():
    guard = CommitGuard()
    fence = ReadFence(guard)
    assert guard.check(P, [41, 42], 40, never, 0.0) == (False, None)
    fence.seek_started()
    fence.seek_done({P: 40})
    assert fence.admit(fence.batch(), P, 41) is True  # the broker has nothing at 40, it seems
    reread = hold_and_reread(guard, [41, 42], never, 1.0)
    reread = hold_and_reread(guard, [41, 42], never, reread + 1)
    assert guard.check(P, [41, 42], 40, never, reread + 1) == (True, None)


def test_records_read_before_are_left_to_faust_and_a_revoked_partition_starts_afresh():
    fence = ReadFence(CommitGuard())
    token = fence.batch()
    assert fence.admit(token, P, 5) is True
    assert fence.admit(token, P, 3) is True
    fence.seek_started()
    fence.seek_done({P: 6})
    fence.forget([P])
    assert fence.admit(token, P, 90) is True


def test_a_partition_behind_while_the_worker_is_idle_is_read_again_after_a_while():
    watch = StallWatch()
    assert watch.check({P: 146}, True, 0.0) == []
    assert watch.check({P: 146}, True, 5.0) == []
    assert watch.check({P: 146}, True, 10.0) == [(P, 146)]
    assert watch.check({P: 146}, True, 15.0) == []  # a new wait for the re-read to show


def test_a_partition_that_moves_or_a_busy_worker_is_not_read_again():
    watch = StallWatch()
    assert watch.check({P: 146}, True, 0.0) == []
    assert watch.check({P: 200}, True, 10.0) == []  # it moved: progress, a new wait
    assert watch.check({P: 200}, False, 20.0) == []  # busy: the agent may be on its way there
    assert watch.check({P: 200}, True, 25.0) == []
    assert watch.check({}, True, 40.0) == []  # caught up
    assert watch.check({P: 200}, True, 41.0) == []


def test_a_held_record_caps_the_commit_at_its_offset_until_it_is_released():
    holds = Holds()
    assert holds.cap(("forewarn-events", 0), 10) == (False, None)  # nothing held: faust's own commit
    assert holds.hold(("forewarn-events", 0), 14) and holds.hold(("forewarn-events", 0), 12)
    assert not holds.hold(("forewarn-events", 0), 12)  # read again after a seek: held already
    assert holds.cap(("forewarn-events", 0), 10) == (True, 12)  # the lowest held is read again after a crash
    assert holds.cap(("forewarn-events", 0), 12) == (True, None)  # committed up to it already
    assert holds.cap(("forewarn-events", 1), 10) == (False, None)  # other partitions go on
    holds.release(("forewarn-events", 0), 12)
    assert holds.cap(("forewarn-events", 0), 12) == (True, 14)
    holds.drop()
    assert holds.cap(("forewarn-events", 0), 12) == (False, None)


def test_records_reach_the_agent_in_offset_order_or_wait_for_the_missing_ones():
    guard = CommitGuard()
    order = ProcessOrder(guard)
    order.sought({P: 40})
    assert order.admit(P, 40) == (True, None)
    # 41 and 42 were dropped on the way (flow stopped): 43 must not be processed ahead of them.
    assert order.admit(P, 43) == (False, 41)
    assert order.admit(P, 44) == (False, None)  # read again from 41 asked already
    assert order.refused(P, 43) and order.refused(P, 44) and not order.refused(P, 43)
    order.sought({P: 41})
    assert [order.admit(P, offset)[0] for offset in (41, 42, 43, 44)] == [True, True, True, True]
    assert order.admit(P, 42) == (True, None)  # a copy read again later: the hop knows it


def test_offsets_a_read_from_a_seek_found_empty_are_no_hole():
    guard = CommitGuard()
    order = ProcessOrder(guard)
    order.sought({P: 0})
    guard.absent(P, range(0, 57))  # compacted away: the read from the seek began at 57
    assert order.admit(P, 57) == (True, None)
    assert order.admit(P, 60) == (False, 58)


def test_a_partition_moved_away_and_back_starts_from_where_it_is_sought():
    order = ProcessOrder(CommitGuard())
    order.sought({P: 10})
    assert order.admit(P, 10) == (True, None)
    order.forget([P])
    assert order.admit(P, 500) == (True, None)  # nothing known: as faust hands it on


def test_messages_in_flight_without_an_acknowledgement_count_as_stuck_from_the_last_one():
    watch = AckWatch()
    assert watch.stuck_for(True, 100.0) == 0.0
    assert watch.stuck_for(True, 130.0) == 30.0
    watch.acked()
    assert watch.stuck_for(True, 131.0) == 0.0  # an acknowledgement: progress
    assert watch.stuck_for(False, 200.0) == 0.0  # nothing in flight: nothing stuck
    assert watch.stuck_for(True, 201.0) == 0.0


def test_a_partition_no_seek_was_seen_for_is_held_to_its_commit():
    order = ProcessOrder(CommitGuard())
    assert order.admit(P, 295, start=288) == (False, 288)  # 288 to 294 never reached the agent
    order.sought({P: 288})
    assert order.admit(P, 288, start=288) == (True, None)
