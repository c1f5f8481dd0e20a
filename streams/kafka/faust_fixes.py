"""faust's Kafka consumer, with the fixes this pipeline needs to lose nothing.

Each fix is a small override of faust-streaming 0.15.3 / aiokafka 0.14.0 on
Tansu 0.6 or Kafka, applied by ``install`` when ``streams.worker.build_app``
makes the app (never at import). The decisions are plain logic in
``streams.kafka.commit_guard``; here is only the wiring. Any upgrade of faust,
aiokafka or the broker re-runs ``tests/faults`` (``--long`` for full size).

| fix | answers | proved by |
| --- | --- | --- |
| short fetch long-poll (``fetch_max_wait_ms``) | faust fixes it at 1,500 ms; Tansu does not answer a waiting fetch when data arrives on another of its partitions (up to half a second per hop) | ``bench/fanout.py``, ``bench/throughput.py`` |
| seek partitions with no commit to their beginning | aiokafka's ``seek_to_committed`` skips them after table recovery, and what recovery had fetched for them was dropped and never read again | ``tests/integration/test_restart.py`` |
| table recovery reads each changelog to its real end (``true_ends``) | Tansu answers ListOffsets with the last batch's first offset + 1, so recovery stopped inside the last batch | ``tests/faults/test_crash_state.py::test_a_restarted_worker_knows_every_customer_loaded_before_the_kill`` |
| only processed messages are acked (``_ack_processed_only``) | a stream drops a message that arrives while flow is stopped or from an older generation, and faust acks it as if processed | ``tests/faults/test_crashes.py`` (SIGKILL, two workers) |
| ``ReadFence`` | records fetched before a seek are still handed on and move faust's read offset past the re-read | ``tests/kafka/test_commit_guard.py``, ``tests/faults/test_crashes.py`` |
| ``CommitGuard`` | faust commits past an unprocessed head (lowest acked = committed + 1 passes; nothing checked before a first commit) | ``tests/kafka/test_commit_guard.py``, ``tests/faults/test_crashes.py`` |
| ``Holds`` | faust counts a record done when the agent's batch ends; the event-time timeline still holds it | ``tests/kafka/test_commit_guard.py``, ``tests/integration/test_replay.py`` |
| seek on the consumer's thread (``_seek_in_consumer_thread``) | faust seeks from the app's thread while the consumer thread drains fetch results: the fetcher crashed with a KeyError | ``tests/faults/test_crash_state.py`` |
| ``ProcessOrder`` (``in_order``) | the stream drops a record that arrives while flow is stopped and hands on the next: an outage reached only the customers read before the hole, a checkout left behind let its reminder fire | ``tests/kafka/test_commit_guard.py``, ``tests/faults/test_crash_state.py`` |
| ``StallWatch`` (``read_stalled_again``, a 5 s timer) | a partition behind its end while the worker is idle: its records vanished between fetch and agent with nothing left to notice | ``tests/kafka/test_commit_guard.py``, ``tests/faults/test_crashes.py`` |
| recovery that was interrupted starts again (``_seek_fenced_recovery``, ``_complete_current_recovery``) | a rebalance during table recovery is swallowed while faust waits for the actives, and it goes on with the new generation's standbys unread: a seek to offset None crashed the worker | ``tests/kafka/test_faust_fixes.py``, ``tests/faults/test_crashes.py`` (two workers) |
| lz4 at its fast level | aiokafka compresses lz4 at LZ4-HC level 9: a seventh of a fan-out's CPU | ``bench/fanout.py`` |
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import codec as aiokafka_codec
from aiokafka.record import default_records as aiokafka_py_default_records
from aiokafka.record._crecords import default_records as aiokafka_default_records
from faust.tables import recovery as faust_recovery
from faust.transport.drivers import aiokafka as aiokafka_driver
from kafka import TopicPartition

from streams.kafka.admin import read_end_offsets
from streams.kafka.commit_guard import AckWatch, CommitGuard, Holds, ProcessOrder, ReadFence, StallWatch

log = logging.getLogger(__name__)

commit_guard = CommitGuard()
read_fence = ReadFence(commit_guard)
process_order = ProcessOrder(commit_guard)
holds = Holds()
stall_watch = StallWatch()
ack_watch = AckWatch()
STUCK_WARNING = 30.0  # seconds in flight without an acknowledgement before the messages are named in the log
start_offsets: dict[tuple[str, int], int] = {}  # where the last seek to committed left each partition


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = 100
    bootstrap: list[str] = ["localhost:9092"]

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
        return consumer

    async def seek_to_committed(self):
        return await self.call_thread(self._seek_to_committed_or_start)

    async def _seek_to_committed_or_start(self):
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        never = [tp for tp, offset in committed.items() if not offset]
        sought = {(tp.topic, tp.partition): offset for tp, offset in committed.items() if offset}
        if never:
            await consumer.seek_to_beginning(*never)  # consumer_auto_offset_reset="earliest"
            for tp in never:
                sought[(tp.topic, tp.partition)] = commit_guard.first_offsets[(tp.topic, tp.partition)] = (
                    await consumer.position(tp))
        self.sought = sought  # where perform_seek left each partition, for the read fence
        start_offsets.update(sought)
        return committed

    async def _highwaters(self, partitions):
        # Table recovery reads each changelog partition up to here. Tansu 0.6 answers ListOffsets with the
        # last batch's first offset + 1, so recovery would stop inside the last batch and lose its changes.
        reported = await super()._highwaters(partitions)
        return await true_ends(reported, self.bootstrap)


RECHECK_CAP = 5.0  # seconds between attempts at the changelog ends, at most


async def true_ends(reported, bootstrap: list[str]):
    """Each partition's end offset, checked by reading its last batch: the real end on any broker.

    Read with kafka-python in a thread: a second aiokafka consumer on the worker's loop stalled the
    worker's own fetching after recovery now and then.
    """
    if not any(end and end > 0 for end in reported.values()):
        return reported  # empty changelogs: nothing to check, no connection to make

    def read() -> dict:
        by_name = {TopicPartition(tp.topic, tp.partition): tp for tp in reported}
        attempt = 0
        while True:
            attempt += 1
            try:
                ends = {by_name[tp]: end for tp, end in read_end_offsets(bootstrap, list(by_name)).items()}
            except Exception as exc:  # noqa: BLE001  any broker trouble: ask again
                # Never go on with the reported ends: recovery would stop inside the last batches and the
                # worker would run without the customers and states logged there.
                log.warning("checking changelog end offsets failed (attempt %d, asking again): %r", attempt, exc)
                time.sleep(min(0.5 * attempt, RECHECK_CAP))
                continue
            low = sorted(f"{tp.topic}/{tp.partition} {reported[tp]}->{end}" for tp, end in ends.items()
                         if end != reported.get(tp))
            if low:
                log.info("changelog ends read past their ListOffsets answers: %s", ", ".join(low))
            return ends

    return await asyncio.get_running_loop().run_in_executor(None, read)


_faust = aiokafka_driver.Consumer
_faust_new_offset = _faust._new_offset
_faust_getmany = _faust.getmany
_faust_perform_seek = _faust.perform_seek
_faust_seek = _faust.seek
_faust_revoked = _faust.on_partitions_revoked
_faust_ack = _faust.ack


def _new_offset_past_processed_only(self, tp):
    may_commit, reread_from = commit_guard.check((tp.topic, tp.partition), self._acked[tp],
                                                 self._committed_offset[tp], self._gap[tp].overlaps,
                                                 time.monotonic())
    if reread_from is not None and any(m.offset == reread_from and m.tp == tp for m in self._unacked_messages):
        reread_from = None  # the head is with an agent still (a slow provider): it was not passed over
    if reread_from is not None:
        log.warning("%s partition %d: offset %d was never processed; reading the partition again from there",
                    tp.topic, tp.partition, reread_from)
        _seek_soon(self, tp, reread_from)
    if not may_commit:
        return None
    held, capped = holds.cap((tp.topic, tp.partition), self._committed_offset[tp])
    # Not faust's own: it would take the acknowledged run off its list, and the run past the cap is
    # still to be committed once the hold ends.
    return capped if held else _faust_new_offset(self, tp)


async def _getmany_fenced(self, timeout):
    token = read_fence.batch()
    changelogs = self.app.tables.changelog_topics
    async for tp, message in _faust_getmany(self, timeout):
        if tp.topic in changelogs or read_fence.admit(token, (tp.topic, tp.partition), message.offset):
            yield tp, message


async def _perform_seek_fenced(self):
    read_fence.seek_started()
    thread = self._thread
    thread.sought = {}
    try:
        await _faust_perform_seek(self)
    finally:
        read_fence.seek_done(thread.sought)
        process_order.sought(thread.sought)


async def _seek_fenced(self, partition, offset):
    read_fence.seek_started()
    try:
        await _faust_seek(self, partition, offset)
    finally:
        read_fence.seek_done({(partition.topic, partition.partition): offset})
        process_order.sought({(partition.topic, partition.partition): offset})


async def _seek_in_consumer_thread(self, partition, offset):
    # faust calls aiokafka's seek from the app's thread while the consumer's own thread drains the fetch
    # results that seek deletes: a KeyError there crashed the fetcher, and the worker with it.
    thread = self._thread
    await thread.call_thread(thread._ensure_consumer().seek, partition, offset)


async def _revoked_fenced(self, revoked):
    read_fence.forget((tp.topic, tp.partition) for tp in revoked)
    process_order.forget((tp.topic, tp.partition) for tp in revoked)
    return await _faust_revoked(self, revoked)


def _ack_processed_only(self, message):
    # faust's Stream skips a message fetched before a rebalance or while flow is stopped, and acks it
    # as if processed. Such a message never reached the stream's tracking; processed ones always have.
    if not message.tracked and self.app.topics.acks_enabled_for(message.topic):
        return False
    if process_order.refused((message.topic, message.partition), message.offset):
        self._unacked_messages.discard(message)  # or the stall check would wait for it
        return False
    acked = _faust_ack(self, message)
    ack_watch.acked()
    # A second copy of an offset (read again after a seek) is not acked by faust and would stay
    # "unacked" for ever, holding up every wait for the streams to empty.
    self._unacked_messages.discard(message)
    return acked


async def ordered_batches(stream, size: int, within: float):
    """``stream.take_events``, each batch holding only what the agent may process (``in_order``)."""
    async for events in stream.take_events(size, within=within):
        if events := in_order(events):
            yield events


def in_order(events: list) -> list:
    """The events an agent may process: each partition's in offset order, none past one that never came."""
    admitted = []
    for event in events:
        message = event.message
        key = (message.topic, message.partition)
        consumer = event.app.consumer
        start = None if process_order.expecting(key) else _read_from(consumer, message.tp, key)
        admit, reread_from = process_order.admit(key, message.offset, start)
        if admit:
            admitted.append(event)
        elif reread_from is not None:
            log.warning("%s partition %d: offset %d reached the agent ahead of offset %d; reading the partition "
                        "again from there", message.topic, message.partition, message.offset, reread_from)
            _seek_soon(consumer, message.tp, reread_from)
    return admitted


_seeks_asked: set[asyncio.Task] = set()  # held until done: the loop keeps only weak references to tasks


def _seek_soon(consumer, tp, offset: int) -> None:
    """Read ``tp`` again from ``offset`` without waiting; if the seek fails, the commit guard asks again."""
    task = asyncio.ensure_future(consumer.seek(tp, offset))
    _seeks_asked.add(task)
    task.add_done_callback(_seek_done)


def _seek_done(task: asyncio.Task) -> None:
    _seeks_asked.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("reading a partition again failed (%r); the commit guard asks again", task.exception())


def _read_from(consumer, tp, key) -> int | None:
    """Where the partition's records are read from: its commit, or where it was started without one."""
    return consumer._committed_offset.get(tp) or commit_guard.first_offsets.get(key) or start_offsets.get(key)


async def read_stalled_again(app, bootstrap: list[str]) -> None:
    """The worker's timer: a stream partition behind its end while nothing is in flight is read again."""
    consumer = app.consumer
    if app.rebalancing or not consumer.assignment():
        return
    if consumer._unacked_messages:
        stall_watch.check({}, False, time.monotonic())
        _name_stuck_messages(consumer._unacked_messages)
        return
    ack_watch.stuck_for(False, time.monotonic())
    changelogs = app.tables.changelog_topics
    partitions = {(tp.topic, tp.partition): tp for tp in consumer.assignment() if tp.topic not in changelogs}
    try:
        ends = await asyncio.get_running_loop().run_in_executor(
            None, read_end_offsets, bootstrap, [TopicPartition(*key) for key in partitions])
    except Exception as exc:  # noqa: BLE001  broker trouble: the next tick asks again
        log.debug("reading end offsets for the stall check failed: %r", exc)
        return
    behind = {}
    for key, tp in partitions.items():
        committed = _read_from(consumer, tp, key)
        if committed is not None and ends.get(TopicPartition(*key), 0) > committed:
            behind[key] = committed
    for key, offset in stall_watch.check(behind, not consumer._unacked_messages, time.monotonic()):
        log.warning("%s partition %d: behind its end for a while with nothing in flight; reading it again "
                    "from offset %d", *key, offset)
        await consumer.seek(partitions[key], offset)


_faust_recovery = faust_recovery.Recovery
_faust_seek_offsets = _faust_recovery._seek_offsets
_faust_recovery_completed = _faust_recovery.on_recovery_completed


def _restart_if_rebalanced(recovery) -> None:
    # faust's recovery catches any exception while it waits for the actives to be read, the
    # RebalanceAgain of a new rebalance included, and goes on as if the actives were read.
    if recovery.signal_recovery_start.is_set():
        raise faust_recovery.RebalanceAgain()


async def _seek_fenced_recovery(self, consumer, tps, offsets, title):
    _restart_if_rebalanced(self)
    return await _faust_seek_offsets(self, consumer, tps, offsets, title)


async def _complete_current_recovery(self, generation_id=0):
    _restart_if_rebalanced(self)
    return await _faust_recovery_completed(self, generation_id)


def _name_stuck_messages(unacked) -> None:
    stuck = ack_watch.stuck_for(True, time.monotonic())
    if stuck < STUCK_WARNING:
        return
    ack_watch.reset()  # the next warning after as long again
    sample = sorted((m.tp.topic, m.tp.partition, m.offset, m.refcount, m.acked) for m in list(unacked))[:12]
    log.warning("%d messages in flight and none acknowledged for %.0f s: %s", len(unacked), stuck,
                ", ".join(f"{t}/{p}@{o} refs={r} acked={a}" for t, p, o, r, a in sample))


def _fast_lz4(payload) -> bytes:
    return aiokafka_codec.lz4_encode(payload, level=0)


def install(*, fetch_max_wait_ms: int, bootstrap: list[str]) -> None:
    """Apply the fixes to faust's aiokafka driver; call before the app is made."""
    _ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
    _ConsumerThread.bootstrap = bootstrap
    _faust._new_consumer_thread = lambda self: _ConsumerThread(self, loop=self.loop, beacon=self.beacon)
    _faust._new_offset = _new_offset_past_processed_only
    _faust.getmany = _getmany_fenced
    _faust.perform_seek = _perform_seek_fenced
    _faust.seek = _seek_fenced
    _faust._seek = _seek_in_consumer_thread
    _faust.on_partitions_revoked = _revoked_fenced
    _faust.ack = _ack_processed_only
    _faust_recovery._seek_offsets = _seek_fenced_recovery
    _faust_recovery.on_recovery_completed = _complete_current_recovery
    # aiokafka compresses lz4 batches at level 9 (LZ4-HC): 2 ms per MB of notifications, a seventh of a
    # fan-out's CPU. The fast level is ten times quicker for 7 % more bytes; any broker or consumer reads both.
    aiokafka_default_records.lz4_encode = aiokafka_py_default_records.lz4_encode = _fast_lz4
