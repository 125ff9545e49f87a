"""Spark's bulk replay on the real broker: every row once, in order, in the producer's
partition, with the producer's messages."""

import math

import pytest

from fraud_assets.core.replay import bulk_replay
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.io import read_topic
from fraud_assets.kafka.producer import ReplayError, encode_message, replay, transaction_message
from fraud_assets_tests.kafka_fixtures import audited_rows, write_audited_table
from fraud_assets_tests.messages import assert_same_message

pytestmark = pytest.mark.integration


def test_bulk_replay_sends_every_row_once_in_order_like_the_producer(
    spark, kafka_broker, unique_topics, tmp_path
):
    rows = audited_rows(120)
    rows[3]["V5"] = 0.0005  # printed 5.0E-4 by Java
    # Part files in reverse order: the replay must sort by row_index itself.
    table = write_audited_table(tmp_path / "audited_transactions", rows, files=3)
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
    bulk_topic, producer_topic = unique_topics(partitions=2), unique_topics(partitions=2)

    # Slices of 25 rows: five Spark jobs, one after the other.
    result = bulk_replay(spark, table, kafka, bulk_topic, slice_rows=25, progress=False)
    replay(table, kafka_broker.bootstrap_servers, producer_topic, progress=False)

    assert result.sent == len(rows) and result.rate_tps > 0
    records = read_topic(kafka, bulk_topic, timeout_s=30)
    keys = [r.key.decode() for r in records]
    assert sorted(keys) == [row["transaction_id"] for row in rows]  # each exactly once
    by_id = {row["transaction_id"]: row for row in rows}
    for record in records:
        _, expected_value = encode_message(transaction_message(by_id[record.key.decode()]))
        assert_same_message(expected_value, record.value)
    for partition in (0, 1):
        indexes = [by_id[r.key.decode()]["row_index"] for r in records if r.partition == partition]
        assert indexes == sorted(indexes) and indexes
    # Kafka's default partitioner on the same key: the same partition as kafka-python's.
    produced = read_topic(kafka, producer_topic, timeout_s=30)
    assert {(r.key, r.partition) for r in records} == {(r.key, r.partition) for r in produced}


def test_bulk_replay_refuses_a_row_json_cannot_carry_and_sends_nothing(
    spark, kafka_broker, unique_topics, tmp_path
):
    rows = audited_rows(10)
    rows[7]["Amount"] = math.nan
    table = write_audited_table(tmp_path / "audited_transactions", rows)
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
    topic = unique_topics(partitions=1)

    with pytest.raises(ReplayError, match="1 rows .* cannot be sent"):
        bulk_replay(spark, table, kafka, topic, progress=False)
    assert read_topic(kafka, topic) == []


def test_bulk_replay_to_a_missing_topic_says_how_to_create_it(spark, kafka_broker, tmp_path):
    table = write_audited_table(tmp_path / "audited_transactions", audited_rows(3))
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
    with pytest.raises(ReplayError, match="does not exist.*kafka start"):
        bulk_replay(spark, table, kafka, "no-such-topic", progress=False)
