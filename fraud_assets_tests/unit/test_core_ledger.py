"""The micro-batch ledger: one pass over parsed messages, and every output derived from it.

Real local Spark on tiny data, no broker: the ledger of a batch of Kafka-shaped records
against the functions batch scoring uses (``score_transactions``, ``alerts``,
``dead_letters``, ``window_kpis``), which the stream's outputs must equal.
"""

import json
from collections import Counter

import pytest
from pyspark.sql import functions as F

from fraud_assets.core.contracts import (
    ALERT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    KPI_COUNT_COLUMNS,
    KPI_PARTIAL_SCHEMA,
    LEDGER_SCHEMA,
    LEDGER_TABLE_SCHEMA,
    field_names,
)
from fraud_assets.core.explain import top_features
from fraud_assets.core.kpis import kpi_events, kpi_partial_records, window_kpis
from fraud_assets.core.scoring import (
    alert_kafka_records,
    alerts,
    dead_letters,
    filter_valid,
    ledger_alerts,
    ledger_dead_letters,
    ledger_projection,
    ledger_rows,
    parse_transactions,
    score_transactions,
    score_with_features,
)
from fraud_assets.core.sinks import commit_batch_partition, read_batch_partition
from fraud_assets.core.train import TrainingConfig, fit
from fraud_assets.kafka.producer import encode_message, transaction_message
from fraud_assets_tests.factories import (
    audited_df,
    json_bytes,
    kafka_record,
    kafka_records_df,
    separable_model,
    separable_transactions,
)

VERSION = "lr-20260101T000000Z"
THRESHOLD = 0.5
ROWS = separable_transactions(40)
REJECTED = {
    # offset -> (value, reason)
    100: (b'{"transaction_id": "x1", "V1": ', "malformed_json"),
    101: (
        json_bytes({k: v for k, v in transaction_message(ROWS[3]).items() if k != "V3"}),
        "missing_or_invalid_field:V3",
    ),
    102: (json_bytes({**transaction_message(ROWS[4]), "Amount": -1.0}), "negative_amount"),
}


def _records(spark, rows=ROWS, rejected=REJECTED):
    valid = [
        kafka_record(value, key, offset=i, partition=1)
        for i, (key, value) in enumerate(encode_message(transaction_message(r)) for r in rows)
    ]
    bad = [kafka_record(value, b"bad", offset=o, partition=1) for o, (value, _) in rejected.items()]
    return kafka_records_df(spark, valid + bad)


@pytest.fixture(scope="module")
def model(spark):
    return separable_model(spark)


@pytest.fixture(scope="module")
def parsed(spark):
    return parse_transactions(_records(spark)).cache()


@pytest.fixture(scope="module")
def ledger(model, parsed):
    projection = ledger_projection(THRESHOLD, VERSION, top_features(model))
    return ledger_rows(parsed, model, projection).cache()


def test_every_message_is_one_ledger_row_with_the_contract_columns(ledger):
    assert ledger.columns == field_names(LEDGER_SCHEMA)
    assert ledger.count() == len(ROWS) + len(REJECTED)


def test_valid_rows_carry_exactly_the_batch_score(spark, model, ledger):
    expected = score_transactions(model, audited_df(spark, ROWS), THRESHOLD, VERSION)
    want = {r["transaction_id"]: (r["fraud_prob"], r["is_alert"]) for r in expected.collect()}
    rows = ledger.where("reason IS NULL").collect()
    got = {r["transaction_id"]: (r["fraud_prob"], r["is_alert"]) for r in rows}
    assert got == want  # bit for bit: the same compiled expression
    assert {(r["threshold"], r["model_version"]) for r in rows} == {(THRESHOLD, VERSION)}
    assert 0 < sum(alert for _, alert in got.values()) < len(got)
    for row in rows:
        assert row["key"] is None and row["value"] is None and row["source_offset"] is None
        assert (row["scored_at"] is not None) == row["is_alert"]
        assert (row["top_features"] is not None) == row["is_alert"]


def test_rejected_rows_keep_their_reason_bytes_and_origin_and_no_score(ledger):
    rows = {r["source_offset"]: r for r in ledger.where("reason IS NOT NULL").collect()}
    assert set(rows) == set(REJECTED)
    for offset, (value, reason) in REJECTED.items():
        row = rows[offset]
        assert (row["reason"], row["value"], row["key"]) == (reason, value.decode(), "bad")
        assert (row["source_topic"], row["source_partition"]) == ("transactions", 1)
        assert row["fraud_prob"] is None and row["is_alert"] is None and row["Amount"] is None


def test_alerts_of_the_ledger_are_the_batch_alerts(model, parsed, ledger):
    scored = score_with_features(model, filter_valid(parsed), THRESHOLD, VERSION)
    expected = alerts(scored, F.current_timestamp(), top_features(model))
    compared = [n for n in field_names(ALERT_SCHEMA) if n != "scored_at"]
    derived = ledger_alerts(ledger)
    assert derived.columns == field_names(ALERT_SCHEMA)
    assert sorted(map(tuple, derived.select(*compared).collect())) == sorted(
        map(tuple, expected.select(*compared).collect())
    )
    assert derived.where("scored_at IS NULL").count() == 0


def test_the_same_batch_scored_twice_gives_identical_alerts_stamped_with_its_scoring_time(
    spark, model, parsed, tmp_path
):
    # The early alerts of a small micro-batch and the ledger its tables come from are two
    # computations of one batch (so are a batch and its replay): with the batch's recorded
    # scoring time they must be the same records, byte for byte.
    scored_at_ms = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z
    projection = ledger_projection(THRESHOLD, VERSION, top_features(model))
    records = [
        alert_kafka_records(ledger_alerts(ledger_rows(parsed, model, projection, None, ms)))
        for ms in (scored_at_ms, scored_at_ms, scored_at_ms + 1)
    ]
    first, again, later = (sorted(map(tuple, r.collect())) for r in records)
    assert first == again and len(first) > 0
    assert first != later  # the time is in the records: it is not the clock of each run
    stamps = {json.loads(value)["scored_at"] for _, value in first}
    assert stamps == {"2026-01-01T00:00:00.123Z"}
    # The committed ledger gives the same records as the ledger computed in the batch.
    commit_batch_partition(ledger_rows(parsed, model, projection, None, scored_at_ms), tmp_path, 3)
    committed = read_batch_partition(spark, tmp_path, 3, LEDGER_TABLE_SCHEMA)
    assert sorted(map(tuple, alert_kafka_records(ledger_alerts(committed)).collect())) == first


def test_dead_letters_of_the_ledger_are_the_parsed_dead_letters(parsed, ledger):
    derived = ledger_dead_letters(ledger)
    assert derived.columns == field_names(DEAD_LETTER_SCHEMA)
    assert sorted(map(tuple, derived.collect())) == sorted(
        map(tuple, dead_letters(parsed).collect())
    )


def test_a_tree_model_scores_a_batch_with_rejected_rows_missing_features(spark, model):
    # Spark ML's VectorAssembler fails a job on a null feature: rejected rows must not
    # reach it with their nulls (the missing V3 above), yet valid rows score unchanged.
    forest = fit(audited_df(spark, separable_transactions(200)), TrainingConfig(algorithm="rf"))
    parsed = parse_transactions(_records(spark))
    ledger = ledger_rows(parsed, forest, ledger_projection(THRESHOLD, "rf-1")).collect()
    expected = score_transactions(forest, audited_df(spark, ROWS), THRESHOLD, "rf-1").collect()
    assert {r["transaction_id"]: r["fraud_prob"] for r in ledger if r["reason"] is None} == {
        r["transaction_id"]: r["fraud_prob"] for r in expected
    }
    assert sorted(r["source_offset"] for r in ledger if r["reason"] is not None) == sorted(REJECTED)


def test_kpi_partials_sum_to_the_batch_kpis(spark, ledger):
    with_batch = ledger.withColumn("batch_id", F.lit(7).cast("long"))
    records = kpi_partial_records(with_batch, "stream-1", "partials").collect()
    partials = [json.loads(r["value"]) for r in records]
    assert {r["topic"] for r in records} == {"partials"}
    for record, partial in zip(records, partials, strict=True):
        assert set(partial) == set(field_names(KPI_PARTIAL_SCHEMA))
        assert (partial["stream_id"], partial["batch_id"]) == ("stream-1", 7)
        assert record["key"].startswith("stream-1:7:")
    sums = {}
    for partial in partials:
        window = partial["window_start"]
        sums.setdefault(window, Counter()).update({c: partial[c] for c in KPI_COUNT_COLUMNS})
    batch = window_kpis(kpi_events(ledger)).collect()
    assert len(batch) == len(sums) > 1
    for row in batch:
        window = row["window_start"].strftime("%Y-%m-%dT%H:%M:%S")
        [key] = [k for k in sums if k.startswith(window)]
        assert {c: row[c] for c in KPI_COUNT_COLUMNS} == dict(sums[key])
    # Rejected rows with a readable event time count as invalid in their window.
    assert sum(row["n_invalid"] for row in batch) == 2
    assert sum(row["n_txn"] for row in batch) == len(ROWS)


def test_a_second_batch_compiles_no_new_code(spark, model, tmp_path):
    # A value that changes per batch (a timestamp, a batch id) as a literal in the plan is
    # new generated code, compiled again for every micro-batch: the ledger and the outputs
    # derived from it, as the writer builds them, must reuse the first batch's code.
    metrics = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics
    projection = ledger_projection(THRESHOLD, VERSION, top_features(model))
    table = tmp_path / "ledger"

    def one_batch(rows, batch_id, scored_at_ms):
        parsed = parse_transactions(_records(spark, rows))
        ledger = ledger_rows(parsed, model, projection, None, scored_at_ms)
        # A small batch's early alerts: the same scoring, straight to Kafka records.
        early = alert_kafka_records(ledger_alerts(ledger_rows(parsed, model, projection)))
        assert len(early.collect()) > 0
        commit_batch_partition(ledger, table, batch_id)
        committed = read_batch_partition(spark, table, batch_id, LEDGER_TABLE_SCHEMA)
        assert ledger_alerts(committed).count() > 0
        assert len(kpi_partial_records(committed, "s", "t").collect()) > 0

    one_batch(separable_transactions(60)[40:], 1, 1_767_225_600_000)
    compiled = metrics.METRIC_COMPILATION_TIME().getCount()
    one_batch(separable_transactions(80)[60:], 2, 1_767_225_601_000)
    assert metrics.METRIC_COMPILATION_TIME().getCount() == compiled
