"""Parse, validate and score: Kafka-shaped records in, scored rows, alerts and dead letters out.

Also the training helpers the scoring model is built with (split, class weights, fit).
"""

import json
import math
from datetime import UTC, datetime

import pytest
from pyspark.sql import functions as F

from fraud_assets.core.contracts import (
    ALERT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    EVENT_TIME_BASE,
    EVENT_TIME_BASE_EPOCH_SECONDS,
    PCA_COLUMNS,
    SCORED_TRANSACTIONS_SCHEMA,
    TRANSACTION_MESSAGE_SCHEMA,
    field_names,
)
from fraud_assets.core.reconcile import kafka_alert_ids
from fraud_assets.core.scoring import (
    MAX_MESSAGE_BYTES,
    alert_kafka_records,
    alerts,
    dead_letters,
    filter_valid,
    parse_transactions,
    score_transactions,
)
from fraud_assets.core.train import (
    WEIGHT_COLUMN,
    TrainingConfig,
    fit,
    time_ordered_split,
    with_class_weight,
)
from fraud_assets.kafka.producer import encode_message, transaction_message
from fraud_assets_tests.factories import (
    KAFKA_TIMESTAMP,
    audited_df,
    json_bytes,
    kafka_record,
    kafka_records_df,
    separable_model,
    separable_transactions,
)

VERSION = "lr-20260101T000000Z"
SCORED_AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _message(index: int = 7) -> dict:
    """A valid ``transactions`` message, as the replay producer builds it."""
    return transaction_message(separable_transactions(index + 1)[index])


def _without(message: dict, name: str) -> dict:
    return {key: value for key, value in message.items() if key != name}


# --- parsing and validation -----------------------------------------------------------------

# name -> (key, value bytes, expected reason; None = valid)
CASES: dict[str, tuple[bytes | None, bytes | None, str | None]] = {
    "valid": (*encode_message(_message()), None),
    "unknown_extra_field": (b"9", json_bytes({**_message(), "merchant": "ACME"}), None),
    "class_missing": (b"10", json_bytes(_without(_message(), "Class")), None),
    "event_time_with_offset": (
        b"11",
        json_bytes({**_message(), "event_time": "2013-09-01T02:00:05+02:00"}),
        None,
    ),
    "malformed_json": (b"12", b'{"transaction_id": "12", "V1": ', "malformed_json"),
    "json_array": (b"13", b"[1, 2, 3]", "malformed_json"),
    "json_null_literal": (b"14", b"null", "malformed_json"),
    "missing_V3": (b"15", json_bytes(_without(_message(), "V3")), "missing_or_invalid_field:V3"),
    "missing_event_time": (
        b"16",
        json_bytes(_without(_message(), "event_time")),
        "missing_or_invalid_field:event_time",
    ),
    "negative_amount": (b"17", json_bytes({**_message(), "Amount": -0.01}), "negative_amount"),
    "nan_V5": (b"18", json_bytes({**_message(), "V5": float("nan")}), "non_finite:V5"),
    "minus_infinity_amount": (
        b"19",
        json_bytes({**_message(), "Amount": float("-inf")}),
        "non_finite:Amount",
    ),
    "invalid_class": (b"20", json_bytes({**_message(), "Class": 7}), "invalid_class"),
    "null_value": (b"21", None, "empty_message"),
    "oversized": (
        b"22",
        json_bytes({**_message(), "padding": "x" * MAX_MESSAGE_BYTES}),
        "oversized",
    ),
    "invalid_event_time": (
        b"23",
        json_bytes({**_message(), "event_time": "yesterday at noon"}),
        "invalid_event_time",
    ),
    "impossible_event_time": (
        b"24",
        json_bytes({**_message(), "event_time": "2013-02-30T00:00:00Z"}),
        "invalid_event_time",
    ),
}
V3_AS_TEXT = (b"30", json_bytes({**_message(), "V3": "abc"}))
PARTITION = 3
OFFSETS = {name: 1000 + position for position, name in enumerate([*CASES, "V3_as_text"])}


@pytest.fixture(scope="module")
def records(spark):
    rows = [
        kafka_record(value, key, offset=OFFSETS[name], partition=PARTITION)
        for name, (key, value, _) in CASES.items()
    ]
    rows.append(kafka_record(V3_AS_TEXT[1], V3_AS_TEXT[0], offset=OFFSETS["V3_as_text"]))
    return kafka_records_df(spark, rows)


@pytest.fixture(scope="module")
def parsed(records):
    return parse_transactions(records).cache()


@pytest.fixture(scope="module")
def parsed_by_offset(parsed) -> dict[int, dict]:
    return {row["source_offset"]: row.asDict() for row in parsed.collect()}


@pytest.mark.parametrize("case", list(CASES))
def test_rejection_reason(parsed_by_offset, case):
    assert parsed_by_offset[OFFSETS[case]]["reason"] == CASES[case][2]


def test_a_number_sent_as_text_is_rejected(parsed_by_offset):
    # Spark's PERMISSIVE parser flags the whole record as corrupt when a field has the wrong
    # type, so the first rule that fires is malformed_json (not missing_or_invalid_field:V3).
    assert parsed_by_offset[OFFSETS["V3_as_text"]]["reason"] == "malformed_json"


def test_valid_message_is_parsed_field_by_field(spark, parsed):
    message = _message()
    row = (
        parsed.where(F.col("source_offset") == OFFSETS["valid"])
        .select("*", F.unix_micros("event_time").alias("event_micros"))
        .first()
        .asDict()
    )
    assert row["reason"] is None
    for name in field_names(TRANSACTION_MESSAGE_SCHEMA):
        if name != "event_time":
            assert row[name] == message[name], name
    assert row["transaction_id"] == "7"
    assert row["event_micros"] == (EVENT_TIME_BASE_EPOCH_SECONDS + message["Time"]) * 1_000_000
    assert (row["key"], row["value"]) == ("7", encode_message(message)[1].decode())
    assert (row["source_topic"], row["source_partition"]) == ("transactions", PARTITION)
    assert row["kafka_timestamp"] == KAFKA_TIMESTAMP


def test_missing_label_parses_as_null(parsed_by_offset):
    assert parsed_by_offset[OFFSETS["class_missing"]]["Class"] is None


def test_event_time_offsets_are_converted_to_utc(parsed):
    micros = (
        parsed.where(F.col("source_offset") == OFFSETS["event_time_with_offset"])
        .select(F.unix_micros("event_time"))
        .first()[0]
    )
    assert micros == (EVENT_TIME_BASE_EPOCH_SECONDS + 5) * 1_000_000


def test_filter_valid_keeps_exactly_the_valid_messages(parsed):
    offsets = {row["source_offset"] for row in filter_valid(parsed).collect()}
    assert offsets == {OFFSETS[name] for name, case in CASES.items() if case[2] is None}


def test_dead_letters_keep_reason_bytes_and_provenance(parsed):
    letters = dead_letters(parsed)
    assert letters.columns == field_names(DEAD_LETTER_SCHEMA)
    got = {
        row["source_offset"]: (
            row["reason"],
            row["key"],
            row["value"],
            row["source_topic"],
            row["source_partition"],
            row["kafka_timestamp"],
        )
        for row in letters.collect()
    }
    expected = {
        OFFSETS[name]: (
            reason,
            key.decode(),
            None if value is None else value.decode(),
            "transactions",
            PARTITION,
            KAFKA_TIMESTAMP,
        )
        for name, (key, value, reason) in CASES.items()
        if reason is not None
    }
    expected[OFFSETS["V3_as_text"]] = (
        "malformed_json",
        V3_AS_TEXT[0].decode(),
        V3_AS_TEXT[1].decode(),
        "transactions",
        0,
        KAFKA_TIMESTAMP,
    )
    assert got == expected


def _from_json_calls(df) -> int:
    return df._jdf.queryExecution().executedPlan().toString().count("from_json")


def test_json_is_parsed_once_in_the_executed_plan(records):
    assert _from_json_calls(parse_transactions(records)) == 1


def test_the_streams_persisted_parse_is_parsed_once_for_both_outputs(records):
    # The stream's foreachBatch persists the parse, then splits it into valid and rejected.
    parsed = parse_transactions(records).persist()
    try:
        assert _from_json_calls(filter_valid(parsed)) == 1
        assert _from_json_calls(dead_letters(parsed)) == 1
        assert filter_valid(parsed).count() == 4
    finally:
        parsed.unpersist()


def test_filter_valid_on_an_unpersisted_parse_parses_once(spark, records, tmp_path):
    # A Parquet scan, not a local relation: what a batch read of a topic dump looks like.
    path = str(tmp_path / "records")
    records.write.parquet(path)
    valid = filter_valid(parse_transactions(spark.read.parquet(path)))
    assert _from_json_calls(valid) == 1


# --- training -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transactions(spark):
    return audited_df(spark, separable_transactions(200)).cache()


@pytest.fixture(scope="module")
def model(spark):
    return separable_model(spark)


def test_time_ordered_split_trains_on_the_earliest_rows(spark):
    # Built in reverse so that DataFrame order is not what makes the split right.
    shuffled = audited_df(spark, list(reversed(separable_transactions(50))))
    train, holdout = time_ordered_split(shuffled, 0.2)
    train_index = sorted(row[0] for row in train.select("row_index").collect())
    holdout_index = sorted(row[0] for row in holdout.select("row_index").collect())
    assert train_index == list(range(40))
    assert holdout_index == list(range(40, 50))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_time_ordered_split_refuses_a_fraction_outside_0_1(spark, fraction):
    with pytest.raises(ValueError, match="holdout_fraction"):
        time_ordered_split(audited_df(spark, separable_transactions(3)), fraction)


def test_time_ordered_split_never_loses_rows(spark):
    df = audited_df(spark, separable_transactions(10))

    def indexes(part):
        return sorted(row[0] for row in part.select("row_index").collect())

    # 1 - 0.9 == 0.09999999999999998 in floating point: the train size is rounded (1 row),
    # not truncated (0 rows), so a 0.9 holdout of 10 rows splits 1 + 9.
    train, holdout = time_ordered_split(df, 0.9)
    assert indexes(train) == [0]
    assert indexes(holdout) == list(range(1, 10))
    # A fraction that leaves one side empty is refused, saying why, rather than losing it.
    with pytest.raises(ValueError, match="leaves 0 rows to train"):
        time_ordered_split(df, 0.99)
    with pytest.raises(ValueError, match="leaves 10 rows to train"):
        time_ordered_split(df, 0.01)


def test_class_weights_give_each_class_half_of_the_total(transactions):
    sums = {
        row["Class"]: (row["total"], row["n"])
        for row in with_class_weight(transactions)
        .groupBy("Class")
        .agg(F.sum(WEIGHT_COLUMN).alias("total"), F.count(F.lit(1)).alias("n"))
        .collect()
    }
    assert sums[1][1] == 20 and sums[0][1] == 180
    assert sums[1][0] == pytest.approx(100.0)
    assert sums[0][0] == pytest.approx(100.0)


def test_fit_refuses_single_class_data(spark):
    legit = [row for row in separable_transactions(30) if row["Class"] == 0]
    with pytest.raises(ValueError, match="both classes"):
        fit(audited_df(spark, legit), TrainingConfig(max_iter=5))


# --- scoring and alerts ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def probabilities(model, transactions) -> dict[str, float]:
    scored = score_transactions(model, transactions, 0.5, VERSION)
    return {row["transaction_id"]: row["fraud_prob"] for row in scored.collect()}


def test_model_separates_the_classes(probabilities):
    frauds = [probabilities[str(i)] for i in range(0, 200, 10)]
    legit = [p for tid, p in probabilities.items() if int(tid) % 10]
    assert min(frauds) > max(legit)
    assert all(0.0 < p < 1.0 for p in probabilities.values())


def test_is_alert_is_fraud_prob_at_or_above_threshold_at_the_boundary(
    model, transactions, probabilities
):
    boundary_id = "30"
    threshold = probabilities[boundary_id]
    rows = score_transactions(model, transactions, threshold, VERSION).collect()
    assert {row["transaction_id"]: row["fraud_prob"] for row in rows} == probabilities
    for row in rows:
        assert row["is_alert"] == (row["fraud_prob"] >= threshold)
        assert row["prediction"] == int(row["is_alert"])
        assert row["threshold"] == threshold and row["model_version"] == VERSION
    by_id = {row["transaction_id"]: row for row in rows}
    assert by_id[boundary_id]["is_alert"] is True
    assert 0 < sum(row["is_alert"] for row in rows) < len(rows)

    just_above = math.nextafter(threshold, 1.0)
    above = score_transactions(model, transactions, just_above, VERSION)
    assert above.where(F.col("transaction_id") == boundary_id).first()["is_alert"] is False


def test_scored_rows_have_the_contract_columns(model, transactions):
    scored = score_transactions(model, transactions, 0.5, VERSION)
    assert scored.columns == field_names(SCORED_TRANSACTIONS_SCHEMA)


def test_unlabelled_transactions_are_scored(spark, model, probabilities):
    rows = [{**row, "Class": None} for row in separable_transactions(12)[10:12]]
    scored = score_transactions(model, audited_df(spark, rows), 0.5, VERSION).collect()
    assert [(row["transaction_id"], row["Class"]) for row in scored] == [("10", None), ("11", None)]
    assert scored[0]["fraud_prob"] == probabilities["10"]


@pytest.fixture(scope="module")
def alert_rows(spark, model, transactions):
    scored = score_transactions(model, transactions, 0.5, VERSION)
    return alerts(scored, F.lit(SCORED_AT)).cache()


def test_alerts_are_the_alerting_rows_with_deterministic_ids(alert_rows, probabilities):
    rows = alert_rows.withColumn("scored_at_micros", F.unix_micros("scored_at")).collect()
    assert alert_rows.columns == field_names(ALERT_SCHEMA)
    assert {row["transaction_id"] for row in rows} == {
        tid for tid, p in probabilities.items() if p >= 0.5
    }
    for row in rows:
        assert row["alert_id"] == f"{VERSION}:{row['transaction_id']}"
        assert row["is_alert"] is True and row["prediction"] == 1
        assert row["scored_at_micros"] == int(SCORED_AT.timestamp()) * 1_000_000


def test_alert_kafka_records_are_keyed_by_transaction_id_with_every_field(alert_rows):
    records = alert_kafka_records(alert_rows).collect()
    assert len(records) == alert_rows.count() > 0
    for record in records:
        payload = json.loads(record["value"])
        assert set(payload) == set(field_names(ALERT_SCHEMA))
        assert record["key"] == payload["transaction_id"]
        assert payload["alert_id"] == f"{VERSION}:{payload['transaction_id']}"
        assert payload["model_version"] == VERSION


def test_alert_of_an_unlabelled_transaction_keeps_every_contract_field(spark, model):
    fraud = {**separable_transactions(1)[0], "Class": None}
    scored = score_transactions(model, audited_df(spark, [fraud]), 0.5, VERSION)
    records = alert_kafka_records(alerts(scored, F.lit(SCORED_AT))).collect()
    assert len(records) == 1
    payload = json.loads(records[0]["value"])
    assert set(payload) == set(field_names(ALERT_SCHEMA))
    assert kafka_alert_ids([records[0]["value"].encode()], [b"0"]) == ["0"]


def test_event_time_survives_scoring(model, transactions):
    first = (
        score_transactions(model, transactions, 0.5, VERSION)
        .where(F.col("transaction_id") == "3")
        .select(F.unix_micros("event_time"))
        .first()[0]
    )
    assert first == int(EVENT_TIME_BASE.timestamp() + 30) * 1_000_000


def test_message_built_by_the_producer_round_trips_all_pca_fields(parsed_by_offset):
    row = parsed_by_offset[OFFSETS["valid"]]
    assert [row[name] for name in PCA_COLUMNS] == [_message()[name] for name in PCA_COLUMNS]
