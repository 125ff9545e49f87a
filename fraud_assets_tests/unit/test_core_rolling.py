"""Rolling-origin folds on real local Spark: who trains on what, what is scored, and pairing."""

import numpy as np
import pytest

from fraud_assets.core.evaluate import average_precision
from fraud_assets.core.rolling import (
    comparison_entry,
    fold_boundaries,
    folds_table,
    paired_comparison,
    paired_comparisons,
    rolling_origin,
    rolling_report,
)
from fraud_assets.core.train import TrainingConfig
from fraud_assets_tests.factories import audited_df, separable_transactions


def noisy_transactions(count: int = 200) -> list[dict]:
    """A fraud every 10th row (large V1) plus two a block that look legitimate (row 25k + 7).

    Four blocks of 50 rows with 7 frauds each; the look-alike frauds keep every AP below 1,
    so two models rank the rows differently.
    """
    return [
        row | {"Class": 1} if row["row_index"] % 25 == 7 else row
        for row in separable_transactions(count)
    ]


@pytest.fixture(scope="module")
def transactions(spark):
    return audited_df(spark, noisy_transactions()).cache()


@pytest.fixture(scope="module")
def runs(transactions):
    lr = rolling_origin(transactions, TrainingConfig(max_iter=30, reg_param=0.05), folds=3)
    # Three one-split trees: a few distinct scores, so ties rank the rows differently.
    stumps = TrainingConfig(algorithm="rf", num_trees=3, rf_max_depth=1, max_bins=8)
    return lr, rolling_origin(transactions, stumps, folds=3)


def test_boundaries_cut_the_rows_in_time_order_into_equal_blocks(transactions):
    assert fold_boundaries(transactions, 3) == [49, 99, 149]
    assert fold_boundaries(transactions, 4) == [39, 79, 119, 159]
    with pytest.raises(ValueError, match="at least 1"):
        fold_boundaries(transactions, 0)


def test_each_fold_trains_on_its_past_and_scores_its_window_once(runs):
    strong, _ = runs
    assert [fold.train_rows for fold in strong.folds] == [50, 100, 150]
    assert [fold.train_frauds for fold in strong.folds] == [7, 14, 21]
    for fold in strong.folds:
        # The window starts right after the rows its model was fitted on.
        assert fold.row_index.min() == fold.train_rows
        assert fold.row_index.max() == fold.train_rows + 49
    # Every row after the first block is scored exactly once, in time order.
    assert strong.row_index.tolist() == list(range(50, 200))
    assert strong.labels.sum() == 21
    assert strong.strata.tolist() == [f for f in (1, 2, 3) for _ in range(50)]


def test_report_has_per_fold_and_pooled_ap_with_intervals(runs):
    strong, _ = runs
    report = rolling_report(strong, resamples=100, seed=3)
    assert [f["fold"] for f in report["folds"]] == [1, 2, 3]
    pooled = report["pooled"]
    assert (pooled["rows"], pooled["frauds"], pooled["folds"]) == (150, 21, 3)
    assert 0.0 < pooled["average_precision"] < 1.0
    assert pooled["average_precision"] == pytest.approx(
        average_precision(strong.labels, strong.scores)
    )
    assert pooled["ap_ci_low"] <= pooled["average_precision"] <= pooled["ap_ci_high"]
    for fold in report["folds"]:
        assert fold["ap_ci_low"] <= fold["average_precision"] <= fold["ap_ci_high"]
        assert fold["frauds"] == 7
    table = folds_table([report])
    assert table["fold"].tolist() == ["1", "2", "3", "pooled"]
    entry = comparison_entry(report | {"scoring_core_us_per_row": 2.5})
    assert entry["protocol"] == "rolling_origin" and entry["threshold"] is None
    assert entry["average_precision"] == pooled["average_precision"]


def test_paired_comparison_is_on_the_same_rows(runs):
    strong, weak = runs
    pair = paired_comparison(weak, strong, resamples=200, seed=5)
    expected = average_precision(weak.labels, weak.scores) - average_precision(
        strong.labels, strong.scores
    )
    assert expected != 0.0
    assert pair["difference"] == pytest.approx(expected)
    assert pair["resamples"] == 200
    assert pair["ci_low"] <= pair["difference"] <= pair["ci_high"]
    assert len(pair["fold_differences"]) == 3
    # A model against itself: every resample's difference is exactly 0.
    same = paired_comparison(strong, strong, resamples=50)
    assert (same["difference"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    # Only the other model is compared with the best one.
    [only] = paired_comparisons([weak, strong], resamples=50)
    best = max(runs, key=lambda r: average_precision(r.labels, r.scores))
    assert only["b"] == best.algorithm != only["a"]
    assert only["difference"] < 0.0


def test_runs_over_other_rows_cannot_be_paired(spark, transactions, runs):
    strong, _ = runs
    two = rolling_origin(transactions, TrainingConfig(max_iter=5), folds=2)
    with pytest.raises(ValueError, match="same rolling-origin rows"):
        paired_comparison(two, strong, resamples=10)


def test_a_fold_whose_past_holds_no_fraud_is_refused(spark):
    rows = [r | {"Class": 0} if r["row_index"] < 60 else r for r in noisy_transactions()]
    with pytest.raises(ValueError, match="fold 1 of 3 trains on 50 rows without a fraud"):
        rolling_origin(audited_df(spark, rows), TrainingConfig(max_iter=5), folds=3)


def test_scores_are_aligned_by_row_index_not_by_spark_order(runs):
    strong, _ = runs
    for fold in strong.folds:
        assert np.all(np.diff(fold.row_index) == 1)
