"""An operator's threshold change and model switch, applied by a running stream on the real
broker: from the next micro-batch, nothing lost or duplicated, every change logged.

The switch promotes an XGBoost model over the logistic regression, so the same run shows
the stream scoring with either kind of model (compiled expression, XGBoost's predictor)."""

import json

import pytest

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, FEATURE_COLUMNS
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.reconcile import expected_alert_ids, kafka_alert_ids
from fraud_assets.core.registry import ModelRegistry, Promotion
from fraud_assets.core.scoring import with_fraud_prob
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.stream import ScoringBatchWriter
from fraud_assets.core.train import TrainingConfig, fit
from fraud_assets.kafka.io import read_topic
from fraud_assets_tests.integration.streams import score_in_parts

pytestmark = pytest.mark.integration

V1 = "lr-20260101T000000Z"
V2 = "xgb-20260102T000000Z"
OLD, NEW = 0.9, 0.2
"""Batch 1 alerts at 0.9; an operator lowers it to 0.2 for batch 2, then promotes V2 at the
threshold that makes its 20 highest scores of batch 3 alerts."""


def test_threshold_change_and_promotion_apply_from_the_next_micro_batch(
    spark,
    kafka_broker,
    unique_topics,
    tmp_path,
    real_rows,
    model_and_promotion,
):
    model, _ = model_and_promotion
    training = spark.createDataFrame(real_rows, schema=AUDITED_TRANSACTIONS_SCHEMA)
    xgboost = fit(training, TrainingConfig(algorithm="xgb", xgb_n_estimators=30, xgb_max_depth=3))
    registry = ModelRegistry(tmp_path / "models")
    metadata = {"features": list(FEATURE_COLUMNS), "metrics": {"pr_auc": 0.8}}
    registry.save(V1, model, metadata)
    registry.save(V2, xgboost, metadata)
    first_promotion = registry.promote(V1, OLD, "max_f1", 0.8, changed_by="selection")

    topics = Topics(
        transactions=unique_topics(partitions=2, prefix="tx"),
        alerts=unique_topics(partitions=1, prefix="alerts"),
        dead_letter=unique_topics(partitions=1, prefix="dlq"),
        kpi_partials=unique_topics(partitions=1, prefix="partials"),
    )
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, topics=topics)
    paths = StreamPaths.under(tmp_path / "tables", tmp_path / "checkpoints")
    parts = [real_rows.iloc[:800], real_rows.iloc[800:1400], real_rows.iloc[1400:]]
    frames = [spark.createDataFrame(p, schema=AUDITED_TRANSACTIONS_SCHEMA) for p in parts]
    xgboost_scores = with_fraud_prob(xgboost, frames[2]).select("fraud_prob").collect()
    switched = sorted({r["fraud_prob"] for r in xgboost_scores}, reverse=True)[19]
    expected = [
        expected_alert_ids(model, frames[0], first_promotion),
        expected_alert_ids(model, frames[1], Promotion(V1, NEW, "manual", "")),
        expected_alert_ids(xgboost, frames[2], Promotion(V2, switched, "m", "")),
    ]
    # The change must matter: batch 2 at the old threshold would alert on fewer ids.
    assert expected[1] - expected_alert_ids(model, frames[1], first_promotion)
    assert expected[0] and expected[2]

    writer = ScoringBatchWriter(spark, kafka, paths, model, first_promotion, registry=registry)

    def change(index: int) -> None:
        if index == 1:
            registry.set_threshold(NEW, changed_by="alice", reason="catch more fraud")
        elif index == 2:
            registry.promote(V2, switched, "manual", 0.8, changed_by="bob", reason="new model")

    score_in_parts(spark, kafka, paths, writer, parts, change)
    assert writer.totals.scored == len(real_rows)

    # Parquet: exactly the expected ids, once each, with the threshold and version applied.
    table = spark.read.parquet(str(paths.alerts_table)).collect()
    by_id = {}
    for row in table:
        assert row["transaction_id"] not in by_id, "duplicated in Parquet"
        by_id[row["transaction_id"]] = row
    settings = [(V1, OLD), (V1, NEW), (V2, switched)]
    assert set(by_id) == expected[0] | expected[1] | expected[2]
    for ids, (version, threshold) in zip(expected, settings, strict=True):
        for transaction_id in ids:
            row = by_id[transaction_id]
            assert (row["model_version"], row["threshold"]) == (version, threshold)
            assert row["alert_id"] == f"{version}:{transaction_id}"
            assert row["fraud_prob"] >= threshold
            assert 1 <= len(row["top_features"]) <= 3

    # Kafka: the same alerts, no duplicates (no crash, no replay), same fields.
    records = read_topic(kafka.bootstrap_servers, topics.alerts)
    ids = kafka_alert_ids([r.value for r in records], [r.key for r in records])
    assert sorted(ids) == sorted(by_id)
    for record in records:
        payload = json.loads(record.value)
        row = by_id[payload["transaction_id"]]
        assert (payload["model_version"], payload["threshold"]) == (
            row["model_version"],
            row["threshold"],
        )
        assert [entry["feature"] for entry in payload["top_features"]] == [
            entry["feature"] for entry in row["top_features"]
        ]

    # Every batch recorded the promotion it applied; the batch stats agree.
    applied = {(b.model_version, b.threshold) for b in writer.totals.history}
    assert applied == set(settings)

    # The change log: who, when, what.
    log = registry.change_log()
    assert list(log["changed_by"]) == ["selection", "alice", "bob"]
    assert list(log["action"]) == ["promote", "set_threshold", "promote"]
    assert list(zip(log["old_threshold"].iloc[1:], log["new_threshold"].iloc[1:], strict=True)) == [
        (OLD, NEW),
        (NEW, switched),
    ]
    assert list(log["new_version"]) == [V1, V1, V2]
    assert list(log["reason"].iloc[1:]) == ["catch more fraud", "new model"]
    assert log["changed_at"].is_monotonic_increasing
