"""Commit a partition's offset only past messages that were processed.

faust's commit (``Consumer._new_offset``) takes the run of acknowledged
offsets from the lowest one, and checks that run against the committed offset
loosely: it accepts a lowest acknowledged offset of committed + 1, passing over
the message at the committed offset, and it checks nothing at all when the
partition has no commit yet (offset 0 reads as "none"). A message at the head
that was never processed is then committed past and never read again: the
SIGKILL fault test lost single notifications that way.

``CommitGuard`` holds the commit while the head is unacknowledged and, if that
lasts, names the offset to read the partition again from. Plain logic; the
wiring into faust is in ``streams.app``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

Partition = tuple[str, int]  # (topic, partition)


class CommitGuard:
    reread_after: float = 10.0  # seconds an unprocessed head may hold the commit before it is read again

    def __init__(self) -> None:
        self.first_offsets: dict[Partition, int] = {}  # where a partition with no commit was started
        self._holding: dict[Partition, tuple[int, float]] = {}  # partition -> (head, held since)

    def check(self, partition: Partition, acked: Collection[int], committed: int | None,
              skipped: Callable[[int], bool], now: float) -> tuple[bool, int | None]:
        """(whether faust may commit, the offset to read ``partition`` again from, if any).

        ``skipped(offset)``: the broker has no message there (faust's gaps, e.g. compaction).
        """
        head = committed if committed is not None else self.first_offsets.get(partition)
        if not acked or head is None or min(acked) <= head or skipped(head):
            self._holding.pop(partition, None)
            return True, None
        held = self._holding.get(partition)
        if held is None or held[0] != head:
            self._holding[partition] = (head, now)
            return False, None
        if now - held[1] > self.reread_after:
            del self._holding[partition]
            return False, head
        return False, None
