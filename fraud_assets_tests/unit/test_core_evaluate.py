"""Holdout metrics on constructed cases whose answers are computed by hand."""

import math
from dataclasses import replace

import numpy as np
import pytest
from pyspark.ml.evaluation import BinaryClassificationEvaluator

from fraud_assets.core.evaluate import (
    SECONDS_PER_DAY,
    ScoredSlice,
    ap_trapezoid,
    at_threshold,
    average_precision,
    bootstrap_ap_interval,
    bootstrap_ap_values,
    budget_alerts,
    paired_ap_difference,
    percentile_interval,
    precision_at_budget,
    ranking_metrics,
    roc_auc,
)

# Eight transactions, four frauds, ranked: F F L F L L F L.
SCORES = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]
LABELS = [1, 1, 0, 1, 0, 0, 1, 0]
# Frauds at ranks 1, 2, 4, 7: precisions 1, 1, 3/4, 4/7, each adding 1/4 of recall.
STEP_AP = (1 + 1 + 0.75 + 4 / 7) / 4
# Trapezoids from (0, 1): (0.25,1) (0.5,1) (0.5,2/3) (0.75,3/4) (0.75,1/2) (1,4/7) (1,1/2).
TRAPEZOID_AP = 0.25 + 0.25 + 0.25 * (2 / 3 + 0.75) / 2 + 0.25 * (0.5 + 4 / 7) / 2


def test_step_wise_average_precision_is_the_hand_computed_sum():
    assert average_precision(LABELS, SCORES) == pytest.approx(STEP_AP)
    assert average_precision(LABELS, SCORES) == pytest.approx(0.8303571428)


def test_trapezoid_is_sparks_area_under_pr_and_differs_from_step_wise(spark):
    assert ap_trapezoid(LABELS, SCORES) == pytest.approx(TRAPEZOID_AP)
    assert ap_trapezoid(LABELS, SCORES) != pytest.approx(STEP_AP)
    df = spark.createDataFrame(
        [(float(s), float(y)) for s, y in zip(SCORES, LABELS, strict=True)],
        "score double, y double",
    )
    evaluator = BinaryClassificationEvaluator(
        rawPredictionCol="score", labelCol="y", metricName="areaUnderPR", numBins=0
    )
    assert evaluator.evaluate(df) == pytest.approx(TRAPEZOID_AP)


def test_roc_auc_counts_ranked_pairs():
    # Fraud beats legitimate in 4 + 4 + 3 + 1 of 16 pairs.
    assert roc_auc(LABELS, SCORES) == pytest.approx(12 / 16)


def test_ties_share_one_point_of_every_curve():
    labels, scores = [1, 0], [0.5, 0.5]
    assert average_precision(labels, scores) == pytest.approx(0.5)
    assert ap_trapezoid(labels, scores) == pytest.approx(0.5)
    assert roc_auc(labels, scores) == pytest.approx(0.5)
    # Order within a tie must not matter.
    assert average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_perfect_ranking_and_undefined_cases():
    assert average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert math.isnan(average_precision([0, 0], [0.9, 0.1]))  # no fraud
    assert math.isnan(roc_auc([1, 1], [0.9, 0.1]))  # one class only


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="0 or 1"):
        average_precision([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([1, 0], [float("nan"), 0.2])
    with pytest.raises(ValueError, match="labels for"):
        average_precision([1], [0.1, 0.2])


def test_at_threshold_alerts_on_greater_or_equal():
    measured = at_threshold(ScoredSlice.of(LABELS, SCORES), 0.6)
    assert (measured.alerts, measured.tp) == (4, 3)
    assert (measured.precision, measured.recall) == (0.75, 0.75)
    nothing = at_threshold(ScoredSlice.of(LABELS, SCORES), 0.95)
    assert nothing.alerts == 0 and math.isnan(nothing.precision) and nothing.recall == 0.0


def test_precision_at_budget_scales_the_budget_by_the_days_spanned():
    one_day = ScoredSlice.of(LABELS, SCORES, times=np.linspace(0, SECONDS_PER_DAY, 8))
    assert precision_at_budget(one_day, alerts_per_day=3) == pytest.approx(2 / 3)  # top 3
    half_day = ScoredSlice.of(LABELS, SCORES, times=np.linspace(0, SECONDS_PER_DAY / 2, 8))
    assert precision_at_budget(half_day, alerts_per_day=4) == 1.0  # top 2


def test_a_sampled_slice_gets_its_share_of_the_daily_budget():
    # One day, but only a quarter of that day's transactions: 8 alerts/day -> top 2 here.
    sample = ScoredSlice.of(LABELS, SCORES, times=np.linspace(0, SECONDS_PER_DAY, 8))
    assert budget_alerts(sample, alerts_per_day=8) == 8
    quarter = replace(sample, stream_share=0.25)
    assert budget_alerts(quarter, alerts_per_day=8) == 2
    assert precision_at_budget(quarter, alerts_per_day=8) == 1.0


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.05).astype(int)
    scores = np.clip(labels * 0.3 + rng.random(2000) * 0.8, 0, 1)
    low, high = bootstrap_ap_interval(labels, scores, resamples=300, seed=7)
    assert (low, high) == bootstrap_ap_interval(labels, scores, resamples=300, seed=7)
    assert low < average_precision(labels, scores) < high
    assert high - low < 0.3
    assert bootstrap_ap_interval([1, 1, 0], [0.9, 0.8, 0.1], resamples=50) == (1.0, 1.0)


def test_ranking_metrics_name_their_formula():
    metrics = ranking_metrics(ScoredSlice.of(LABELS, SCORES), alerts_per_day=3, resamples=50)
    assert metrics.average_precision == pytest.approx(STEP_AP)
    assert metrics.ap_trapezoid == pytest.approx(TRAPEZOID_AP)
    assert "step-wise" in metrics.ap_formula
    assert (metrics.rows, metrics.frauds) == (8, 4)


def test_paired_difference_uses_the_same_resampled_rows():
    rng = np.random.default_rng(1)
    labels = (rng.random(1500) < 0.05).astype(int)
    good = labels * 0.4 + rng.random(1500) * 0.8
    worse = labels * 0.2 + rng.random(1500) * 0.8
    pair = paired_ap_difference(labels, good, worse, resamples=300, seed=3)
    assert pair.difference == pytest.approx(
        average_precision(labels, good) - average_precision(labels, worse)
    )
    assert 0.0 < pair.ci_low < pair.difference < pair.ci_high
    assert pair.resamples == 300
    # Same rows for both models: each resample's difference is the two columns' difference.
    values = bootstrap_ap_values(labels, [good, worse], resamples=300, seed=3)
    assert percentile_interval(values[:, 0] - values[:, 1]) == (pair.ci_low, pair.ci_high)
    # The paired interval is narrower than the gap between the two unpaired intervals allows.
    low_good, high_good = bootstrap_ap_interval(labels, good, resamples=300, seed=3)
    low_worse, high_worse = bootstrap_ap_interval(labels, worse, resamples=300, seed=3)
    assert pair.ci_high - pair.ci_low < (high_good - low_worse) - (low_good - high_worse)
    # A model against itself differs by exactly 0 on every resample.
    same = paired_ap_difference(labels, good, good, resamples=50)
    assert (same.difference, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)


def test_stratified_resamples_keep_each_stratum_whole():
    # Stratum 0: two frauds scored 0.5; stratum 1: four legitimate rows, two above them.
    # Resampled within strata, every resample keeps 2 frauds, so AP = 2 / (2 + m) where m
    # is how many of the 4 legitimate draws scored 0.9.
    labels, scores = [1, 1, 0, 0, 0, 0], [0.5, 0.5, 0.9, 0.9, 0.1, 0.1]
    strata = np.array([0, 0, 1, 1, 1, 1])
    values = bootstrap_ap_values(labels, [scores], resamples=300, seed=2, strata=strata)
    assert values.shape == (300, 1)
    allowed = [2 / (2 + m) for m in range(5)]
    assert all(any(v == pytest.approx(a) for a in allowed) for v in values[:, 0])
    # Unstratified, a resample may draw one fraud or three: other values appear.
    pooled = bootstrap_ap_values(labels, [scores], resamples=300, seed=2)
    assert not all(any(v == pytest.approx(a) for a in allowed) for v in pooled[:, 0])
    low, high = bootstrap_ap_interval(labels, scores, resamples=300, seed=2, strata=strata)
    assert low <= average_precision(labels, scores) <= high
    assert all(math.isnan(x) for x in percentile_interval([]))
