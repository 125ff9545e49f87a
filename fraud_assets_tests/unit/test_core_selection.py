"""Threshold selection: exact confusion counts per threshold and the max-F1 recommendation."""

import math

import pandas as pd
import pytest

from fraud_assets.core.selection import (
    DEFAULT_THRESHOLDS,
    SWEEP_COLUMNS,
    recommend_max_f1,
    threshold_sweep,
)
from fraud_assets_tests.factories import scored_df

# Eight scored transactions, four frauds: (fraud_prob, Class).
SCORED = [
    (0.9, 1),
    (0.8, 1),
    (0.7, 0),
    (0.6, 1),
    (0.4, 0),
    (0.3, 0),
    (0.2, 1),
    (0.1, 0),
]
THRESHOLDS = (0.95, 0.05, 0.65, 0.6)  # unsorted on purpose
# threshold -> (alerts, tp, fp, fn, tn, precision, recall, f1)
EXPECTED = {
    0.05: (8, 4, 4, 0, 0, 0.5, 1.0, 2 / 3),
    0.6: (4, 3, 1, 1, 3, 0.75, 0.75, 0.75),  # 0.6 itself alerts: fraud_prob >= threshold
    0.65: (3, 2, 1, 2, 3, 2 / 3, 0.5, 4 / 7),
    0.95: (0, 0, 0, 4, 4, math.nan, 0.0, 0.0),
}


@pytest.fixture(scope="module")
def sweep(spark) -> pd.DataFrame:
    return threshold_sweep(spark, scored_df(spark, SCORED), THRESHOLDS)


def test_sweep_has_one_row_per_threshold_in_order(sweep):
    assert list(sweep.columns) == list(SWEEP_COLUMNS)
    assert sweep["threshold"].tolist() == sorted(THRESHOLDS)


@pytest.mark.parametrize("threshold", sorted(EXPECTED))
def test_sweep_counts_and_rates_are_exact(sweep, threshold):
    row = sweep.set_index("threshold").loc[threshold]
    alerts, tp, fp, fn, tn, precision, recall, f1 = EXPECTED[threshold]
    assert [int(row[c]) for c in ("alerts", "tp", "fp", "fn", "tn")] == [alerts, tp, fp, fn, tn]
    if math.isnan(precision):
        assert math.isnan(row["precision"])  # nothing alerts: precision is undefined
    else:
        assert row["precision"] == pytest.approx(precision)
    assert row["recall"] == pytest.approx(recall)
    assert row["f1"] == pytest.approx(f1)


def test_recommendation_is_the_max_f1_threshold(sweep):
    choice = recommend_max_f1(sweep)
    assert choice.threshold == 0.6
    assert choice.policy == "max_f1"
    assert (choice.precision, choice.recall, choice.f1, choice.alerts) == (0.75, 0.75, 0.75, 4)


def test_f1_ties_go_to_the_higher_threshold(spark):
    # 0.5, 0.55 and 0.6 all alert on the same four rows, so their F1 is identical.
    sweep = threshold_sweep(spark, scored_df(spark, SCORED), (0.55, 0.6, 0.5, 0.05))
    assert sweep.loc[sweep["threshold"] != 0.05, "f1"].nunique() == 1
    assert recommend_max_f1(sweep).threshold == 0.6


def test_nothing_caught_cannot_be_recommended(spark):
    sweep = threshold_sweep(spark, scored_df(spark, SCORED), (0.95, 0.99))
    assert sweep["tp"].sum() == 0
    with pytest.raises(ValueError, match="cannot be promoted"):
        recommend_max_f1(sweep)


def test_empty_sweep_cannot_be_recommended():
    with pytest.raises(ValueError, match="no threshold catches any fraud"):
        recommend_max_f1(pd.DataFrame(columns=list(SWEEP_COLUMNS)))


def test_default_thresholds_are_sorted_unique_and_inside_0_1():
    assert list(DEFAULT_THRESHOLDS) == sorted(set(DEFAULT_THRESHOLDS))
    assert DEFAULT_THRESHOLDS[0] == 0.01 and DEFAULT_THRESHOLDS[-1] == 0.999
    assert all(0.0 < t < 1.0 for t in DEFAULT_THRESHOLDS)
    assert 0.99 in DEFAULT_THRESHOLDS and 0.995 in DEFAULT_THRESHOLDS
