"""What has been sent, by notification id: one send per notification across crashes and duplicates.

Kafka gives the dispatcher each notification at least once: after a crash the
uncommitted part of a window comes again, and a decide worker that crashed
between producing a notification and logging its state produces it again,
with the same id. The ledger turns that into at most one send:

- before a window is sent, each of its notifications is marked ``sending``
  (with the time of the first attempt), and the marks are on Kafka before the
  first request goes out;
- after the outcomes are on ``deliveries``, the mark becomes ``done``;
- a notification that comes again finds its mark: ``done`` is not sent again;
  ``sending`` means a crash came mid-send, so the provider is asked whether it
  has the message (``Channel.find_sent``) before anything is sent.

Marks are kept for ``retention`` seconds, long enough for any redelivery and
re-decision; ``expired`` names the ones to forget, looking at ``sweep_chunk``
marks per call so that a pass over millions of them never holds up the
dispatcher for long; a pass starts at most every ``sweep_every`` seconds. The mapping is the
``dispatched`` table; here it is any mapping, so the rules are tested without a broker.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from datetime import datetime

import orjson

SENDING, DONE = "sending", "done"


@dataclass(frozen=True)
class Mark:
    state: str  # SENDING or DONE
    at: float  # when the mark was made, seconds since the epoch
    partition: int  # of ``notifications``: where the mark's changelog record belongs
    since: str | None = None  # SENDING: the first attempt, for the provider look-up
    status: str | None = None  # DONE: the delivery status (queued, failed, parked ...)

    @property
    def parked(self) -> bool:
        return self.state == DONE and self.status == "parked"


class SendLedger:
    sweep_every: float = 600.0
    sweep_chunk: int = 5_000  # about 5 ms of decoding

    def __init__(self, marks: MutableMapping[str, bytes], *, retention: float = 2 * 86_400.0):
        self.marks = marks
        self.retention = retention
        self._unchecked: list[str] = []  # what is left of the current pass
        self._pass_started = float("-inf")  # time.monotonic()

    def get(self, notification_id: str) -> Mark | None:
        raw = self.marks.get(notification_id)
        return None if raw is None else Mark(**orjson.loads(raw))

    def sending(self, notification_id: str, partition: int, since: datetime) -> None:
        self._put(notification_id, Mark(SENDING, round(time.time(), 3), partition, since=since.isoformat()))

    def done(self, notification_id: str, partition: int, status: str) -> None:
        self._put(notification_id, Mark(DONE, round(time.time(), 3), partition, status=status))

    def expired(self, now: float | None = None) -> list[tuple[str, int]]:
        """(notification id, partition) of the marks older than the retention in the next chunk of the pass."""
        if not self._unchecked:
            if time.monotonic() - self._pass_started < self.sweep_every:
                return []
            self._pass_started = time.monotonic()
            self._unchecked = list(self.marks)
        before = (now if now is not None else time.time()) - self.retention
        found = []
        for _ in range(min(self.sweep_chunk, len(self._unchecked))):
            key = self._unchecked.pop()
            mark = self.get(key)
            if mark is not None and mark.at < before:
                found.append((key, mark.partition))
        return found

    def forget(self, notification_id: str) -> None:
        self.marks.pop(notification_id, None)

    def _put(self, notification_id: str, mark: Mark) -> None:
        fields = {name: value for name, value in asdict(mark).items() if value is not None}
        self.marks[notification_id] = orjson.dumps(fields)
