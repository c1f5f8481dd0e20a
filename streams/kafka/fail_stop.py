"""Stop the worker when a batch cannot be finished, rather than let an agent die or an offset pass it.

Failures of one record are contained in its hop (``streams.agents.contain``).
What is left cannot be pinned on a record: the producer failing messages after
its own retries. faust would restart the crashed agent past the batch it had
taken; a process that stops commits nothing more and, started again by its
supervisor (docker-compose ``restart``), reads the batch again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)
EXIT_CODE = 70  # EX_SOFTWARE


class FailStop:
    def __init__(self, hop: str, stop: Callable[[int], Any] = os._exit):
        self.hop = hop
        self._stop = stop  # os._exit: no clean shutdown that could commit the unfinished batch

    async def run(self, batch: Callable[[Any], Awaitable[None]], events: Any) -> None:
        try:
            await batch(events)
        except Exception as exc:  # noqa: BLE001
            log.critical("%s could not finish a batch (%s: %s); the worker stops and reads it again on restart",
                         self.hop, type(exc).__name__, exc)
            for handler in logging.getLogger().handlers:
                handler.flush()
            self._stop(EXIT_CODE)
            raise
