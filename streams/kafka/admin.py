"""Synchronous Kafka tools on kafka-python: topics, end offsets, lag, producing and reading topics.

Every kafka-python client is built with ``client_options``: the address, the
protocol version, and TLS and SASL from the environment (``KafkaSecurity``, the
settings the worker's faust app connects with).

Workarounds here, each with the test that proves it:
- ``api_version`` is pinned to 2.5: version probing and consumer groups misbehave
  against Tansu otherwise; every Kafka since 2.5 speaks it.
- ``end_offsets`` reads past the reported end: Tansu 0.6 answers ListOffsets with
  the last batch's first offset + 1, and kafka-python hands out 500 records a
  poll (``tests/integration/test_kafka_admin.py``, first two tests).
- ``CheckedProducer``: kafka-python reports a failed delivery only on each
  message's future, so a tool that keeps none would lose messages quietly
  (``tests/integration/test_kafka_admin.py``, the third test).
- ``LineSender`` is not idempotent: after one refused batch an idempotent
  producer's next batches on that partition are refused too (Tansu 0.6; the
  sequence numbers have a gap), so the lines after a bad one would not arrive
  (``tests/test_cli.py``, the broker-refusal test).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import BrokerResponseError, KafkaTimeoutError, MessageSizeTooLargeError, TopicAlreadyExistsError

from streams.errors import BrokerError
from streams.settings import KafkaSecurity

API_VERSION = (2, 5, 0)
WHOLE_BATCH = 1_000_000  # records: more than a 1 MB record batch can hold
# Keys of the pipeline's own control records (ingest's watermarks, written every second): no customer's or
# outage's id starts so (schemas/common.json allows no control characters), and lag does not count them.
CONTROL_KEY_PREFIX = b"\x00"
END_PROBE_SECONDS = 10.0  # for reading a partition's last batch (a new connection, on a loaded machine)
LAG_READ_LIMIT = 1_000  # records behind a commit that lag reads to skip control records; more count as they are


def client_options(bootstrap: str | list[str], security: KafkaSecurity | None = None) -> dict[str, Any]:
    """What every kafka-python client here is built with; ``security`` from the environment if not given."""
    return {"bootstrap_servers": bootstrap, "api_version": API_VERSION,
            **security_options(security or KafkaSecurity.from_env())}


def security_options(security: KafkaSecurity) -> dict[str, Any]:
    """kafka-python's names for the TLS and SASL settings; only those that are set."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        files = {"ssl_cafile": security.ssl_cafile, "ssl_certfile": security.ssl_certfile,
                 "ssl_keyfile": security.ssl_keyfile}
        options.update({name: str(path) for name, path in files.items() if path})
        if security.ssl_key_password:
            options["ssl_password"] = security.ssl_key_password
    if security.sasl:  # kafka-python takes the plain_ names for SCRAM as well
        options.update(sasl_mechanism=security.sasl_mechanism, sasl_plain_username=security.sasl_username,
                       sasl_plain_password=security.sasl_password)
    return options


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int, compacted: Iterable[str] = ()) -> None:
    """Create the topics that do not exist yet; ``compacted`` ones keep the newest record per key."""
    compacted = set(compacted)
    admin = KafkaAdminClient(**client_options(bootstrap), client_id="forewarn-admin")
    try:
        for name in topics:  # one at a time: a batch fails whole when one exists
            configs = {"cleanup.policy": "compact"} if name in compacted else {}
            try:
                admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def end_offsets(consumer: KafkaConsumer, partitions: list[TopicPartition],
                probe: KafkaConsumer | None = None) -> dict[TopicPartition, int]:
    """The offset after the last message of each partition, checked by reading.

    The embedded broker (Tansu 0.6) answers a ListOffsets with the last batch's
    first offset + 1, so after a batch of five it says 1 where Kafka says 5.
    Fetching from there returns that whole batch, whose last offset is the truth
    (asked for in one poll: by default kafka-python hands out 500 records a poll,
    and the worker's batches hold thousands). A partition whose last batch could
    not be read within ``END_PROBE_SECONDS`` raises BrokerError: the reported end
    is too low, and a caller that took it for the end would stop short (a
    watermark "read to its end" with records still unread, a catch-up done early).
    """
    reported = consumer.end_offsets(partitions)
    own_probe = probe is None
    probe = probe or KafkaConsumer(**client_options(consumer.config["bootstrap_servers"]), enable_auto_commit=False)
    try:
        truth = dict(reported)
        waiting = [tp for tp, end in reported.items() if end > 0]
        if waiting:
            probe.assign(waiting)
            for tp in waiting:
                probe.seek(tp, reported[tp] - 1)
            deadline = time.monotonic() + END_PROBE_SECONDS
            while waiting and time.monotonic() < deadline:
                for tp, messages in probe.poll(timeout_ms=100, max_records=WHOLE_BATCH).items():
                    # The fetch answer's high watermark too: a restarted worker's table recovery once stopped at
                    # the ListOffsets answer with the last batch read (under load; the cause was not found).
                    truth[tp] = max(truth[tp], messages[-1].offset + 1, probe.highwater(tp) or 0)
                    if tp in waiting:
                        waiting.remove(tp)
                        probe.pause(tp)
        if waiting:
            raise BrokerError(f"the end of {', '.join(f'{tp.topic}/{tp.partition}' for tp in waiting)} could not be "
                              f"read within {END_PROBE_SECONDS:g} s")
        return truth
    finally:
        if own_probe:
            probe.close()
        else:
            probe.assign([])


def read_end_offsets(bootstrap: str | list[str], partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """``end_offsets`` on a consumer of its own, opened and closed here."""
    consumer = KafkaConsumer(**client_options(bootstrap), enable_auto_commit=False)
    try:
        return end_offsets(consumer, partitions)
    finally:
        consumer.close()


class CheckedProducer(KafkaProducer):
    """A KafkaProducer that does not fail quietly: ``flush`` raises if any message sent could not be delivered.

    kafka-python reports a failed delivery only on the message's future, and
    the tools do not keep a future per message (a million-customer file).

    It also survives a race in kafka-python 3.0's metadata: the answer to a
    metadata request made before a topic was added (on the bootstrap
    connection) can arrive after one that has it and wipe the topic out of the
    client's metadata, and the next ``send`` to it raises ("Topic ... not found
    in ClusterMetadata", or a TypeError in the partitioner). Asking for the
    topic's partitions again brings it back.
    """

    METADATA_RETRIES = 5

    def __init__(self, **configs: Any) -> None:
        super().__init__(**configs)
        self.undelivered = 0
        self.first_failure: BaseException | None = None
        self._closing = False

    def send(self, topic: str, *args: Any, **kwargs: Any):
        for attempt in range(self.METADATA_RETRIES + 1):
            try:
                future = super().send(topic, *args, **kwargs)
                break
            except (ValueError, TypeError):  # which of the two depends on where the answer lands
                if attempt == self.METADATA_RETRIES or self._metadata.partitions_for_topic(topic) is not None:
                    raise
                self._metadata.request_update()
                self.partitions_for(topic)
        future.add_errback(self._failed)
        return future

    def _failed(self, exc: BaseException) -> None:
        self.undelivered += 1
        self.first_failure = self.first_failure or exc

    def flush(self, timeout: float | None = None) -> None:
        try:
            super().flush(timeout)
        except KafkaTimeoutError as exc:
            if self._closing:
                return  # close() goes on to force the sender shut
            raise BrokerError(f"messages were not delivered to Kafka within {timeout} s") from exc
        if self.undelivered and not self._closing:
            raise BrokerError(f"{self.undelivered} messages were not delivered to Kafka; the first: "
                              f"{self.first_failure!r}")

    def close(self, timeout: float | None = None, **options: Any) -> None:
        # kafka-python's close flushes first; a raise there would leave the sender thread running.
        # Undelivered messages are reported by the flush every tool calls before it closes.
        self._closing = True
        super().close(timeout, **options)


def producer(bootstrap: str, **options: Any) -> CheckedProducer:
    # Not idempotent (kafka-python 3 is by default): once Tansu refuses one batch of a sequence it refuses
    # every later one of that partition, and they expire after two minutes. One request in flight keeps
    # each partition's records in order when one is retried.
    return CheckedProducer(**client_options(bootstrap),
                           **{"acks": "all", "linger_ms": 5, "enable_idempotence": False,
                              "max_in_flight_requests_per_connection": 1, **options})


def produce_json(bootstrap: str, topic: str, records: Iterable[tuple[str | None, Any]]) -> int:
    """Send (key, value) pairs as JSON; returns how many were sent."""
    sent = 0
    with_producer = producer(bootstrap)
    try:
        for key, value in records:
            with_producer.send(topic, key=key.encode() if key else None,
                               value=value if isinstance(value, bytes) else orjson.dumps(value))
            sent += 1
        with_producer.flush()
    finally:
        with_producer.close()
    return sent


Line = tuple[int, "bytes | None", bytes]  # line number, key, value


@dataclass(frozen=True)
class Refusal:
    """A line that did not reach the topic, and why."""

    line: int
    reason: str


class LineSender:
    """Sends numbered lines to one topic: a line that is refused is kept with its number and reason, and the
    lines after it still go, in order. Use as a context manager; ``delivered`` counts what arrived.

    Kafka takes or refuses a batch whole, so lines go in windows that are each flushed before the next, and
    the lines of a refused batch are sent again one by one to tell the refused line from its neighbours.
    A window is no larger than a batch, so a partition's share of it is one batch and keeps its order.
    """

    metadata_wait_ms = 10_000
    window_bytes = 256 * 1024

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._producer = KafkaProducer(**client_options(bootstrap), acks="all",
                                       enable_idempotence=False, linger_ms=5, batch_size=self.window_bytes,
                                       max_block_ms=self.metadata_wait_ms)
        self.topic = topic
        self.delivered = 0
        self._refused: list[Refusal] = []
        self._window: list[Line] = []
        self._window_size = 0
        try:
            self._producer.partitions_for(topic)
        except KafkaTimeoutError:
            self._producer.close(timeout=0)
            raise BrokerError(f"no answer about topic {topic} from {bootstrap} within "
                              f"{self.metadata_wait_ms / 1000:.0f} s: the broker is not reachable, or the topic "
                              f"does not exist and the broker does not create topics") from None

    def send(self, line: int, key: bytes | None, value: bytes) -> None:
        self._window.append((line, key, value))
        self._window_size += len(value)
        if self._window_size >= self.window_bytes:
            self._send_window()

    def refuse(self, line: int, reason: str) -> None:
        """Count a line the caller would not send (not JSON, say) with the ones Kafka refused."""
        self._refused.append(Refusal(line, reason))

    def take_refusals(self) -> list[Refusal]:
        """The refusals since the last call, in line order."""
        taken, self._refused = self._refused, []
        return sorted(taken, key=lambda refusal: refusal.line)

    def _send_window(self) -> None:
        window, self._window, self._window_size = self._window, [], 0
        failed = self._deliver(window)
        if len(window) > 1:  # a refused batch takes its good lines along: send each alone to find the bad ones
            failed = [again for item, _ in failed for again in self._deliver([item])]
        for (line, _, _), exc in failed:
            self.refuse(line, _refusal_reason(exc))

    def _deliver(self, lines: list[Line]) -> list[tuple[Line, BaseException]]:
        """Send ``lines`` and wait: those Kafka refused, with the error. Stops if Kafka stopped answering."""
        futures = []
        for line, key, value in lines:
            try:
                futures.append(((line, key, value), self._producer.send(self.topic, key=key, value=value)))
            except MessageSizeTooLargeError:  # checked before sending: no use trying it alone
                self.refuse(line, f"{len(value)} bytes, more than the {self._producer.config['max_request_size']} "
                                  f"bytes one message may have")
        self._producer.flush()
        failed = []
        for item, future in futures:
            if future.succeeded():
                self.delivered += 1
            elif future.retriable():  # kafka-python retried until its delivery time-out: the broker, not the line
                raise BrokerError(f"Kafka stopped taking messages at line {item[0]}: {future.exception} "
                                  f"({self.delivered} sent before)")
            else:
                failed.append((item, future.exception))
        return failed

    def __enter__(self) -> "LineSender":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                self._send_window()
        finally:
            self._producer.close(timeout=0 if exc_type else None)  # on an error or Ctrl-C: no waiting


def _refusal_reason(exc: BaseException) -> str:
    described = exc.description if isinstance(exc, BrokerResponseError) and exc.description else exc
    return f"refused by Kafka ({type(exc).__name__}): {described}"


def read_topic(bootstrap: str, topic: str, timeout: float = 2.0) -> list[Any]:
    """Every message on ``topic`` from the beginning, without joining a group."""
    return [record for record in iter_topic(bootstrap, topic, timeout)]


def iter_topic(bootstrap: str, topic: str, timeout: float = 2.0) -> Iterator[Any]:
    consumer = KafkaConsumer(**client_options(bootstrap), enable_auto_commit=False,
                             consumer_timeout_ms=int(timeout * 1000))
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = end_offsets(consumer, partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=200).items():
                for message in messages:
                    yield message
                    if message.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        consumer.close()


def lag(bootstrap: str, group: str, topics: Iterable[str]) -> int:
    """Messages on ``topics`` that ``group`` has not committed yet, control records (``CONTROL_KEY_PREFIX``) not
    counted where few enough are behind to read."""
    consumer = KafkaConsumer(**client_options(bootstrap), group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = end_offsets(consumer, partitions)
        behind = {tp: (consumer.committed(tp) or 0, ends[tp]) for tp in partitions}
        behind = {tp: (committed, end) for tp, (committed, end) in behind.items() if end > committed}
        readable = {tp: span for tp, span in behind.items() if span[1] - span[0] <= LAG_READ_LIMIT}
        counted = _uncontrolled(bootstrap, readable)
        return sum(counted.get(tp, end - committed) for tp, (committed, end) in behind.items())
    finally:
        consumer.close()


def _uncontrolled(bootstrap: str, spans: dict[TopicPartition, tuple[int, int]]) -> dict[TopicPartition, int]:
    """How many records in each partition's [start, end) are not control records."""
    if not spans:
        return {}
    consumer = KafkaConsumer(**client_options(bootstrap), enable_auto_commit=False)
    try:
        consumer.assign(list(spans))
        for tp, (start, _) in spans.items():
            consumer.seek(tp, start)
        counts = {tp: 0 for tp in spans}
        remaining = set(spans)
        deadline = time.monotonic() + 10
        while remaining and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=200).items():
                start, end = spans[tp]
                for message in messages:
                    if start <= message.offset < end and not (message.key or b"").startswith(CONTROL_KEY_PREFIX):
                        counts[tp] += 1
                if messages and messages[-1].offset + 1 >= end:
                    remaining.discard(tp)
        return {tp: count for tp, count in counts.items() if tp not in remaining}
    finally:
        consumer.close()


def wait_drained(bootstrap: str, group: str, topics: Iterable[str], timeout: float,
                 settle: float = 1.5, alive: Callable[[], bool] = lambda: True) -> bool:
    """True once ``group`` has committed everything on ``topics`` and stayed so for ``settle`` s.

    False on time-out, or as soon as ``alive()`` says the consumer is gone.
    """
    topics = tuple(topics)
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline and alive():
        try:
            behind = lag(bootstrap, group, topics)
        except BrokerError:  # an end not confirmed: not known to be drained
            behind = None
        if behind == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                return True
        else:
            quiet_since = None
        time.sleep(0.5)
    return False


def event_key(line: bytes) -> str | None:
    """The key that keeps one customer's (or one outage's) events in order: same key, same partition."""
    try:
        return key_of(orjson.loads(line))
    except orjson.JSONDecodeError:
        return None


def key_of(event: Any) -> str | None:
    """``event_key`` of an event already parsed."""
    if not isinstance(event, dict):
        return None
    data = event.get("data")
    key = event.get("customer_id") or (data.get("outage_id") if isinstance(data, dict) else None)
    return key if isinstance(key, str) else None  # a malformed event still goes out, to be dead-lettered


def total_end_offset(consumer: KafkaConsumer, topics: Iterable[str], probe: KafkaConsumer | None = None) -> int:
    partitions = [TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic) or ())]
    return sum(end_offsets(consumer, partitions, probe).values())


def replay_in_order(bootstrap: str, topic_for: Callable[[str], str], lines: Iterable[bytes], fallback_topic: str,
                    ingested: Iterable[str], timeout: float = 30.0) -> int:
    """Send event lines one at a time, each only after the worker has taken in the one before.

    Events of one type share a topic but different types do not, and a consumer
    reads its topics in no fixed order; a replay that must be decided in the
    order of the file (the demo, the simulation parity test) waits until the
    previous event has come out of ingest on one of the ``ingested`` topics.
    """
    watcher = KafkaConsumer(**client_options(bootstrap), enable_auto_commit=False)
    probe = KafkaConsumer(**client_options(bootstrap), enable_auto_commit=False)
    sender = producer(bootstrap, linger_ms=0)
    sent = 0
    try:
        ingested = tuple(ingested)
        for line in lines:
            try:
                topic = topic_for(orjson.loads(line)["type"])
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                topic = fallback_topic
            before = total_end_offset(watcher, ingested, probe)
            sender.send(topic, key=(event_key(line) or "").encode() or None, value=line)
            sender.flush()
            sent += 1
            deadline = time.monotonic() + timeout
            while total_end_offset(watcher, ingested, probe) == before:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"event {sent} was not taken in within {timeout} s")
                time.sleep(0.01)
    finally:
        sender.close()
        watcher.close()
        probe.close()
    return sent
