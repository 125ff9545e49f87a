"""Reading a query's checkpoint and progress: where real-time delivery starts and stops."""

import json

import pytest
from pyspark.sql import functions as F

from fraud_assets.core.queries import (
    batch_offsets,
    committed_offsets,
    owes_no_data_batch,
    reached,
    session_conf,
)
from fraud_assets.core.spark import SHUFFLE_PARTITIONS
from fraud_assets.core.stream_run import DeliveryModeError, RunSettings


def _batch(checkpoint, batch_id, offsets, committed=True, watermark=0, next_watermark=0):
    """One batch in Spark's checkpoint format: ran with ``watermark``, committed ``next_…``."""
    metadata = {"batchWatermarkMs": watermark, "batchTimestampMs": 1}
    (checkpoint / "offsets").mkdir(parents=True, exist_ok=True)
    (checkpoint / "offsets" / str(batch_id)).write_text(
        f"v1\n{json.dumps(metadata)}\n{json.dumps(offsets)}\n"
    )
    if committed:
        (checkpoint / "commits").mkdir(exist_ok=True)
        (checkpoint / "commits" / str(batch_id)).write_text(
            f'v1\n{{"nextBatchWatermarkMs":{next_watermark}}}\n'
        )


def test_committed_offsets_are_the_end_of_the_newest_committed_batch(tmp_path):
    _batch(tmp_path, 0, {"tx": {"0": 5, "1": 7}})
    _batch(tmp_path, 1, {"tx": {"0": 9, "1": 12}})
    _batch(tmp_path, 2, {"tx": {"0": 20, "1": 30}}, committed=False)  # planned, not done
    assert json.loads(committed_offsets(tmp_path)) == {"tx": {"0": 9, "1": 12}}


def test_no_commit_means_no_offsets(tmp_path):
    assert committed_offsets(tmp_path) is None
    _batch(tmp_path, 0, {"tx": {"0": 5}}, committed=False)
    assert committed_offsets(tmp_path) is None


def test_a_malformed_offsets_log_fails_here(tmp_path):
    _batch(tmp_path, 0, {"tx": {"0": 5}})
    (tmp_path / "offsets" / "0").write_text("v1\n{}\nnot json\n")
    with pytest.raises(ValueError):
        committed_offsets(tmp_path)


def test_a_batch_reads_from_the_previous_batch_s_end_to_its_own(tmp_path):
    _batch(tmp_path, 0, {"tx": {"0": 5, "1": 7}})
    _batch(tmp_path, 1, {"tx": {"0": 9, "1": 12}})
    # Planned, not yet run: its offsets are in the log before the writer is called.
    _batch(tmp_path, 2, {"tx": {"0": 20, "1": 12, "2": 3}}, committed=False)
    first = batch_offsets(tmp_path, 1)
    assert (first.start, first.end) == ({"tx": {"0": 5, "1": 7}}, {"tx": {"0": 9, "1": 12}})
    assert first.messages == 4 + 5
    assert batch_offsets(tmp_path, 2).messages == 11 + 0 + 3  # a new partition is read from 0
    # The first batch starts at the query's starting offsets, which the log does not hold.
    assert batch_offsets(tmp_path, 0) is None
    assert batch_offsets(tmp_path, 3) is None  # not planned
    assert batch_offsets(tmp_path / "elsewhere", 1) is None


def test_a_stop_after_a_batch_that_moved_the_watermark_owes_its_no_data_batch(tmp_path):
    assert not owes_no_data_batch(tmp_path)  # a new checkpoint
    _batch(tmp_path, 0, {"p": {"0": 5}}, watermark=0, next_watermark=60_000)
    assert owes_no_data_batch(tmp_path)
    # The no-data batch ran with that watermark and moved it no further: nothing owed.
    _batch(tmp_path, 1, {"p": {"0": 5}}, watermark=60_000, next_watermark=60_000)
    assert not owes_no_data_batch(tmp_path)


def test_a_planned_batch_is_rerun_by_spark_so_nothing_is_owed(tmp_path):
    _batch(tmp_path, 0, {"p": {"0": 5}}, watermark=0, next_watermark=60_000)
    _batch(tmp_path, 1, {"p": {"0": 5}}, committed=False, watermark=60_000)
    assert not owes_no_data_batch(tmp_path)


def test_reached_needs_every_partition_at_or_past_its_target():
    progress = {"sources": [{"endOffset": json.dumps({"tx": {"0": 10, "1": 4}})}]}
    assert reached(progress, "tx", {0: 10, 1: 4})
    assert reached(progress, "tx", {0: 3})
    assert not reached(progress, "tx", {0: 10, 1: 5})
    assert not reached(progress, "tx", {2: 0})  # a partition it has not read
    assert not reached(None, "tx", {0: 0})
    assert not reached({"sources": []}, "tx", {0: 0})


def test_an_unknown_delivery_mode_is_refused_with_the_variable_to_set():
    with pytest.raises(DeliveryModeError, match="FRAUD_ALERT_DELIVERY.*microbatch, realtime"):
        RunSettings(delivery="batchy")
    assert RunSettings(delivery="realtime").is_realtime
    assert not RunSettings().is_realtime


def test_a_query_started_in_session_conf_keeps_it_and_the_session_gets_its_own_back(
    spark, tmp_path
):
    """The KPI query's state partitions are its own (KpiSettings.state_partitions)."""
    before = spark.conf.get(SHUFFLE_PARTITIONS)
    assert before != "1"  # else the test shows nothing
    counts = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", 10)
        .load()
        .groupBy((F.col("value") % 3).alias("k"))
        .count()
    )
    checkpoint = tmp_path / "checkpoint"
    with session_conf(spark, SHUFFLE_PARTITIONS, "1"):
        query = (
            counts.writeStream.format("memory")
            .queryName("session_conf_counts")
            .outputMode("complete")
            .option("checkpointLocation", str(checkpoint))
            .trigger(availableNow=True)
            .start()
        )
    assert spark.conf.get(SHUFFLE_PARTITIONS) == before
    try:
        query.awaitTermination(60)
    finally:
        query.stop()
    metadata = json.loads((checkpoint / "offsets" / "0").read_text().splitlines()[1])
    assert metadata["conf"][SHUFFLE_PARTITIONS] == "1"
    # One state partition per stateful operator: the state folder says so.
    partitions = [p.name for p in (checkpoint / "state" / "0").iterdir() if p.name.isdigit()]
    assert partitions == ["0"]
