"""Commit a partition's offset only past messages that were processed.

faust's commit (``Consumer._new_offset``) takes the run of acknowledged
offsets from the lowest one, and checks that run against the committed offset
loosely: it accepts a lowest acknowledged offset of committed + 1, passing over
the message at the committed offset, and it checks nothing at all when the
partition has no commit yet (offset 0 reads as "none"). A message at the head
that was never processed is then committed past and never read again: the
SIGKILL fault test lost single notifications that way.

``CommitGuard`` holds the commit while the head is unacknowledged and, if that
lasts, names the offset to read the partition again from. A head said to be a
gap is passed over only once reading it again twice found nothing there: the
SIGKILL test lost 354 notifications of a partition that faust had taken for a gap.

What left heads unprocessed: faust seeks a partition (after table recovery,
with the stream partitions already fetching) while the records of an earlier
fetch are still being handed on. Those stale records move faust's read offset
past messages it never handed on, so the copies the seek reads again are
dropped as already read, or they open a false "gap" that faust then commits
past as if the broker had nothing there. ``ReadFence`` holds back records that
a seek made stale: the seek reads them again.

Plain logic; the wiring into faust is in ``streams.kafka.faust_fixes``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

Partition = tuple[str, int]  # (topic, partition)


class CommitGuard:
    reread_after: float = 10.0  # seconds an unprocessed head may hold the commit before it is read again
    # A head said to hold nothing (faust's gaps, a jump after a seek) is believed only once reading it
    # again this many times still found nothing there: a jump has causes other than an empty offset.
    rereads_before_gap: int = 2

    def __init__(self) -> None:
        self.first_offsets: dict[Partition, int] = {}  # where a partition with no commit was started
        self._holding: dict[Partition, tuple[int, float]] = {}  # partition -> (head, held since)
        self._absent: dict[Partition, range] = {}  # offsets a read from a seek showed the broker has nothing at
        self._rereads: dict[Partition, tuple[int, int]] = {}  # partition -> (head, times read again)

    def absent(self, partition: Partition, offsets: range) -> None:
        self._absent[partition] = offsets

    def absent_offsets(self, partition: Partition) -> range:
        return self._absent.get(partition, range(0))

    def check(self, partition: Partition, acked: Collection[int], committed: int | None,
              skipped: Callable[[int], bool], now: float) -> tuple[bool, int | None]:
        """(whether faust may commit, the offset to read ``partition`` again from, if any).

        ``skipped(offset)``: the broker has no message there (faust's gaps, e.g. compaction).
        """
        head = committed if committed is not None else self.first_offsets.get(partition)
        if not acked or head is None or min(acked) <= head or self._confirmed_gap(partition, head, skipped):
            self._holding.pop(partition, None)
            self._rereads.pop(partition, None)
            return True, None
        held = self._holding.get(partition)
        if held is None or held[0] != head:
            self._holding[partition] = (head, now)
            return False, None
        if now - held[1] > self.reread_after:
            del self._holding[partition]
            before = self._rereads.get(partition)
            self._rereads[partition] = (head, before[1] + 1 if before and before[0] == head else 1)
            return False, head
        return False, None

    def _confirmed_gap(self, partition: Partition, head: int, skipped: Callable[[int], bool]) -> bool:
        """The broker has nothing at ``head``: said so, and reading it again found nothing either."""
        if not (skipped(head) or head in self._absent.get(partition, ())):
            return False
        reread = self._rereads.get(partition)
        return reread is not None and reread[0] == head and reread[1] >= self.rereads_before_gap


class ReadFence:
    """Hand on a fetched record only if no seek since its fetch has made it stale.

    ``batch()`` is called before each fetch and its token passed to ``admit``
    with every record of that fetch; ``seek_started`` / ``seek_done`` bracket
    every seek of a stream partition. A record past the offset expected next
    is held back when a seek came during or after its fetch: the seek reads it
    again. Without a seek it is a real gap (compaction, transaction markers),
    and after a seek the guard is told the offsets before it hold nothing.
    """

    def __init__(self, guard: CommitGuard) -> None:
        self.guard = guard
        self._expected: dict[Partition, int] = {}  # offset of the next record to hand on
        self._just_sought: set[Partition] = set()  # nothing handed on since the seek
        self._seeks = 0
        self._seeking = 0

    def batch(self) -> int:
        return -1 if self._seeking else self._seeks

    def seek_started(self) -> None:
        self._seeking += 1
        self._seeks += 1

    def seek_done(self, positions: Mapping[Partition, int | None]) -> None:
        """``positions``: where the seek left each partition it moved (None: not known)."""
        self._seeking = max(0, self._seeking - 1)
        self._seeks += 1
        for partition, offset in positions.items():
            if offset is None:
                self._expected.pop(partition, None)
                self._just_sought.discard(partition)
            else:
                self._expected[partition] = offset
                self._just_sought.add(partition)

    def forget(self, partitions: Iterable[Partition]) -> None:
        for partition in partitions:
            self._expected.pop(partition, None)
            self._just_sought.discard(partition)

    def admit(self, token: int, partition: Partition, offset: int) -> bool:
        expected = self._expected.get(partition)
        if expected is not None and offset < expected:
            return True  # read before; faust's read offset decides
        if expected is not None and offset > expected:
            if token != self._seeks:
                return False
            if partition in self._just_sought:
                self.guard.absent(partition, range(expected, offset))
        self._expected[partition] = offset + 1
        self._just_sought.discard(partition)
        return True


class ProcessOrder:
    """Each partition's records reach its agent in offset order, or not at all until the missing ones are read.

    faust's stream drops a record that arrives while flow is stopped and goes on
    with the next: an outage read before the customer records ahead of it in the
    partition reached only the customers already known, and a cart checkout
    left behind let the reminder it cancels fire. A record past the next one
    expected is refused (never acknowledged) and the partition read again from
    that next one; offsets a read from a seek found empty (``CommitGuard.absent``)
    are no hole.
    """

    def __init__(self, guard: CommitGuard) -> None:
        self.guard = guard
        self._next: dict[Partition, int] = {}  # offset of the next record the agent should get
        self._refused: set[tuple[Partition, int]] = set()
        self._rereading: dict[Partition, int] = {}  # partition -> offset a read again was asked from

    def sought(self, positions: Mapping[Partition, int | None]) -> None:
        for partition, offset in positions.items():
            self._rereading.pop(partition, None)
            if offset is None:
                self._next.pop(partition, None)
            else:
                self._next[partition] = offset

    def forget(self, partitions: Iterable[Partition]) -> None:
        gone = set(partitions)
        for partition in gone:
            self._next.pop(partition, None)
            self._rereading.pop(partition, None)
        self._refused = {refused for refused in self._refused if refused[0] not in gone}

    def expecting(self, partition: Partition) -> bool:
        """Whether the next offset of ``partition`` is known (else ``admit`` wants its start)."""
        return partition in self._next

    def admit(self, partition: Partition, offset: int, start: int | None = None) -> tuple[bool, int | None]:
        """(whether the agent may have the record, the offset to read the partition again from, if any).

        ``start``: where reading the partition began (its commit), for a partition no seek was seen for.
        """
        expected = self._next.get(partition, start)
        if expected is None or offset == expected or (offset > expected and self._empty(partition, expected, offset)):
            self._next[partition] = offset + 1
            return True, None
        if offset < expected:
            return True, None  # a copy read again after a seek: every hop knows what it did before
        self._refused.add((partition, offset))
        if self._rereading.get(partition) == expected:
            return False, None
        self._rereading[partition] = expected
        return False, expected

    def refused(self, partition: Partition, offset: int) -> bool:
        """Whether the record was refused; its acknowledgement is then refused too (asked once)."""
        key = (partition, offset)
        if key in self._refused:
            self._refused.discard(key)
            return True
        return False

    def _empty(self, partition: Partition, start: int, stop: int) -> bool:
        absent = self.guard.absent_offsets(partition)
        return start in absent and stop - 1 in absent


class StallWatch:
    """Partitions left behind while the worker has nothing to do: read them again from their commit.

    Whatever made a partition's records vanish between fetch and agent (records a
    seek made stale and no re-read brought back, a fetch that never came), the
    sign is the same: the broker has more than was committed, nothing is in
    flight, and that stays so. Reading again is safe: every hop recognises what
    it has done before (event ids, sent ids, the send ledger).
    """

    stall_after: float = 10.0  # seconds a partition may stay behind, idle, before it is read again

    def __init__(self) -> None:
        self._behind: dict[Partition, tuple[int, float]] = {}  # partition -> (committed, behind since)

    def check(self, behind: Mapping[Partition, int], idle: bool, now: float) -> list[tuple[Partition, int]]:
        """``behind``: committed offset of each partition whose end is past it; what to read again, from where."""
        if not idle:
            self._behind.clear()
            return []
        for partition in [p for p in self._behind if p not in behind]:
            del self._behind[partition]
        stalled = []
        for partition, committed in behind.items():
            seen = self._behind.get(partition)
            if seen is None or seen[0] != committed:
                self._behind[partition] = (committed, now)
            elif now - seen[1] >= self.stall_after:
                stalled.append((partition, committed))
                self._behind[partition] = (committed, now)  # a new wait for the re-read to show
        return stalled


class AckWatch:
    """How long the worker has held messages without acknowledging any of them."""

    def __init__(self) -> None:
        self.acks = 0
        self._seen: tuple[int, float] | None = None  # (acks, first seen at)

    def acked(self) -> None:
        self.acks += 1

    def reset(self) -> None:
        self._seen = None

    def stuck_for(self, in_flight: bool, now: float) -> float:
        """Seconds since the last acknowledgement while messages are in flight; 0 when none are."""
        if not in_flight:
            self.reset()
            return 0.0
        if self._seen is None or self._seen[0] != self.acks:
            self._seen = (self.acks, now)
        return now - self._seen[1]


class Holds:
    """Records read but held back, not decided yet (the event-time timeline): no commit may pass them.

    faust counts a record done when the agent's batch ends; a record the
    timeline still holds is not. The commit is capped at the lowest held
    offset, so a crash reads it again instead of losing it.
    """

    def __init__(self) -> None:
        self._held: dict[Partition, set[int]] = {}

    def hold(self, partition: Partition, offset: int) -> bool:
        """False if ``offset`` is held already (read again after a seek): the timeline has it."""
        held = self._held.setdefault(partition, set())
        if offset in held:
            return False
        held.add(offset)
        return True

    def release(self, partition: Partition, offset: int) -> None:
        held = self._held.get(partition)
        if held is not None:
            held.discard(offset)

    def drop(self, partitions: Iterable[Partition] | None = None) -> None:
        for partition in list(self._held) if partitions is None else partitions:
            self._held.pop(partition, None)

    def lowest(self, partition: Partition) -> int | None:
        held = self._held.get(partition)
        return min(held) if held else None

    def cap(self, partition: Partition, committed: int | None) -> tuple[bool, int | None]:
        """(whether a hold applies, the offset to commit then: the lowest held, if past ``committed``)."""
        lowest = self.lowest(partition)
        if lowest is None:
            return False, None
        return True, lowest if committed is None or lowest > committed else None
