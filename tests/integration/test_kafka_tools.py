"""The synchronous Kafka tools against the embedded broker: end offsets and whole-topic reads."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.kafka_tools import API_VERSION, end_offsets, ensure_topics, producer, read_topic

pytestmark = pytest.mark.broker


def test_the_end_of_a_partition_whose_last_batch_holds_more_records_than_one_poll_returns(broker):
    ensure_topics(broker.bootstrap, ["big-batches"], 1)
    with_producer = producer(broker.bootstrap, batch_size=1_000_000, linger_ms=500)
    for n in range(3_000):  # one record batch: kafka-python's poll hands out 500 records at a time
        with_producer.send("big-batches", key=b"k", value=b"%d" % n, partition=0)
    with_producer.flush()
    with_producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=API_VERSION, enable_auto_commit=False)
    try:
        tp = TopicPartition("big-batches", 0)
        assert end_offsets(consumer, [tp]) == {tp: 3_000}
    finally:
        consumer.close()
    assert [m.value for m in read_topic(broker.bootstrap, "big-batches")] == [b"%d" % n for n in range(3_000)]
