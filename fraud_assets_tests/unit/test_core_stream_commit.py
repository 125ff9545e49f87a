"""The stream's idempotent batch commit, concurrent outputs and checkpoint guard (no broker)."""

import json
import threading
import time

import pytest
from pyspark.sql import functions as F

from fraud_assets.core.queries import CheckpointMismatchError, guard_checkpoint
from fraud_assets.core.sinks import clear_staging, commit_batch_partition, run_concurrently

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


# --- run_concurrently -------------------------------------------------------------------------


def test_output_steps_run_at_the_same_time_and_each_is_timed(spark, tmp_path):
    # Each step waits until both have started: run one after the other, this never ends.
    both_started = threading.Barrier(2, timeout=30)

    def step(batch_id):
        both_started.wait()
        commit_batch_partition(spark.range(batch_id + 1), tmp_path / "t", batch_id)

    elapsed = run_concurrently({"a": lambda: step(0), "b": lambda: step(1)})

    assert set(elapsed) == {"a", "b"} and all(ms >= 0 for ms in elapsed.values())
    assert _table(spark, tmp_path / "t") == [(0, 0), (1, 0), (1, 1)]


def test_a_failing_step_is_raised_after_the_others_finished(spark, tmp_path):
    finished = []

    def slow():
        time.sleep(0.5)
        commit_batch_partition(spark.range(2), tmp_path / "t", 0)
        finished.append("slow")

    def failing():
        raise RuntimeError("kafka is down")

    with pytest.raises(RuntimeError, match="kafka is down"):
        run_concurrently({"failing": failing, "slow": slow})
    assert finished == ["slow"]
    assert _table(spark, tmp_path / "t") == [(0, 0), (0, 1)]


def test_a_failing_spark_job_in_a_step_surfaces_its_error(spark, tmp_path):
    failing = spark.range(3).select(F.raise_error(F.lit("boom")).alias("id"))
    with pytest.raises(Exception, match="boom"):
        run_concurrently({"alerts": lambda: commit_batch_partition(failing, tmp_path / "t", 0)})
    assert not (tmp_path / "t" / "batch_id=0").exists()


# --- guard_checkpoint -----------------------------------------------------------------------


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
