"""The stream's idempotent batch commit and its checkpoint identity guard (no broker)."""

import json

import pytest
from pyspark.sql import functions as F

from fraud_assets.core.stream import (
    CheckpointMismatchError,
    CountedRows,
    clear_staging,
    commit_batch_partition,
    guard_checkpoint,
)

IDENTITY_FILE = "fraud_assets_query.json"


def _table(spark, table_dir) -> list[tuple[int, int]]:
    """``(batch_id, id)`` rows visible to an ordinary Parquet reader of the table."""
    rows = spark.read.parquet(str(table_dir)).select("batch_id", "id").collect()
    return sorted((row["batch_id"], row["id"]) for row in rows)


def _snapshot(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


# --- commit_batch_partition -----------------------------------------------------------------


def test_first_commit_writes_the_batch_partition(spark, tmp_path):
    table = tmp_path / "alerts"
    folder, replayed = commit_batch_partition(spark.range(3), table, 7)
    assert folder == table / "batch_id=7"
    assert replayed is False
    assert _table(spark, table) == [(7, 0), (7, 1), (7, 2)]


def test_a_replayed_batch_is_skipped_and_keeps_the_committed_data(spark, tmp_path):
    table = tmp_path / "alerts"
    commit_batch_partition(spark.range(3), table, 7)
    before = _snapshot(table / "batch_id=7")

    folder, replayed = commit_batch_partition(spark.range(100, 105), table, 7)

    assert (folder, replayed) == (table / "batch_id=7", True)
    assert _table(spark, table) == [(7, 0), (7, 1), (7, 2)]
    assert _snapshot(table / "batch_id=7") == before


def test_batches_accumulate_and_staging_is_left_empty(spark, tmp_path):
    table = tmp_path / "alerts"
    commit_batch_partition(spark.range(2), table, 0)
    commit_batch_partition(spark.range(5, 6), table, 1)
    assert _table(spark, table) == [(0, 0), (0, 1), (1, 5)]
    assert sorted(p.name for p in table.iterdir()) == ["_staging", "batch_id=0", "batch_id=1"]
    assert list((table / "_staging").iterdir()) == []


def test_an_empty_batch_commits_an_empty_partition(spark, tmp_path):
    table = tmp_path / "alerts"
    commit_batch_partition(spark.range(2), table, 0)
    folder, replayed = commit_batch_partition(spark.range(0), table, 1)
    assert folder.is_dir() and replayed is False
    assert _table(spark, table) == [(0, 0), (0, 1)]


def test_a_failed_write_commits_nothing_and_a_retry_succeeds(spark, tmp_path):
    table = tmp_path / "alerts"
    commit_batch_partition(spark.range(1), table, 0)
    failing = spark.range(3).select(
        F.when(F.col("id") < 1, F.col("id")).otherwise(F.raise_error(F.lit("boom"))).alias("id")
    )
    with pytest.raises(Exception, match="boom"):
        commit_batch_partition(failing, table, 1)
    assert not (table / "batch_id=1").exists()
    # Whatever the failed write left in _staging is invisible to readers.
    assert _table(spark, table) == [(0, 0)]

    folder, replayed = commit_batch_partition(spark.range(10, 12), table, 1)
    assert replayed is False
    assert _table(spark, table) == [(0, 0), (1, 10), (1, 11)]


def test_interrupted_staging_is_invisible_and_cleared_without_touching_commits(spark, tmp_path):
    table = tmp_path / "alerts"
    commit_batch_partition(spark.range(2), table, 0)
    # What a crash between the staging write and the rename leaves behind.
    spark.range(50, 53).write.parquet(str(table / "_staging" / "batch_id=1-deadbeef"))
    assert _table(spark, table) == [(0, 0), (0, 1)]

    clear_staging(table)

    assert not (table / "_staging").exists()
    assert _table(spark, table) == [(0, 0), (0, 1)]
    clear_staging(table)  # nothing left to clear is fine


# --- guard_checkpoint -----------------------------------------------------------------------


def test_counts_are_observed_while_the_batch_is_written(spark, tmp_path):
    rows = spark.range(10).withColumn("even", F.col("id") % 2 == 0)
    counted = CountedRows(rows, F.count(F.lit(1)).alias("n"), F.count_if("even").alias("even"))
    _, existed = commit_batch_partition(counted.df, tmp_path / "t", 0)
    assert existed is False
    assert counted.result(written=True) == {"n": 10, "even": 5}
    assert len(_table(spark, tmp_path / "t")) == 10


def test_counts_of_a_skipped_replay_come_from_the_data(spark, tmp_path):
    commit_batch_partition(spark.range(10), tmp_path / "t", 0)
    replay = CountedRows(spark.range(7), F.count(F.lit(1)).alias("n"))
    _, existed = commit_batch_partition(replay.df, tmp_path / "t", 0)
    assert existed is True
    # The write never ran, so nothing was observed: the batch is counted by a job of its own.
    assert replay.result(written=False) == {"n": 7}


def test_first_start_records_the_query_identity(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "scoring"
    guard_checkpoint(checkpoint, "fraud_scoring", "transactions")
    recorded = json.loads((checkpoint / IDENTITY_FILE).read_text())
    assert recorded == {"query_name": "fraud_scoring", "source_topic": "transactions"}
    assert [p.name for p in checkpoint.iterdir()] == [IDENTITY_FILE]


def test_an_existing_empty_folder_is_a_first_start(tmp_path):
    checkpoint = tmp_path / "scoring"
    checkpoint.mkdir()
    guard_checkpoint(checkpoint, "fraud_scoring", "transactions")
    assert (checkpoint / IDENTITY_FILE).is_file()


def test_the_same_identity_restarts(tmp_path):
    checkpoint = tmp_path / "scoring"
    guard_checkpoint(checkpoint, "fraud_scoring", "transactions")
    (checkpoint / "offsets").mkdir()  # Spark's own files appear after the first batch
    (checkpoint / "offsets" / "0").write_text("v1\n{}\n")
    before = _snapshot(checkpoint)
    guard_checkpoint(checkpoint, "fraud_scoring", "transactions")
    assert _snapshot(checkpoint) == before


@pytest.mark.parametrize(
    ("query_name", "topic"),
    [("fraud_scoring", "transactions_v2"), ("other_query", "transactions")],
)
def test_another_identity_is_refused_and_the_folder_is_untouched(tmp_path, query_name, topic):
    checkpoint = tmp_path / "scoring"
    guard_checkpoint(checkpoint, "fraud_scoring", "transactions")
    (checkpoint / "offsets").mkdir()
    (checkpoint / "offsets" / "0").write_text("v1\n{}\n")
    before = _snapshot(checkpoint)

    with pytest.raises(CheckpointMismatchError) as error:
        guard_checkpoint(checkpoint, query_name, topic)

    assert "belongs to" in str(error.value)
    assert "never deletes checkpoints" in str(error.value)
    assert _snapshot(checkpoint) == before


def test_a_non_empty_folder_without_identity_is_refused(tmp_path):
    checkpoint = tmp_path / "scoring"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "metadata").write_text('{"id":"someone-else"}')
    before = _snapshot(checkpoint)

    with pytest.raises(CheckpointMismatchError, match="unknown query"):
        guard_checkpoint(checkpoint, "fraud_scoring", "transactions")

    assert _snapshot(checkpoint) == before
    assert not (checkpoint / IDENTITY_FILE).exists()
