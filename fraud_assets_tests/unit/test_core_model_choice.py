"""The cost-aware rule: the cheapest model not significantly worse than the best pooled AP."""

import pytest

from fraud_assets.core.model_choice import (
    FALLBACK_RULE,
    RULE,
    Candidate,
    choose_model,
    qualifies,
)

LR = Candidate("lr-1", "lr", 0.70, pooled_average_precision=0.78, scoring_core_us_per_row=2.0)
XGB = Candidate("xgb-1", "xgb", 0.80, pooled_average_precision=0.81, scoring_core_us_per_row=20.0)
RF = Candidate("rf-1", "rf", 0.75, pooled_average_precision=0.80, scoring_core_us_per_row=35.0)


def pair(difference: float, low: float, high: float) -> dict:
    return {"difference": difference, "ci_low": low, "ci_high": high}


def test_a_cheap_model_not_significantly_worse_is_chosen_over_a_costly_best():
    choice = choose_model([LR, XGB], {"lr-1": pair(-0.03, -0.08, 0.02)})
    assert (choice.version, choice.rule) == ("lr-1", RULE)
    assert "not significantly worse than xgb" in choice.reason
    verdicts = {v.model: v for v in choice.verdicts}
    assert verdicts["lr"].qualifies and verdicts["lr"].chosen
    assert verdicts["xgb"].qualifies and not verdicts["xgb"].chosen
    assert verdicts["lr"].difference_ci_high == 0.02 and verdicts["xgb"].difference_vs_best is None


def test_a_costly_model_earns_its_cost_when_every_cheaper_one_is_significantly_worse():
    paired = {"lr-1": pair(-0.05, -0.09, -0.02), "rf-1": pair(-0.01, -0.04, 0.03)}
    choice = choose_model([LR, XGB, RF], paired)
    # LR is significantly worse; RF is not, but costs more than XGBoost, the best.
    assert choice.version == "xgb-1"
    assert "best pooled AP" in choice.reason
    assert [v.qualifies for v in choice.verdicts] == [False, True, True]


def test_a_proven_small_shortfall_is_within_the_tolerance():
    # Significantly worse (the interval excludes 0) but surely by less than 0.01.
    shortfall = {"lr-1": pair(-0.006, -0.009, -0.002)}
    assert choose_model([LR, XGB], shortfall, ap_tolerance=0.01).version == "lr-1"
    assert choose_model([LR, XGB], shortfall, ap_tolerance=0.005).version == "xgb-1"
    assert qualifies(pair(0.0, -0.1, 0.1), 0.0)
    assert not qualifies(pair(-0.02, -0.03, -0.001), 0.01)


def test_without_rolling_origin_evidence_the_best_validation_ap_is_chosen():
    no_pool = Candidate("lr-2", "lr", 0.70)
    choice = choose_model([no_pool, Candidate("rf-2", "rf", 0.75)], {})
    assert (choice.version, choice.rule) == ("rf-2", FALLBACK_RULE)
    # Evidence for some candidates only (a missing pair) also falls back.
    assert choose_model([LR, XGB], {}).rule == FALLBACK_RULE


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no candidate"):
        choose_model([], {})
    with pytest.raises(ValueError, match="ap_tolerance"):
        choose_model([LR], {}, ap_tolerance=-0.1)
    assert choose_model([LR], {}).version == "lr-1"  # a single model with evidence is chosen
