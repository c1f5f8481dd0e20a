"""Timers wait until ingest, then decide, have read what their partitions held after a restart."""

from streams.kafka.catch_up import CatchUp

SOURCE, EVENTS = ("carts", 0), ("forewarn-events", 0)


def gate() -> CatchUp:
    return CatchUp([["carts"], ["forewarn-events"]])


def test_it_opens_only_after_both_stages_have_read_to_their_ends():
    catch_up = gate()
    assert catch_up.wanted() == ["carts"]
    catch_up.targets({SOURCE: 10})
    assert catch_up.wanted() == []  # being waited for: not asked for again
    catch_up.processed(*SOURCE, 8)
    assert not catch_up.advance({})
    catch_up.processed(*SOURCE, 9)
    assert not catch_up.advance({})  # ingest is done; decide has its end offsets still to come
    assert catch_up.wanted() == ["forewarn-events"]
    catch_up.targets({EVENTS: 40})
    catch_up.processed(*EVENTS, 38)
    assert not catch_up.advance({}) and not catch_up.open
    catch_up.processed(*EVENTS, 39)
    assert catch_up.advance({}) and catch_up.open
    assert catch_up.wanted() == []


def test_a_committed_offset_at_the_end_counts_as_read():
    catch_up = gate()
    catch_up.targets({SOURCE: 10})
    assert not catch_up.advance({SOURCE: 9})
    catch_up.advance({SOURCE: 10})
    catch_up.targets({EVENTS: 0})  # an empty partition
    assert catch_up.advance({})


def test_a_reset_closes_it_and_forgets_what_was_read():
    catch_up = gate()
    catch_up.targets({SOURCE: 1})
    catch_up.processed(*SOURCE, 0)
    catch_up.advance({})
    catch_up.targets({EVENTS: 1})
    catch_up.processed(*EVENTS, 0)
    assert catch_up.advance({})
    generation = catch_up.generation
    catch_up.reset()
    assert not catch_up.open and catch_up.generation != generation
    assert catch_up.wanted() == ["carts"]
    catch_up.targets({SOURCE: 1})
    assert not catch_up.advance({})  # offset 0 was read before the reset: it is read again after it


def test_an_offset_read_again_does_not_lower_what_was_read():
    catch_up = gate()
    catch_up.processed(*SOURCE, 9)
    catch_up.processed(*SOURCE, 3)
    catch_up.targets({SOURCE: 10})
    catch_up.advance({})
    assert catch_up.wanted() == ["forewarn-events"]


def test_with_no_stages_it_is_open_and_stays_open():
    catch_up = CatchUp([])  # event time: the events move the clock themselves
    assert catch_up.open and catch_up.wanted() == []
    catch_up.reset()
    assert catch_up.open
