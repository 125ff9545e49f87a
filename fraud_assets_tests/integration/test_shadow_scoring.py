"""A challenger scored in shadow by a running stream on the real broker.

An operator names a random-forest challenger while the logistic regression is promoted; the
stream scores the next micro-batches with both from the same parsed rows. The shadow table
must equal batch scoring of exactly those rows by the challenger, once each, and
``fraud_alerts`` must hold the champion's alerts only; clearing the challenger stops it from
the next micro-batch. The comparison and the evidence rule then read that table.
"""

import json

import pytest

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, FEATURE_COLUMNS
from fraud_assets.core.reconcile import expected_alert_ids, kafka_alert_ids
from fraud_assets.core.registry import ModelRegistry, Promotion
from fraud_assets.core.scoring import parse_transactions, score_transactions
from fraud_assets.core.shadow import EvidenceRule, NotEnoughEvidenceError, compare, read_shadow
from fraud_assets.core.shadow import promote_challenger as promote_from_shadow
from fraud_assets.core.stream import (
    ScoringBatchWriter,
    read_transactions_batch,
)
from fraud_assets.core.train import TrainingConfig, fit
from fraud_assets.kafka.io import produce_messages, read_topic
from fraud_assets_tests.integration.streams import (
    CrashBeforeDelivery,
    fresh_run,
    messages,
    score_in_parts,
)

pytestmark = pytest.mark.integration

CHAMPION = "lr-20260101T000000Z"
CHALLENGER = "rf-20260103T000000Z"
CHALLENGER_THRESHOLD = 0.4


def test_a_challenger_is_scored_in_shadow_exactly_once_and_never_alerts(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    champion, _ = model_and_promotion
    training = spark.createDataFrame(real_rows, schema=AUDITED_TRANSACTIONS_SCHEMA)
    forest = fit(training, TrainingConfig(algorithm="rf", num_trees=10, rf_max_depth=5))
    registry = ModelRegistry(tmp_path / "models")
    metadata = {"features": list(FEATURE_COLUMNS), "metrics": {"pr_auc": 0.8}}
    registry.save(CHAMPION, champion, {**metadata, "threshold": 0.5})
    registry.save(CHALLENGER, forest, {**metadata, "threshold": CHALLENGER_THRESHOLD})
    promotion = registry.promote(CHAMPION, 0.5, "max_f1", 0.8, changed_by="selection")

    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=2)
    bounds = [0, 500, 900, 1300, len(real_rows)]
    parts = [real_rows.iloc[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    shadowed = real_rows.iloc[bounds[1] : bounds[3]]
    """Parts 1 and 2 are scored while the challenger is named (two or more micro-batches)."""

    writer = ScoringBatchWriter(spark, kafka, paths, champion, promotion, registry=registry)

    def change(index: int) -> None:
        if index == 1:
            registry.name_challenger(CHALLENGER, changed_by="carol", reason="try the forest")
        elif index == 3:
            registry.clear_challenger(changed_by="carol", reason="seen enough")

    score_in_parts(spark, kafka, paths, writer, parts, change)

    shadow_batches = [b for b in writer.totals.history if b.challenger_version == CHALLENGER]
    assert len(shadow_batches) >= 2
    assert sum(b.scored for b in shadow_batches) == len(shadowed)

    # The shadow table: exactly the rows scored while the challenger was named, once each,
    # with the challenger's batch score and the champion's score beside it.
    table = spark.read.parquet(str(paths.shadow_table)).collect()
    ids = [r["transaction_id"] for r in table]
    assert len(ids) == len(set(ids)), "a shadow row was written twice"
    assert set(ids) == set(shadowed["transaction_id"])
    frame = spark.createDataFrame(shadowed, schema=AUDITED_TRANSACTIONS_SCHEMA)
    by_challenger = score_transactions(forest, frame, CHALLENGER_THRESHOLD, CHALLENGER).collect()
    by_champion = score_transactions(champion, frame, 0.5, CHAMPION).collect()
    rows = {r["transaction_id"]: r for r in table}
    for expected in by_challenger:
        row = rows[expected["transaction_id"]]
        assert row["challenger_prob"] == expected["fraud_prob"]
        assert row["challenger_alert"] == expected["is_alert"]
        assert (row["challenger_version"], row["challenger_threshold"]) == (
            CHALLENGER,
            CHALLENGER_THRESHOLD,
        )
    for expected in by_champion:
        row = rows[expected["transaction_id"]]
        assert (row["fraud_prob"], row["is_alert"]) == (
            expected["fraud_prob"],
            expected["is_alert"],
        )

    # fraud_alerts: the champion's alerts over every part, nothing from the challenger.
    records = read_topic(kafka.bootstrap_servers, kafka.topics.alerts)
    alerted = kafka_alert_ids([r.value for r in records], [r.key for r in records])
    assert set(alerted) == expected_alert_ids(champion, training, promotion)
    assert {json.loads(r.value)["model_version"] for r in records} == {CHAMPION}
    parquet = spark.read.parquet(str(paths.alerts_table)).select("model_version").distinct()
    assert [r[0] for r in parquet.collect()] == [CHAMPION]

    # The comparison reads the same rows; the evidence rule guards promotion.
    comparison = compare(read_shadow(paths.shadow_table))
    assert comparison.challenger_version == CHALLENGER
    assert comparison.rows == len(shadowed)
    assert comparison.labelled == int(shadowed["Class"].notna().sum())
    assert comparison.frauds == int((shadowed["Class"] == 1).sum())
    challenger_row = comparison.models.set_index("role").loc["challenger"]
    assert challenger_row["alerts"] == sum(r["is_alert"] for r in by_challenger)
    registry.name_challenger(CHALLENGER, changed_by="carol", reason="once more")
    strict = EvidenceRule(min_labelled_rows=len(shadowed) + 1, min_frauds=0)
    with pytest.raises(NotEnoughEvidenceError):
        promote_from_shadow(registry, paths.shadow_table, strict, changed_by="d", reason="r")
    assert registry.promoted().version == CHAMPION

    actions = list(registry.change_log()["action"])
    assert actions == ["promote", "name_challenger", "clear_challenger", "name_challenger"]


def test_the_shadow_partition_of_a_batch_killed_before_delivery_comes_from_its_ledger(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    model, promotion = model_and_promotion
    named = Promotion("test-lr-challenger", 0.3, "fixed", "2026-01-01T00:00:00+00:00")
    kafka, paths = fresh_run(kafka_broker, unique_topics, tmp_path, partitions=1)
    rows = real_rows.iloc[:300]
    produce_messages(kafka.bootstrap_servers, kafka.topics.transactions, messages(rows))
    parsed = parse_transactions(read_transactions_batch(spark, kafka))
    crashing = CrashBeforeDelivery(
        spark,
        kafka,
        paths,
        model,
        promotion,
        stream_id="s",
        challenger=named,
        challenger_model=model,
    )
    crashing(parsed, 0)
    with pytest.raises(RuntimeError, match="killed after the ledger commit"):
        crashing.wait_for_delivery()
    assert not paths.shadow_table.exists()

    # The next process names no challenger: batch 0's shadow rows still come from its ledger
    # (the batch record names the challenger), batch 1 has none.
    writer = ScoringBatchWriter(spark, kafka, paths, model, promotion, stream_id="s")
    writer(parsed.limit(0), 1)
    writer.wait_for_delivery()
    partitions = sorted(p.name for p in paths.shadow_table.iterdir() if p.name[0] != "_")
    assert partitions == ["batch_id=0"]
    shadow = read_shadow(paths.shadow_table)
    assert sorted(shadow["transaction_id"]) == sorted(rows["transaction_id"])
    # The same model in both roles: the same score, alerting at each one's threshold.
    assert (shadow["challenger_prob"] == shadow["fraud_prob"]).all()
    assert (shadow["challenger_alert"] == (shadow["fraud_prob"] >= 0.3)).all()
    assert (shadow["is_alert"] == (shadow["fraud_prob"] >= promotion.threshold)).all()
    assert set(shadow["challenger_version"]) == {named.version}
