"""Threshold selection: how many frauds are caught, and at what cost, at each threshold.

A threshold is always chosen on a validation slice (never on the holdout whose metrics are
reported) by one of four policies, and the choice names the policy that made it:

- ``max_f1``: the best F1 (ties: the higher threshold, fewer alerts);
- ``min_precision``: the lowest threshold whose precision reaches a target (most frauds
  caught while at least, e.g., 85% of alerts are frauds);
- ``alert_budget``: investigators handle ``k`` alerts a day: the lowest threshold that
  stays within ``k x days`` alerts on the validation slice (with distinct scores, the
  ``k x days``-th highest score);
- ``expected_cost``: minimise the amount of fraud missed plus a fixed review cost per alert.

Every policy looks at every distinct validation score, so no grid caps the threshold (a
class-weighted model puts its useful thresholds far above 0.999).
"""

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fraud_assets.core.evaluate import ScoredSlice, budget_alerts

POLICIES: tuple[str, ...] = ("max_f1", "min_precision", "alert_budget", "expected_cost")

SWEEP_COLUMNS = (
    "threshold",
    "alerts",
    "tp",
    "fp",
    "fn",
    "tn",
    "precision",
    "recall",
    "f1",
    "missed_amount",
)
"""``missed_amount``: the summed ``Amount`` of the frauds scored below the threshold."""

LOWEST_THRESHOLD = 1e-9
HIGHEST_THRESHOLD = float(np.nextafter(1.0, 0.0))
"""A promoted threshold lies strictly inside (0, 1). A score of exactly 1.0 (a unanimous
forest) still alerts at the highest threshold below 1."""


def threshold_sweep(data: ScoredSlice, thresholds=None) -> pd.DataFrame:
    """Confusion counts, precision, recall, F1 and missed fraud amount at each threshold.

    ``thresholds`` defaults to every distinct score of ``data`` (the exact curve), in
    increasing order. Precision is NaN where nothing alerts, recall NaN without frauds.
    """
    grid = np.unique(data.scores if thresholds is None else np.asarray(thresholds, float))
    is_fraud = data.labels == 1
    all_sorted = np.sort(data.scores)
    fraud_order = np.argsort(data.scores[is_fraud], kind="mergesort")
    fraud_sorted = data.scores[is_fraud][fraud_order]
    fraud_amounts = np.r_[0.0, np.cumsum(data.amounts[is_fraud][fraud_order])]
    # Rows scored below t: searchsorted(..., "left"); everything else alerts.
    below = np.searchsorted(all_sorted, grid, side="left")
    frauds_below = np.searchsorted(fraud_sorted, grid, side="left")
    alerts = data.rows - below
    tp = data.frauds - frauds_below
    fp = alerts - tp
    fn = frauds_below
    tn = below - frauds_below
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(alerts > 0, tp / np.maximum(alerts, 1), np.nan)
        recall = tp / data.frauds if data.frauds else np.full(len(grid), np.nan)
        f1 = np.where(tp > 0, 2 * tp / np.maximum(alerts + data.frauds, 1), 0.0)
    sweep = pd.DataFrame(
        {
            "threshold": grid,
            "alerts": alerts,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "missed_amount": fraud_amounts[frauds_below],
        }
    )
    return sweep[list(SWEEP_COLUMNS)].astype(
        {c: "int64" for c in ("alerts", "tp", "fp", "fn", "tn")}
    )


def display_thresholds(scores: np.ndarray, points: int = 200) -> np.ndarray:
    """About ``points`` thresholds for a table or a plot, dense among the highest scores.

    The scores ranked 1st, 2nd, 3rd, ... on a geometric scale up to the lowest one: the
    part of the curve where alerts are few gets most of the points.
    """
    ordered = np.sort(np.asarray(scores, float))[::-1]
    if len(ordered) == 0:
        return ordered
    ranks = np.unique(np.round(np.geomspace(1, len(ordered), points)).astype(int))
    return np.unique(ordered[ranks - 1])


@dataclass(frozen=True)
class ThresholdChoice:
    """A recommended alert threshold, the policy that chose it and its effect on validation."""

    threshold: float
    policy: str
    precision: float
    recall: float
    f1: float
    alerts: int
    expected_cost: float | None = None
    """Missed fraud amount + review cost x alerts (the ``expected_cost`` policy only)."""

    def as_dict(self) -> dict:
        return asdict(self)


def _choice(row: pd.Series, policy: str, cost: float | None = None) -> ThresholdChoice:
    return ThresholdChoice(
        threshold=float(np.clip(row["threshold"], LOWEST_THRESHOLD, HIGHEST_THRESHOLD)),
        policy=policy,
        precision=float(row["precision"]),
        recall=float(row["recall"]),
        f1=float(row["f1"]),
        alerts=int(row["alerts"]),
        expected_cost=cost,
    )


def _catches_fraud(sweep: pd.DataFrame) -> pd.DataFrame:
    return sweep[sweep["tp"] > 0]


def recommend_max_f1(sweep: pd.DataFrame) -> ThresholdChoice:
    """The threshold with the best F1 (ties: the higher threshold, fewer alerts)."""
    if sweep.empty or sweep["f1"].max() <= 0:
        raise ValueError("no threshold catches any fraud: the model cannot be promoted")
    best = sweep.sort_values(["f1", "threshold"], ascending=[False, False]).iloc[0]
    return _choice(best, "max_f1")


def recommend_min_precision(sweep: pd.DataFrame, target: float) -> ThresholdChoice | None:
    """The lowest threshold whose precision is at least ``target``; None when none is."""
    meeting = _catches_fraud(sweep)
    meeting = meeting[meeting["precision"] >= target]
    if meeting.empty:
        return None
    return _choice(meeting.sort_values("threshold").iloc[0], "min_precision")


def recommend_alert_budget(sweep: pd.DataFrame, max_alerts: int) -> ThresholdChoice | None:
    """The lowest threshold raising at most ``max_alerts`` alerts that catches a fraud.

    None when even the highest score raises more (ties) or no such threshold catches one.
    """
    within = _catches_fraud(sweep)
    within = within[within["alerts"] <= max_alerts]
    if within.empty:
        return None
    return _choice(within.sort_values("threshold").iloc[0], "alert_budget")


def expected_costs(sweep: pd.DataFrame, review_cost: float) -> pd.Series:
    """Missed fraud amount plus ``review_cost`` per alert, at each threshold of ``sweep``."""
    return sweep["missed_amount"] + review_cost * sweep["alerts"]


def recommend_expected_cost(sweep: pd.DataFrame, review_cost: float) -> ThresholdChoice | None:
    """The threshold of least expected cost (ties: the higher threshold); None if no alert.

    Only thresholds that raise alerts are candidates: "alert on nothing" is no threshold to
    promote (the table still shows its cost, every fraud's amount, for comparison).
    """
    candidates = sweep[sweep["alerts"] > 0].assign(cost=lambda s: expected_costs(s, review_cost))
    if candidates.empty:
        return None
    best = candidates.sort_values(["cost", "threshold"], ascending=[True, False]).iloc[0]
    return _choice(best, "expected_cost", cost=float(best["cost"]))


@dataclass(frozen=True)
class PolicySettings:
    """The business inputs of the four policies."""

    min_precision: float = 0.85
    alerts_per_day: float = 200.0
    """Alerts investigators can review in a day (the dataset has ~240 frauds a day)."""
    review_cost: float = 5.0
    """Cost of reviewing one alert, in the currency of ``Amount``."""


def evaluate_policies(
    data: ScoredSlice, settings: PolicySettings
) -> dict[str, ThresholdChoice | None]:
    """Each policy's choice on ``data`` (the validation slice); None where it cannot be met."""
    sweep = threshold_sweep(data)
    choices: dict[str, ThresholdChoice | None] = {}
    try:
        choices["max_f1"] = recommend_max_f1(sweep)
    except ValueError:
        choices["max_f1"] = None
    choices["min_precision"] = recommend_min_precision(sweep, settings.min_precision)
    choices["alert_budget"] = recommend_alert_budget(
        sweep, budget_alerts(data, settings.alerts_per_day)
    )
    choices["expected_cost"] = recommend_expected_cost(sweep, settings.review_cost)
    return choices


def recommend(choices: dict[str, ThresholdChoice | None], policy: str) -> ThresholdChoice:
    """The choice of ``policy``, or a ValueError that says why there is none."""
    if policy not in POLICIES:
        raise ValueError(f"unknown threshold policy {policy!r}; choose one of {POLICIES}")
    choice = choices.get(policy)
    if choice is None:
        met = [name for name, value in choices.items() if value is not None]
        raise ValueError(
            f"threshold policy {policy} cannot be met on the validation slice "
            f"(policies that can: {met or 'none'}); choose another policy or relax its setting"
        )
    return choice
