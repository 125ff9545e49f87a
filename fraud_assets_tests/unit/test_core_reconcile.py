"""Reconciliation of the stream's sinks against the batch expectation, as exact id sets."""

import json
from datetime import UTC, datetime

import pytest

from fraud_assets.core.contracts import ALERT_SCHEMA, ALERTS_TABLE_SCHEMA, field_names
from fraud_assets.core.reconcile import (
    batch_log_totals,
    kafka_alert_ids,
    parquet_alert_ids,
    reconcile_alerts,
)
from fraud_assets.core.scoring import alert_kafka_records

VERSION = "lr-20260101T000000Z"
EVENT_TIME = datetime(2013, 9, 1, 0, 6, 46, tzinfo=UTC)
SCORED_AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _alert(transaction_id: str) -> dict:
    """One alert as its JSON payload carries it."""
    return {
        "alert_id": f"{VERSION}:{transaction_id}",
        "transaction_id": transaction_id,
        "event_time": EVENT_TIME.isoformat(),
        "Amount": 12.5,
        "Class": 1,
        "fraud_prob": 0.97,
        "threshold": 0.9,
        "model_version": VERSION,
        "is_alert": True,
        "prediction": 1,
        "scored_at": SCORED_AT.isoformat(),
        "top_features": [{"feature": "V14", "contribution": -4.5}],
    }


def _alert_row(transaction_id: str, batch_id: int | None = None) -> tuple:
    values = {**_alert(transaction_id), "event_time": EVENT_TIME, "scored_at": SCORED_AT}
    row = tuple(values[name] for name in field_names(ALERT_SCHEMA))
    return row if batch_id is None else (*row, batch_id)


# --- reconcile_alerts -----------------------------------------------------------------------


def test_identical_sinks_are_exact():
    result = reconcile_alerts({"1", "2", "3"}, ["3", "1", "2"], ["2", "3", "1"])
    assert result.exact
    assert result.as_dict() == {
        "alerts_expected": 3,
        "alerts_parquet": 3,
        "alerts_parquet_distinct": 3,
        "alerts_kafka": 3,
        "alerts_kafka_distinct": 3,
        "missing_alerts": 0,
        "unexpected_alerts": 0,
        "duplicate_alerts_parquet": 0,
        "missing_ids": [],
        "unexpected_ids": [],
        "exact": True,
    }


def test_an_id_missing_from_parquet_is_reported():
    result = reconcile_alerts({"1", "2", "3"}, ["1", "2"], ["1", "2", "3"])
    assert not result.exact
    assert (result.missing_alerts, result.missing_ids) == (1, ["3"])
    assert result.unexpected_ids == []


def test_an_id_missing_from_kafka_only_is_still_missing():
    result = reconcile_alerts({"1", "2", "3"}, ["1", "2", "3"], ["1", "3"])
    assert not result.exact
    assert (result.missing_alerts, result.missing_ids) == (1, ["2"])


def test_an_unexpected_id_in_either_sink_is_reported():
    result = reconcile_alerts({"1", "2"}, ["1", "2", "x"], ["1", "2", "y"])
    assert not result.exact
    assert (result.unexpected_alerts, result.unexpected_ids) == (2, ["x", "y"])
    assert result.missing_alerts == 0


def test_a_parquet_duplicate_is_counted_and_breaks_exactness():
    result = reconcile_alerts({"1", "2"}, ["1", "2", "2", "2"], ["1", "2"])
    assert not result.exact
    assert result.duplicate_alerts_parquet == 2
    assert (result.alerts_parquet, result.alerts_parquet_distinct) == (4, 2)
    assert result.missing_alerts == result.unexpected_alerts == 0


def test_kafka_duplicates_are_allowed_at_least_once():
    result = reconcile_alerts({"1", "2"}, ["1", "2"], ["1", "2", "1", "2", "2"])
    assert result.exact
    assert (result.alerts_kafka, result.alerts_kafka_distinct) == (5, 2)


def test_no_alerts_anywhere_is_exact():
    assert reconcile_alerts(set(), [], []).exact


def test_id_samples_are_sorted_and_capped():
    expected = {f"{i:03d}" for i in range(30)}
    result = reconcile_alerts(expected, [], [], sample=5)
    assert result.missing_alerts == 30
    assert result.missing_ids == ["000", "001", "002", "003", "004"]


# --- kafka_alert_ids ------------------------------------------------------------------------


def _record(payload: dict) -> bytes:
    return json.dumps(payload).encode()


def test_kafka_ids_from_valid_records_keep_duplicates_and_order():
    values = [_record(_alert("7")), _record(_alert("3")), _record(_alert("7"))]
    assert kafka_alert_ids(values, [b"7", b"3", b"7"]) == ["7", "3", "7"]


def test_kafka_ids_of_records_written_by_spark_round_trip(spark):
    rows = [_alert_row("5"), _alert_row("11")]
    records = alert_kafka_records(spark.createDataFrame(rows, ALERT_SCHEMA)).collect()
    keys = [r["key"].encode() for r in records]
    values = [r["value"].encode() for r in records]
    assert sorted(kafka_alert_ids(values, keys)) == ["11", "5"]


def test_a_key_other_than_the_transaction_id_is_refused():
    with pytest.raises(ValueError, match="is not its transaction_id"):
        kafka_alert_ids([_record(_alert("7"))], [b"8"])


def test_a_record_without_key_is_refused():
    with pytest.raises(ValueError, match="is not its transaction_id"):
        kafka_alert_ids([_record(_alert("7"))], [None])


@pytest.mark.parametrize("field", [f.name for f in ALERT_SCHEMA.fields])
def test_a_record_missing_a_contract_field_is_refused(field):
    payload = {k: v for k, v in _alert("7").items() if k != field}
    with pytest.raises(ValueError, match="lacks contract fields"):
        kafka_alert_ids([_record(payload)], [b"7"])


@pytest.mark.parametrize("value", [None, b"[1, 2]", b'"7"', b"not json"])
def test_a_record_that_is_not_a_json_alert_is_refused(value):
    with pytest.raises(ValueError):
        kafka_alert_ids([value], [b"7"])


def test_keys_and_values_of_different_lengths_are_refused():
    with pytest.raises(ValueError):
        kafka_alert_ids([_record(_alert("7"))], [b"7", b"8"])


# --- the Parquet side and the batch logs ----------------------------------------------------


def test_parquet_alert_ids_read_every_batch_partition_with_duplicates(spark, tmp_path):
    table = tmp_path / "alerts"
    rows = [_alert_row("1", 0), _alert_row("2", 0), _alert_row("2", 1), _alert_row("9", 1)]
    spark.createDataFrame(rows, ALERTS_TABLE_SCHEMA).write.partitionBy("batch_id").parquet(
        str(table)
    )
    assert sorted(parquet_alert_ids(spark, table)) == ["1", "2", "2", "9"]


def test_parquet_alert_ids_of_a_table_never_written_is_empty(spark, tmp_path):
    assert parquet_alert_ids(spark, tmp_path / "alerts") == []


def test_batch_log_totals_sum_the_committed_batches(tmp_path):
    for batch_id, (rows, alerts) in enumerate([(10, 2), (5, 0), (7, 1)]):
        stats = {"input_rows": rows, "scored": rows - 1, "alerts": alerts, "invalid": 1}
        (tmp_path / f"batch-{batch_id:012d}.json").write_text(json.dumps(stats))
    (tmp_path / "notes.json").write_text("{}")  # not a batch log
    assert batch_log_totals(tmp_path) == {
        "batches": 3,
        "input_rows": 22,
        "scored": 19,
        "alerts": 3,
        "invalid": 3,
    }
