"""Training: the protocols' splits, the three model structures, one protocol run end to end."""

import math

import numpy as np
import pytest
from pyspark.ml.classification import (
    GBTClassificationModel,
    LogisticRegressionModel,
    RandomForestClassificationModel,
)
from pyspark.ml.feature import StandardScalerModel, VectorAssembler
from xgboost.spark import SparkXGBClassifierModel

from fraud_assets.core.evaluate import scored_slice
from fraud_assets.core.selection import PolicySettings
from fraud_assets.core.train import (
    TrainingConfig,
    comparison_entry,
    filter_negative_sample,
    fit,
    net_cost_us_per_row,
    protocol_split,
    random_split,
    run_report,
    scoring_cost_us_per_row,
    search_candidates,
    train_protocol,
)
from fraud_assets_tests.factories import audited_df, separable_transactions

COMPARISON_KEYS = {
    "model",
    "protocol",
    "average_precision",
    "ap_formula",
    "ap_trapezoid",
    "ap_ci_low",
    "ap_ci_high",
    "roc_auc",
    "threshold",
    "policy",
    "precision",
    "recall",
    "precision_at_budget",
    "train_seconds",
}


@pytest.fixture(scope="module")
def transactions(spark):
    return audited_df(spark, separable_transactions(300)).cache()


def ids(df) -> set[int]:
    return {row[0] for row in df.select("row_index").collect()}


def test_random_split_is_seeded_disjoint_and_about_the_asked_size(transactions):
    train, holdout = random_split(transactions, 0.2)
    assert ids(train) | ids(holdout) == set(range(300))
    assert not ids(train) & ids(holdout)
    assert 40 <= len(ids(holdout)) <= 80
    assert ids(random_split(transactions, 0.2)[1]) == ids(holdout)  # same seed, same rows
    assert ids(random_split(transactions, 0.2, seed=43)[1]) != ids(holdout)


def test_protocols_and_unknown_protocol(transactions):
    train, holdout = protocol_split(transactions, "time_ordered", 0.2)
    assert max(ids(train)) < min(ids(holdout)) == 240
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_split(transactions, "leave_one_out", 0.2)


def test_negative_sample_keeps_every_fraud(transactions):
    sampled = filter_negative_sample(transactions, 0.25)
    counts = {r["Class"]: r["count"] for r in sampled.groupBy("Class").count().collect()}
    assert counts[1] == 30
    assert 30 <= counts[0] <= 110  # about a quarter of 270
    assert filter_negative_sample(transactions, 1.0) is transactions


@pytest.mark.parametrize(
    ("algorithm", "classifier"),
    [
        ("lr", LogisticRegressionModel),
        ("rf", RandomForestClassificationModel),
        ("gbt", GBTClassificationModel),
        ("xgb", SparkXGBClassifierModel),
    ],
)
def test_every_model_is_assembler_scaler_classifier(transactions, algorithm, classifier):
    config = TrainingConfig(
        algorithm=algorithm, num_trees=5, gbt_max_iter=5, rf_max_depth=3, xgb_n_estimators=5
    )
    model = fit(transactions, config)
    assert [type(s) for s in model.stages] == [VectorAssembler, StandardScalerModel, classifier]
    assert model.stages[-1].getOrDefault("probabilityCol") == "probability"
    assert config.is_class_weighted == (algorithm == "lr")


def test_unknown_algorithm_and_search_candidates():
    with pytest.raises(ValueError, match="unknown algorithm"):
        TrainingConfig(algorithm="svm")
    candidates = search_candidates(TrainingConfig(algorithm="lr"))
    assert [c.reg_param for c in candidates] == [0.0, 0.001, 0.01]
    assert len(search_candidates(TrainingConfig(algorithm="rf"), budget=1)) == 1


def test_a_protocol_run_chooses_on_validation_and_reports_on_the_holdout(transactions):
    candidates = [TrainingConfig(reg_param=0.05, max_iter=30), TrainingConfig(reg_param=0.5)]
    run = train_protocol(transactions, "time_ordered", candidates)
    # 300 rows: 240 train (192 fit + 48 validation), 60 held out.
    assert (run.validation.rows, run.holdout.rows, run.train_rows) == (48, 60, 240)
    assert run.validation.times.max() < run.holdout.times.min()  # validation precedes holdout
    assert len(run.search) == 2
    best = max(run.search, key=lambda s: s["validation_average_precision"])
    assert run.config.params() == best["params"]
    report = run_report(run, PolicySettings(min_precision=0.5), "min_precision", resamples=20)
    assert report["recommended"]["policy"] == "min_precision"
    assert [p["policy"] for p in report["policies"]] == [
        "max_f1",
        "min_precision",
        "alert_budget",
        "expected_cost",
    ]
    entry = comparison_entry(report)
    assert COMPARISON_KEYS <= set(entry)
    assert entry["average_precision"] > 0.9  # the frauds are separable in V1
    assert entry["ap_ci_low"] <= entry["average_precision"] <= entry["ap_ci_high"]


def test_without_refit_the_saved_model_is_the_one_thresholds_were_chosen_on(transactions):
    config = TrainingConfig(reg_param=0.05, max_iter=30)
    refitted = train_protocol(transactions, "time_ordered", [config])
    kept = train_protocol(transactions, "time_ordered", [config], refit=False)
    assert (refitted.refit, refitted.model_rows) == (True, 240)
    assert (kept.refit, kept.model_rows) == (False, 192)  # 240 train - 48 validation
    # The same slices and the same validation model either way...
    assert kept.validation.rows == refitted.validation.rows == 48
    np.testing.assert_allclose(kept.validation.scores, refitted.validation.scores)
    # ...and without refit the saved model *is* it: it scores the validation slice the same.
    _, validation_part = protocol_split(
        protocol_split(transactions, "time_ordered", config.holdout_fraction, config.seed)[0],
        "time_ordered",
        0.2,
        config.seed + 1,
    )
    rescored = scored_slice(kept.model, validation_part)
    np.testing.assert_allclose(rescored.scores, kept.validation.scores)
    # The refitted model saw 48 more rows: its coefficients differ.
    assert not np.allclose(
        kept.model.stages[-1].coefficients.toArray(),
        refitted.model.stages[-1].coefficients.toArray(),
    )
    report = run_report(kept, PolicySettings(), resamples=20)
    assert (report["refit"], report["model_rows"]) == (False, 192)


def test_a_validation_slice_without_frauds_falls_back_to_a_random_slice(spark):
    # No fraud in rows 150..269: the time-ordered validation slice (about rows 190..240)
    # has none, so no threshold policy could be evaluated on it.
    rows = [
        row
        for row in separable_transactions(300)
        if not (150 <= row["row_index"] < 270 and row["Class"] == 1)
    ]
    run = train_protocol(audited_df(spark, rows), "time_ordered", [TrainingConfig(max_iter=30)])
    assert run.validation_slice.startswith("random_80_20")
    assert run.validation.frauds > 0
    # A random fifth of the training period holds a fifth of its transactions per day.
    assert run.validation.stream_share == pytest.approx(run.validation.rows / run.train_rows)
    assert run.holdout.stream_share == 1.0
    # The holdout is still the time-ordered one: the last 20% of rows.
    assert run.holdout.times.min() > max(r["Time"] for r in rows[: len(rows) - run.holdout.rows])


def test_random_protocol_slices_get_their_share_of_the_alert_budget(transactions):
    run = train_protocol(transactions, "random_80_20", [TrainingConfig(max_iter=30)])
    total = run.train_rows + run.holdout.rows
    assert run.holdout.stream_share == pytest.approx(run.holdout.rows / total)
    assert run.validation.stream_share == pytest.approx(run.validation.rows / total)
    assert 0.1 < run.holdout.stream_share < 0.3


def test_a_time_ordered_run_keeps_its_own_validation_slice(transactions):
    run = train_protocol(transactions, "time_ordered", [TrainingConfig(max_iter=30)])
    assert run.validation_slice == "time_ordered"


def test_scoring_cost_is_measured_net_of_reading_the_rows():
    # 0.5 s scoring - 0.2 s reading = 0.3 s of wall clock on 4 cores = 1.2 core-seconds,
    # over 1,000 rows = 1,200 core-microseconds per row.
    assert net_cost_us_per_row(0.5, 0.2, cores=4, rows=1_000) == pytest.approx(1_200.0)
    assert net_cost_us_per_row(0.5, 0.2, cores=1, rows=1_000) == pytest.approx(300.0)
    assert net_cost_us_per_row(0.5, 0.2, cores=4, rows=2_000) == pytest.approx(600.0)
    # Timing noise can make scoring the faster sum: the cost is clamped at 0, not negative.
    assert net_cost_us_per_row(0.2, 0.5, cores=4, rows=1_000) == 0.0
    assert net_cost_us_per_row(0.3, 0.3, cores=4, rows=1_000) == 0.0
    with pytest.raises(ValueError, match="rows must be positive"):
        net_cost_us_per_row(0.5, 0.2, cores=4, rows=0)


def test_scoring_cost_runs_the_model_on_real_spark(spark, transactions):
    model = fit(transactions, TrainingConfig(max_iter=5))
    cached = transactions.cache()
    cost = scoring_cost_us_per_row(model, cached, repeats=2)
    assert math.isfinite(cost)
    with pytest.raises(ValueError, match="empty"):
        scoring_cost_us_per_row(model, cached.limit(0))
    cached.unpersist()
