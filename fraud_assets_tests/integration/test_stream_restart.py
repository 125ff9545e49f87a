"""The scoring query on the real broker: restarts lose and duplicate nothing, bad input is
dead-lettered with a reason, and a checkpoint is never reused by another query."""

import json
from datetime import timedelta

import pytest
from pyspark.sql import functions as F

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, EVENT_TIME_BASE
from fraud_assets.core.reconcile import (
    batch_log_totals,
    expected_alert_ids,
    kafka_alert_ids,
    parquet_alert_ids,
)
from fraud_assets.core.registry import Promotion
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.stream import (
    CheckpointMismatchError,
    ScoringBatchWriter,
    StreamPaths,
    StreamSettings,
    await_query,
    read_transactions_batch,
    start_scoring_query,
)
from fraud_assets.core.train import TrainingConfig, fit
from fraud_assets.kafka.io import produce_messages, read_topic
from fraud_assets.kafka.producer import encode_message, transaction_message
from fraud_assets_tests.real_data import distinct_transactions, write_real_subset

pytestmark = pytest.mark.integration

BAD_MESSAGES = [
    (b"bad-1", b"{not json", "malformed_json"),
    (b"bad-2", b'{"transaction_id": "x", "event_time": "2013-09-01T00:00:00Z"}', None),
    (b"bad-3", None, "empty_message"),
    (b"bad-4", b"x" * 20_000, "oversized"),
]


@pytest.fixture(scope="module")
def real_rows(tmp_path_factory, repo_paths):
    folder = tmp_path_factory.mktemp("real")
    subset = distinct_transactions(
        write_real_subset(repo_paths.dataset_csv, folder / "subset.csv", first_rows=2000)
    )
    subset = subset.assign(
        transaction_id=subset["row_index"].astype(str),
        event_time=[EVENT_TIME_BASE + timedelta(seconds=float(t)) for t in subset["Time"]],
    )
    return subset[list(AUDITED_TRANSACTIONS_SCHEMA.fieldNames())].reset_index(drop=True)


@pytest.fixture(scope="module")
def model_and_promotion(spark, real_rows):
    frame = spark.createDataFrame(real_rows, schema=AUDITED_TRANSACTIONS_SCHEMA)
    model = fit(frame, TrainingConfig(max_iter=30))
    return model, Promotion("test-lr", 0.5, "fixed", "2026-01-01T00:00:00+00:00")


def _messages(rows):
    return [encode_message(transaction_message(row)) for row in rows.to_dict(orient="records")]


def _fresh_run(kafka_broker, unique_topics, tmp_path, partitions):
    """New topics on the session's broker, and tables and checkpoints under ``tmp_path``."""
    topics = Topics(
        transactions=unique_topics(partitions=partitions, prefix="tx"),
        alerts=unique_topics(partitions=1, prefix="alerts"),
        dead_letter=unique_topics(partitions=1, prefix="dlq"),
    )
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, topics=topics)
    return kafka, StreamPaths.under(tmp_path / "tables", tmp_path / "checkpoints")


def _run_bounded(spark, kafka, paths, model, promotion):
    writer = ScoringBatchWriter(spark, kafka, paths, model, promotion)
    query = start_scoring_query(
        spark, kafka, paths, writer, StreamSettings(max_offsets_per_trigger=400), bounded=True
    )
    await_query(query)
    return writer


def test_restart_on_the_same_checkpoint_loses_and_duplicates_nothing(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    model, promotion = model_and_promotion
    kafka, paths = _fresh_run(kafka_broker, unique_topics, tmp_path, partitions=2)
    topics = kafka.topics
    first, second = real_rows.iloc[:1200], real_rows.iloc[1200:]

    produce_messages(kafka.bootstrap_servers, topics.transactions, _messages(first))
    produce_messages(
        kafka.bootstrap_servers, topics.transactions, [(k, v) for k, v, _ in BAD_MESSAGES]
    )
    run1 = _run_bounded(spark, kafka, paths, model, promotion)
    assert run1.totals.scored == len(first)
    assert run1.totals.invalid == len(BAD_MESSAGES)
    assert run1.totals.batches >= 2  # maxOffsetsPerTrigger splits the backlog

    # A restart (new writer, same checkpoint) picks up only what arrived since.
    produce_messages(kafka.bootstrap_servers, topics.transactions, _messages(second))
    run2 = _run_bounded(spark, kafka, paths, model, promotion)
    assert run2.totals.scored == len(second)
    assert run2.totals.invalid == 0

    everything = spark.createDataFrame(real_rows, schema=AUDITED_TRANSACTIONS_SCHEMA)
    expected = expected_alert_ids(model, everything, promotion)
    parquet_ids = parquet_alert_ids(spark, paths.alerts_table)
    records = read_topic(kafka.bootstrap_servers, topics.alerts)
    kafka_ids = kafka_alert_ids([r.value for r in records], [r.key for r in records])
    assert expected, "the model must alert on some real frauds"
    assert sorted(parquet_ids) == sorted(expected)  # exactly once in Parquet
    assert set(kafka_ids) == expected
    assert batch_log_totals(paths.batch_log_dir)["scored"] == len(real_rows)

    # Dead letters: the original bytes, the reason, the source coordinates.
    letters = [json.loads(r.value) for r in read_topic(kafka.bootstrap_servers, topics.dead_letter)]
    assert len(letters) == len(BAD_MESSAGES)
    by_key = {letter["key"]: letter for letter in letters}
    for key, value, reason in BAD_MESSAGES:
        letter = by_key[key.decode()]
        assert letter["source_topic"] == topics.transactions
        assert letter["source_offset"] >= 0
        assert letter["reason"] == (reason or "missing_or_invalid_field:Time")
        if value is not None and reason != "oversized":
            assert letter["value"] == value.decode()
    quarantine = spark.read.parquet(str(paths.quarantine_table))
    assert quarantine.where(F.col("reason").isNotNull()).count() == len(BAD_MESSAGES)
    # Only batches that rejected something have a quarantine partition, with exactly their
    # rejected rows (the count is observed while the alerts are written).
    logs = [json.loads(p.read_text()) for p in paths.batch_log_dir.glob("batch-*.json")]
    rejecting = {log["batch_id"]: log["invalid"] for log in logs if log["invalid"]}
    assert sum(rejecting.values()) == len(BAD_MESSAGES)
    per_partition = {
        r["batch_id"]: r["count"] for r in quarantine.groupBy("batch_id").count().collect()
    }
    assert per_partition == rejecting
    assert len(logs) > len(rejecting)  # some batches were clean...
    partitions = {int(p.name.split("=")[1]) for p in paths.quarantine_table.glob("batch_id=*")}
    assert partitions == set(rejecting)  # ...and wrote no (empty) quarantine partition


def test_a_replayed_batch_reports_the_same_counts_and_commits_nothing_twice(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    """A batch run again under its id (a crash before Spark's commit) finds its partitions,
    writes nothing new and still counts its rejected rows (no write to observe them in)."""
    model, promotion = model_and_promotion
    kafka, paths = _fresh_run(kafka_broker, unique_topics, tmp_path, partitions=1)
    topics = kafka.topics
    tables = tmp_path / "tables"
    produce_messages(kafka.bootstrap_servers, topics.transactions, _messages(real_rows.iloc[:300]))
    produce_messages(
        kafka.bootstrap_servers, topics.transactions, [(k, v) for k, v, _ in BAD_MESSAGES]
    )
    records = read_transactions_batch(spark, kafka)
    writer = ScoringBatchWriter(spark, kafka, paths, model, promotion)
    writer(records, 7)
    files = sorted(tables.rglob("*.parquet"))
    writer(records, 7)
    first, again = writer.totals.history
    assert (first.replayed, again.replayed) == (False, True)
    assert (again.scored, again.alerts, again.invalid) == (
        first.scored,
        first.alerts,
        first.invalid,
    )
    assert (first.scored, first.invalid) == (300, len(BAD_MESSAGES))
    assert sorted(tables.rglob("*.parquet")) == files
    assert spark.read.parquet(str(paths.quarantine_table)).count() == len(BAD_MESSAGES)


def test_checkpoint_of_another_topic_is_refused_and_kept(
    spark, kafka_broker, unique_topics, tmp_path, model_and_promotion
):
    model, promotion = model_and_promotion
    paths = StreamPaths.under(tmp_path / "tables", tmp_path / "checkpoints")
    kafka_a = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topics=Topics(transactions=unique_topics(prefix="tx-a")),
    )
    _run_bounded(spark, kafka_a, paths, model, promotion)
    before = sorted(p.name for p in paths.checkpoint_dir.iterdir())

    kafka_b = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topics=Topics(transactions=unique_topics(prefix="tx-b")),
    )
    with pytest.raises(CheckpointMismatchError, match="never deletes checkpoints"):
        _run_bounded(spark, kafka_b, paths, model, promotion)
    assert sorted(p.name for p in paths.checkpoint_dir.iterdir()) == before
