"""Threshold policies on constructed validation slices with hand-computed answers."""

import math

import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.evaluate import SECONDS_PER_DAY, ScoredSlice
from fraud_assets.core.selection import (
    HIGHEST_THRESHOLD,
    POLICIES,
    SWEEP_COLUMNS,
    PolicySettings,
    display_thresholds,
    evaluate_policies,
    expected_costs,
    recommend,
    recommend_alert_budget,
    recommend_expected_cost,
    recommend_max_f1,
    recommend_min_precision,
    threshold_sweep,
)

# Eight scored transactions, four frauds: (fraud_prob, Class, Amount).
SCORED = [
    (0.9, 1, 100.0),
    (0.8, 1, 50.0),
    (0.7, 0, 1.0),
    (0.6, 1, 10.0),
    (0.4, 0, 1.0),
    (0.3, 0, 1.0),
    (0.2, 1, 1000.0),
    (0.1, 0, 1.0),
]
# threshold -> (alerts, tp, fp, fn, tn, precision, recall, f1, missed_amount)
EXPECTED = {
    0.05: (8, 4, 4, 0, 0, 0.5, 1.0, 2 / 3, 0.0),
    0.6: (4, 3, 1, 1, 3, 0.75, 0.75, 0.75, 1000.0),  # 0.6 itself alerts: fraud_prob >= t
    0.65: (3, 2, 1, 2, 3, 2 / 3, 0.5, 4 / 7, 1010.0),
    0.95: (0, 0, 0, 4, 4, math.nan, 0.0, 0.0, 1160.0),
}


def validation(rows=SCORED, span_seconds=SECONDS_PER_DAY) -> ScoredSlice:
    scores, labels, amounts = zip(*rows, strict=True)
    times = np.linspace(0.0, span_seconds, len(rows))
    return ScoredSlice.of(labels, scores, amounts, times)


@pytest.fixture(scope="module")
def sweep() -> pd.DataFrame:
    return threshold_sweep(validation())


def test_sweep_at_given_thresholds_is_exact_and_sorted():
    result = threshold_sweep(validation(), (0.95, 0.05, 0.65, 0.6))
    assert list(result.columns) == list(SWEEP_COLUMNS)
    assert result["threshold"].tolist() == [0.05, 0.6, 0.65, 0.95]
    for threshold, expected in EXPECTED.items():
        row = result.set_index("threshold").loc[threshold]
        alerts, tp, fp, fn, tn, precision, recall, f1, missed = expected
        counts = [int(row[c]) for c in ("alerts", "tp", "fp", "fn", "tn")]
        assert counts == [alerts, tp, fp, fn, tn], threshold
        if math.isnan(precision):
            assert math.isnan(row["precision"])  # nothing alerts: precision is undefined
        else:
            assert row["precision"] == pytest.approx(precision)
        assert (row["recall"], row["f1"]) == (pytest.approx(recall), pytest.approx(f1))
        assert row["missed_amount"] == pytest.approx(missed)


def test_default_sweep_is_every_distinct_score_with_no_cap(sweep):
    assert sweep["threshold"].tolist() == sorted(s for s, _, _ in SCORED)
    scores = np.array([0.5, 0.9991, 0.99999, 0.99999])
    thresholds = threshold_sweep(ScoredSlice.of([0, 1, 1, 1], scores))["threshold"]
    assert thresholds.tolist() == [0.5, 0.9991, 0.99999]  # far above the old 0.999 cap


def test_max_f1(sweep):
    choice = recommend_max_f1(sweep)
    assert (choice.threshold, choice.policy) == (0.6, "max_f1")
    assert (choice.precision, choice.recall, choice.f1, choice.alerts) == (0.75, 0.75, 0.75, 4)


def test_f1_ties_go_to_the_higher_threshold():
    # 0.5, 0.55 and 0.6 all alert on the same four rows, so their F1 is identical.
    tied = threshold_sweep(validation(), (0.55, 0.6, 0.5, 0.05))
    assert tied.loc[tied["threshold"] != 0.05, "f1"].nunique() == 1
    assert recommend_max_f1(tied).threshold == 0.6


def test_nothing_caught_cannot_be_recommended():
    with pytest.raises(ValueError, match="cannot be promoted"):
        recommend_max_f1(threshold_sweep(validation(), (0.95, 0.99)))
    with pytest.raises(ValueError, match="no threshold catches any fraud"):
        recommend_max_f1(pd.DataFrame(columns=list(SWEEP_COLUMNS)))


def test_min_precision_takes_the_lowest_threshold_meeting_the_target(sweep):
    # Precision by threshold: 0.9 -> 1, 0.8 -> 1, 0.7 -> 2/3, 0.6 -> 3/4, 0.4 -> 3/5 ...
    choice = recommend_min_precision(sweep, 0.85)
    assert (choice.threshold, choice.precision, choice.recall) == (0.8, 1.0, 0.5)
    assert choice.policy == "min_precision"
    # Precision is not monotone: 0.7 misses 0.74 but the lower 0.6 meets it.
    assert recommend_min_precision(sweep, 0.74).threshold == 0.6


def test_min_precision_unmet_is_a_clear_none_and_recommend_says_why():
    legit_on_top = [(0.9, 0, 1.0), (0.8, 1, 1.0), (0.7, 0, 1.0), (0.6, 1, 1.0)]
    data = validation(legit_on_top)
    assert recommend_min_precision(threshold_sweep(data), 0.85) is None
    choices = evaluate_policies(data, PolicySettings(min_precision=0.85))
    assert choices["min_precision"] is None
    with pytest.raises(ValueError, match="min_precision cannot be met.*max_f1"):
        recommend(choices, "min_precision")


def test_alert_budget_is_the_k_times_days_th_highest_score():
    # One day, 3 alerts a day: the 3rd highest score.
    choice = evaluate_policies(validation(), PolicySettings(alerts_per_day=3))["alert_budget"]
    assert (choice.threshold, choice.alerts, choice.policy) == (0.7, 3, "alert_budget")
    # Half a day at 4 a day: 2 alerts.
    half = evaluate_policies(
        validation(span_seconds=SECONDS_PER_DAY / 2), PolicySettings(alerts_per_day=4)
    )
    assert half["alert_budget"].threshold == 0.8


def test_alert_budget_never_exceeds_the_budget_on_ties():
    tied = threshold_sweep(ScoredSlice.of([1, 0, 1, 0], [0.9, 0.9, 0.9, 0.1]))
    assert recommend_alert_budget(tied, 2) is None
    assert recommend_alert_budget(tied, 3).threshold == 0.9


def test_expected_cost_weighs_missed_amounts_against_review_cost(sweep):
    # Review cost 20: alerting down to 0.2 catches the 1000 fraud for 7 reviews (cost 140).
    costs = dict(zip(sweep["threshold"], expected_costs(sweep, 20.0), strict=True))
    assert costs[0.9] == 1060 + 20 and costs[0.2] == 140 and costs[0.1] == 160
    choice = recommend_expected_cost(sweep, 20.0)
    assert (choice.threshold, choice.expected_cost, choice.policy) == (0.2, 140.0, "expected_cost")
    # Review cost 300: one review (0.9) is cheapest, 1060 missed + 300.
    assert recommend_expected_cost(sweep, 300.0).threshold == 0.9
    assert recommend_expected_cost(sweep, 300.0).expected_cost == 1360.0


def test_every_policy_is_evaluated_and_named():
    choices = evaluate_policies(
        validation(), PolicySettings(min_precision=0.85, alerts_per_day=3, review_cost=20.0)
    )
    assert set(choices) == set(POLICIES)
    assert {name: c.threshold for name, c in choices.items()} == {
        "max_f1": 0.6,
        "min_precision": 0.8,
        "alert_budget": 0.7,
        "expected_cost": 0.2,
    }
    assert all(recommend(choices, name).policy == name for name in POLICIES)
    with pytest.raises(ValueError, match="unknown threshold policy"):
        recommend(choices, "gut_feeling")


def test_a_score_of_one_gives_a_promotable_threshold_that_still_alerts():
    data = ScoredSlice.of([1, 1, 0], [1.0, 1.0, 0.2])
    choice = recommend_max_f1(threshold_sweep(data))
    assert choice.threshold == HIGHEST_THRESHOLD < 1.0
    assert (data.scores >= choice.threshold).sum() == 2


def test_display_thresholds_are_few_sorted_and_dense_at_the_top():
    scores = np.linspace(0, 1, 10_001)
    grid = display_thresholds(scores, points=50)
    assert len(grid) <= 50 and list(grid) == sorted(set(grid))
    assert grid[-1] == 1.0 and grid[0] == 0.0
    assert (grid > 0.99).sum() > (grid < 0.5).sum()
