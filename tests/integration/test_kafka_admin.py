"""The synchronous Kafka tools against the embedded broker: end offsets and whole-topic reads."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streams.kafka.admin import API_VERSION, end_offsets, ensure_topics, lag, producer, read_topic

pytestmark = pytest.mark.broker


def one_big_batch(bootstrap: str, topic: str, count: int) -> None:
    ensure_topics(bootstrap, [topic], 1)
    with_producer = producer(bootstrap, batch_size=1_000_000, linger_ms=500)
    for n in range(count):
        with_producer.send(topic, key=b"k", value=b"%d" % n, partition=0)
    with_producer.flush()
    with_producer.close()


def test_the_end_of_a_partition_whose_last_batch_holds_more_records_than_one_poll_returns(broker):
    one_big_batch(broker.bootstrap, "big-batches", 3_000)  # kafka-python's poll hands out 500 records at a time
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=API_VERSION, enable_auto_commit=False)
    try:
        tp = TopicPartition("big-batches", 0)
        assert end_offsets(consumer, [tp]) == {tp: 3_000}
    finally:
        consumer.close()
    assert [m.value for m in read_topic(broker.bootstrap, "big-batches")] == [b"%d" % n for n in range(3_000)]


def test_the_lag_of_a_group_counts_to_the_end_of_a_big_last_batch(broker):
    """What the tests wait on before the next step: a short count let an outage overtake customers being loaded."""
    one_big_batch(broker.bootstrap, "big-lag", 3_000)
    group = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=API_VERSION, group_id="lagging",
                          enable_auto_commit=False)
    try:
        group.commit({TopicPartition("big-lag", 0): OffsetAndMetadata(600, "", -1)})
    finally:
        group.close()
    assert lag(broker.bootstrap, "lagging", ["big-lag"]) == 2_400


def test_a_producer_whose_messages_were_not_delivered_says_so_when_flushed():
    """A tool that produces a file must not report success for messages Kafka never took."""
    from streams.kafka.embedded import EmbeddedBroker
    from streams.errors import BrokerError

    with EmbeddedBroker() as gone:
        ensure_topics(gone.bootstrap, ["doomed"], 1)
        sender = producer(gone.bootstrap, linger_ms=200, delivery_timeout_ms=1_500, request_timeout_ms=1_000,
                          retry_backoff_ms=50)
        sender.partitions_for("doomed")  # metadata known, so the sends below queue instead of blocking
        gone.stop()
        for n in range(3):
            sender.send("doomed", value=b"%d" % n)
        # Either the sends expire and fail, or the flush gives up waiting: never a quiet success.
        with pytest.raises(BrokerError, match="not delivered"):
            sender.flush(timeout=10)
        sender.close(timeout=1)  # after a failed flush, close still shuts the sender down
        sender._sender.join(10)
        assert not sender._sender.is_alive()
