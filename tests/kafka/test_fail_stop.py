"""A batch that cannot be finished stops the worker (no agent restarted past it); one that can, does not."""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.fail_stop import EXIT_CODE, FailStop


class Stopped(Exception):
    pass


def test_a_batch_that_raises_stops_the_process_with_its_code():
    codes = []

    def stop(code):
        codes.append(code)
        raise Stopped

    async def batch(events):
        raise OSError("broker refused the batch")

    with pytest.raises(Stopped):
        asyncio.run(FailStop("decide", stop).run(batch, [1, 2]))
    assert codes == [EXIT_CODE]


def test_a_batch_that_finishes_stops_nothing():
    seen = []

    async def batch(events):
        seen.extend(events)

    asyncio.run(FailStop("decide", lambda code: pytest.fail("stopped")).run(batch, [1, 2]))
    assert seen == [1, 2]
