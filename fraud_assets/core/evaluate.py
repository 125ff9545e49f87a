"""Holdout metrics of a fraud model, computed with numpy on the driver.

A holdout is a few tens of thousands of ``(Class, fraud_prob)`` pairs, so it is pulled to the
driver once and every metric (and 1,000 bootstrap resamples) is exact numpy arithmetic.

Two areas under the precision-recall curve are reported because they differ:

- ``average_precision`` is the step-wise sum ``sum_n (R_n - R_(n-1)) * P_n`` over the distinct
  scores, highest first (scikit-learn's ``average_precision_score``). It is the number this
  project quotes and gates on.
- ``ap_trapezoid`` is Spark's ``BinaryClassificationMetrics.areaUnderPR``: the trapezoidal
  area under the same points, starting from ``(recall 0, precision of the top score)``, without
  down-sampling (``numBins=0``). Linear interpolation between PR points is optimistic, so it
  is usually a little higher.

Scores are alerts when ``fraud_prob >= threshold`` (see ``scoring.is_alert``); ties share
one point of every curve.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from fraud_assets.core.contracts import LABEL_COLUMN
from fraud_assets.core.scoring import with_fraud_prob

AP_FORMULA = "step-wise: sum over distinct scores of (R_n - R_n-1) * P_n (sklearn)"
"""What ``average_precision`` means, written next to it in every report."""

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class ScoredSlice:
    """One slice of transactions (validation or holdout) with the model's scores.

    ``labels`` is 0/1, ``scores`` the fraud probability, ``amounts`` the transaction amount
    and ``times`` the dataset's ``Time`` seconds (to turn alert budgets per day into counts).
    """

    labels: np.ndarray
    scores: np.ndarray
    amounts: np.ndarray
    times: np.ndarray
    stream_share: float = 1.0
    """The share of the stream's transactions over the slice's span that the slice holds:
    1 for a time-ordered slice (every transaction of its period), the sampling fraction for
    a random one. A daily alert budget applies to the whole stream, so a 20% sample gets
    20% of it."""

    @classmethod
    def of(cls, labels, scores, amounts=None, times=None) -> "ScoredSlice":
        """Arrays from sequences; amounts default to 0 and times to one day's span."""
        labels = np.asarray(labels, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        n = len(scores)
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} scores")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be 0 or 1")
        if np.isnan(scores).any():
            raise ValueError("scores must not be NaN")
        amounts = np.zeros(n) if amounts is None else np.asarray(amounts, dtype=np.float64)
        times = np.linspace(0.0, SECONDS_PER_DAY, n) if times is None else np.asarray(times, float)
        return cls(labels, scores, amounts, times)

    @property
    def rows(self) -> int:
        return int(len(self.scores))

    @property
    def frauds(self) -> int:
        return int(self.labels.sum())

    @property
    def days(self) -> float:
        """The time the slice spans, in days (at least one second, so never zero)."""
        if self.rows == 0:
            return 0.0
        return max(float(self.times.max() - self.times.min()), 1.0) / SECONDS_PER_DAY


def scored_slice(model: PipelineModel, df: DataFrame) -> ScoredSlice:
    """Score ``df`` with ``model`` and pull ``(Class, fraud_prob, Amount, Time)`` to numpy."""
    pdf: pd.DataFrame = (
        with_fraud_prob(model, df).select(LABEL_COLUMN, "fraud_prob", "Amount", "Time").toPandas()
    )
    return ScoredSlice.of(pdf[LABEL_COLUMN], pdf["fraud_prob"], pdf["Amount"], pdf["Time"])


def _curve(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (highest first) and the weighted TP and FP counts at each of them."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    y = labels[order].astype(np.float64)
    w = np.ones_like(y) if weights is None else weights[order].astype(np.float64)
    # Last position of each run of equal scores: a threshold alerts a whole run or none of it.
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tps = np.cumsum(y * w)[ends]
    fps = np.cumsum((1.0 - y) * w)[ends]
    return sorted_scores[ends], tps, fps


def _step_ap(tps: np.ndarray, fps: np.ndarray) -> float:
    positives = tps[-1] if len(tps) else 0.0
    if positives <= 0:
        return float("nan")
    alerts = tps + fps
    precision = np.divide(tps, alerts, out=np.zeros_like(tps), where=alerts > 0)
    recall_gain = np.diff(tps, prepend=0.0) / positives
    return float(np.sum(recall_gain * precision))


def average_precision(labels, scores) -> float:
    """Step-wise average precision (scikit-learn's definition); NaN without frauds."""
    data = ScoredSlice.of(labels, scores)
    if data.rows == 0:
        return float("nan")
    _, tps, fps = _curve(data.labels, data.scores)
    return _step_ap(tps, fps)


def ap_trapezoid(labels, scores) -> float:
    """Spark's ``areaUnderPR`` (``numBins=0``): trapezoids from (0, first precision)."""
    data = ScoredSlice.of(labels, scores)
    if data.rows == 0 or data.frauds == 0:
        return float("nan")
    _, tps, fps = _curve(data.labels, data.scores)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    recall = np.r_[0.0, recall]
    precision = np.r_[precision[0], precision]
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0))


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (ties count one half); NaN unless both classes occur."""
    data = ScoredSlice.of(labels, scores)
    if data.frauds in (0, data.rows):
        return float("nan")
    _, tps, fps = _curve(data.labels, data.scores)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


@dataclass(frozen=True)
class AtThreshold:
    """What alerting at ``fraud_prob >= threshold`` does on a slice."""

    threshold: float
    alerts: int
    tp: int
    precision: float
    """NaN when nothing alerts."""
    recall: float
    """NaN when the slice holds no fraud."""


def at_threshold(data: ScoredSlice, threshold: float) -> AtThreshold:
    """Alerts, true positives, precision and recall of one threshold on ``data``."""
    alert = data.scores >= threshold
    alerts, tp = int(alert.sum()), int((alert & (data.labels == 1)).sum())
    return AtThreshold(
        threshold=float(threshold),
        alerts=alerts,
        tp=tp,
        precision=tp / alerts if alerts else float("nan"),
        recall=tp / data.frauds if data.frauds else float("nan"),
    )


def budget_alerts(data: ScoredSlice, alerts_per_day: float) -> int:
    """How many alerts a budget of ``alerts_per_day`` allows over the slice (>= 1).

    The budget is per day of the whole stream: a sampled slice gets its share of it.
    """
    return max(1, round(alerts_per_day * data.days * data.stream_share))


def precision_at_budget(data: ScoredSlice, alerts_per_day: float) -> float:
    """Precision of the top ``alerts_per_day x days`` scores (ties at the cut all alert)."""
    if data.rows == 0:
        return float("nan")
    k = min(budget_alerts(data, alerts_per_day), data.rows)
    cut = np.sort(data.scores)[::-1][k - 1]
    return at_threshold(data, cut).precision


def bootstrap_ap_values(
    labels, scores: Sequence, resamples: int = 1000, seed: int = 42, strata=None
) -> np.ndarray:
    """AP of each model in ``scores`` on the same bootstrap resamples of the rows.

    Args:
        labels: 0/1 per row, shared by every model.
        scores: One score array per model, each aligned with ``labels`` (same rows, same order).
        resamples: How many resamples to draw.
        seed: Seed of the draws: the same seed draws the same rows.
        strata: Optional stratum per row (e.g. the rolling-origin fold): rows are resampled
            within each stratum, so every resample keeps each stratum's size.

    Returns:
        An array of shape ``(kept resamples, models)``: row ``i`` is every model's AP on the
        same resample, so differences of columns are paired. Each resample is a multinomial
        weight per row on the once-sorted scores; resamples without a fraud are skipped.
    """
    labels = np.asarray(labels, dtype=np.int64)
    slices = [ScoredSlice.of(labels, model_scores) for model_scores in scores]
    rows = len(labels)
    if not slices or labels.sum() == 0 or resamples < 1:
        return np.empty((0, len(slices)))
    curves = []
    for data in slices:
        order = np.argsort(-data.scores, kind="mergesort")
        sorted_scores = data.scores[order]
        ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), rows - 1]
        curves.append((order, data.labels[order].astype(np.float64), ends))
    groups = (
        [np.arange(rows)]
        if strata is None
        else [np.flatnonzero(strata == s) for s in np.unique(np.asarray(strata))]
    )
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = [members[rng.integers(0, len(members), len(members))] for members in groups]
        weights = np.bincount(np.concatenate(drawn), minlength=rows)
        resample = []
        for order, y, ends in curves:
            w = weights[order]
            tps = np.cumsum(y * w)[ends]
            fps = np.cumsum((1.0 - y) * w)[ends]
            resample.append(_step_ap(tps, fps))
        if not np.isnan(resample[0]):
            values.append(resample)
    return np.asarray(values, dtype=np.float64).reshape(-1, len(slices))


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values``; NaNs when there are none."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ap_interval(
    labels, scores, resamples: int = 1000, seed: int = 42, level: float = 0.95, strata=None
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`average_precision` (rows resampled, seeded).

    1,000 resamples of 57k rows take about a second (see :func:`bootstrap_ap_values`);
    ``strata`` resamples within each stratum (the folds of a pooled rolling-origin slice).
    """
    values = bootstrap_ap_values(labels, [scores], resamples, seed, strata)
    return percentile_interval(values[:, 0], level)


@dataclass(frozen=True)
class PairedDifference:
    """``AP(a) - AP(b)`` on the same rows, and its paired bootstrap interval."""

    difference: float
    ci_low: float
    ci_high: float
    resamples: int

    def as_dict(self) -> dict:
        return asdict(self)


def paired_ap_difference(
    labels,
    scores_a,
    scores_b,
    resamples: int = 1000,
    seed: int = 42,
    level: float = 0.95,
    strata=None,
) -> PairedDifference:
    """The AP difference of two models scored on the same rows, with a paired interval.

    Both models' AP is computed on each of the same resampled rows and the interval is the
    percentile interval of the per-resample differences: rows that are hard for both models
    move both APs together, so the interval is narrower than the two intervals suggest.
    """
    values = bootstrap_ap_values(labels, [scores_a, scores_b], resamples, seed, strata)
    low, high = percentile_interval(values[:, 0] - values[:, 1], level)
    return PairedDifference(
        difference=average_precision(labels, scores_a) - average_precision(labels, scores_b),
        ci_low=low,
        ci_high=high,
        resamples=len(values),
    )


@dataclass(frozen=True)
class RankingMetrics:
    """Threshold-free quality of the scores on one slice."""

    average_precision: float
    ap_trapezoid: float
    ap_ci_low: float
    ap_ci_high: float
    roc_auc: float
    precision_at_budget: float
    alerts_per_day: float
    rows: int
    frauds: int
    days: float
    ap_formula: str = AP_FORMULA

    def as_dict(self) -> dict:
        return asdict(self)


def ranking_metrics(
    data: ScoredSlice, alerts_per_day: float, resamples: int = 1000, seed: int = 42
) -> RankingMetrics:
    """Every threshold-free metric of ``data`` (see the module doc for the two AP formulas)."""
    low, high = bootstrap_ap_interval(data.labels, data.scores, resamples, seed)
    return RankingMetrics(
        average_precision=average_precision(data.labels, data.scores),
        ap_trapezoid=ap_trapezoid(data.labels, data.scores),
        ap_ci_low=low,
        ap_ci_high=high,
        roc_auc=roc_auc(data.labels, data.scores),
        precision_at_budget=precision_at_budget(data, alerts_per_day),
        alerts_per_day=float(alerts_per_day),
        rows=data.rows,
        frauds=data.frauds,
        days=round(data.days, 4),
    )
