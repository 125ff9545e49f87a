"""The alert digest and the sink comparison, on tiny Parquet alert tables written by Spark."""

import json
import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from pyspark.sql import types as T

from fraud_assets.core import digest
from fraud_assets.core.contracts import ALERT_SCHEMA
from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.sinks import commit_batch_partition
from fraud_assets.defs.audits import alert_digest
from fraud_assets.defs.resources import ProjectResource
from fraud_assets_tests.conftest import REPO_ROOT

SCORED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def alert_row(index: int, amount: float, label: int | None, batch: int) -> dict:
    return {
        "alert_id": f"lr-1:tx-{index}",
        "transaction_id": f"tx-{index}",
        "event_time": datetime(2013, 9, 1, tzinfo=UTC) + timedelta(seconds=index),
        "Amount": amount,
        "Class": label,
        "fraud_prob": 0.9,
        "threshold": 0.5,
        "model_version": "lr-1",
        "is_alert": True,
        "prediction": 1,
        "scored_at": SCORED_AT + timedelta(seconds=10 * batch + index),
    }


def write_batches(spark, table, batches: dict[int, list[dict]]) -> None:
    for batch_id, rows in batches.items():
        commit_batch_partition(spark.createDataFrame(rows, ALERT_SCHEMA), table, batch_id)


@pytest.fixture
def project(tmp_path) -> ProjectResource:
    return ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path / "state"))


def test_digest_of_a_missing_table_is_empty(spark, tmp_path):
    summary = digest.alert_digest(tmp_path / "alerts")
    assert summary.alerts == 0
    assert summary.precision_so_far is None
    assert summary.latest.empty and summary.largest.empty


def test_digest_counts_orders_and_precision_over_labelled_alerts(spark, tmp_path):
    table = tmp_path / "alerts"
    write_batches(
        spark,
        table,
        {
            0: [alert_row(1, 10.0, 1, 0), alert_row(2, 500.0, 0, 0)],
            1: [alert_row(3, 42.5, None, 1), alert_row(4, 7.0, 1, 1), alert_row(5, 99.0, 1, 1)],
        },
    )
    summary = digest.alert_digest(table, top=2)
    assert summary.alerts == 5
    assert summary.distinct_transactions == 5
    assert summary.labelled == 4  # tx-3 has no label yet
    assert summary.true_frauds == 3
    assert summary.precision_so_far == pytest.approx(0.75)
    assert summary.by_model_version == {"lr-1": 5}
    assert list(summary.largest["transaction_id"]) == ["tx-2", "tx-5"]
    assert list(summary.latest["transaction_id"]) == ["tx-5", "tx-4"]
    assert list(summary.latest["batch_id"]) == [1, 1]


def test_alert_digest_asset_reports_a_table_and_writes_its_json(spark, project):
    write_batches(
        spark,
        project.stream_paths.alerts_table,
        {0: [alert_row(1, 10.0, 1, 0), alert_row(2, 500.0, 0, 0)]},
    )
    result = alert_digest(project=project)
    metadata = result.metadata
    assert metadata["alerts"] == 2
    assert metadata["precision_so_far"] == dg.MetadataValue.float(0.5)
    latest = metadata["latest_alerts"]
    assert isinstance(latest, dg.TableMetadataValue)
    assert {record.data["transaction_id"] for record in latest.records} == {"tx-1", "tx-2"}
    written = json.loads((project.paths.tables_dir / "alert_digest.json").read_text())
    assert written["alerts"] == 2
    assert written["largest"][0]["transaction_id"] == "tx-2"


def test_partitions_without_a_batch_log_are_in_flight_only_while_recent(spark, tmp_path):
    table, logs = tmp_path / "alerts", tmp_path / "batches"
    write_batches(
        spark,
        table,
        {0: [alert_row(1, 1.0, 0, 0)], 1: [alert_row(2, 2.0, 0, 1)], 2: [alert_row(3, 3.0, 0, 2)]},
    )
    write_json_atomic(logs / "batch-000000000000.json", {"batch_id": 0})
    old = time.time() - 3600
    os.utime(table / "batch_id=1", (old, old))

    in_flight = digest.in_flight_batches(table, logs, grace_seconds=900)
    assert in_flight == [2]
    assert digest.alert_ids_in_batches(spark, table, in_flight) == {"tx-3"}


def test_sink_audit_separates_lost_in_flight_and_kafka_only_ids():
    audit = digest.audit_alert_sinks(
        parquet_ids=["a", "b", "c", "c"],
        kafka_ids=["a", "a", "z"],
        in_flight_ids={"c"},
    )
    assert audit.parquet_rows == 4 and audit.parquet_distinct == 3
    assert audit.kafka_records == 3 and audit.kafka_distinct == 2
    assert audit.missing_from_kafka == ["b"]
    assert audit.in_flight == ["c"]
    assert audit.kafka_only == ["z"]
    assert not audit.kafka_complete and not audit.parquet_complete

    clean = digest.audit_alert_sinks(["a", "b"], ["b", "a", "b"])
    assert clean.kafka_complete and clean.parquet_complete
    assert not digest.audit_alert_sinks(["a"], ["a"], malformed_kafka_records=1).kafka_complete


def test_digest_tables_show_each_alerts_top_features_as_text(spark, tmp_path):
    table = tmp_path / "alerts"
    explained = {
        **alert_row(1, 10.0, 1, 0),
        "top_features": [
            {"feature": "V14", "contribution": 2.312},
            {"feature": "V4", "contribution": -1.0},
        ],
    }
    write_batches(spark, table, {0: [explained, alert_row(2, 5.0, 0, 0)]})
    summary = digest.alert_digest(table)
    largest = summary.largest
    shown = dict(zip(largest["transaction_id"], largest["top_features"], strict=True))
    assert shown["tx-1"] == "V14 (+2.31), V4 (-1.00)"
    assert shown["tx-2"] is None  # written before explanations existed


def test_digest_reads_partitions_written_before_a_column_existed(spark, tmp_path):
    table = tmp_path / "alerts"
    old_schema = T.StructType([f for f in ALERT_SCHEMA.fields if f.name != "top_features"])
    old_row = {k: v for k, v in alert_row(1, 10.0, 1, 0).items() if k != "top_features"}
    commit_batch_partition(spark.createDataFrame([old_row], old_schema), table, 0)
    explained = {
        **alert_row(2, 20.0, 0, 1),
        "top_features": [{"feature": "V14", "contribution": 1.5}],
    }
    write_batches(spark, table, {1: [explained]})
    summary = digest.alert_digest(table)
    largest = summary.largest
    shown = dict(zip(largest["transaction_id"], largest["top_features"], strict=True))
    assert shown == {"tx-2": "V14 (+1.50)", "tx-1": None}
    assert list(summary.latest["batch_id"]) == [1, 0]
