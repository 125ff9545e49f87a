"""Rolling-origin evaluation: expanding time folds, per-fold and pooled AP, paired differences.

One time-ordered holdout of the two days of data holds 74 frauds: too few to tell the models
apart. The rolling-origin protocol splits the audited rows, in ``Time`` order, into
``folds + 1`` consecutive blocks of equal size; fold ``i`` (1..``folds``) fits the model on
blocks ``0..i-1`` (everything before its window) and scores block ``i``. Every row after the
first block is scored exactly once, by a model that never saw it nor anything after it, so a
comparison rests on every fraud after the first block.

Figures (numpy on the driver, :mod:`fraud_assets.core.evaluate`):

- per fold: AP of the window and its bootstrap interval;
- pooled: AP of all windows' scores together (each row ranked against every other scored
  row, whichever fold scored it), with an interval from resampling rows within each fold;
  the mean of the fold APs is reported beside it;
- paired: ``AP(a) - AP(b)`` of two models on the same pooled rows, with the interval of the
  difference over the same resampled rows (:func:`~fraud_assets.core.evaluate.
  paired_ap_difference`).

No threshold is chosen here: AP is threshold-free, and the thresholds stay the time-ordered
protocol's (chosen on its validation slice).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fraud_assets.core.contracts import LABEL_COLUMN
from fraud_assets.core.evaluate import (
    AP_FORMULA,
    ScoredSlice,
    average_precision,
    bootstrap_ap_interval,
    paired_ap_difference,
)
from fraud_assets.core.scoring import with_fraud_prob
from fraud_assets.core.train import TrainingConfig, fit

PROTOCOL = "rolling_origin"

DEFAULT_FOLDS = 4
"""Four folds: five blocks of ~57k rows (~95 frauds each); the first trains only."""


def fold_boundaries(df: DataFrame, folds: int) -> list[int]:
    """The ``row_index`` ending each of the first ``folds`` blocks (``folds + 1`` blocks).

    Block ``b`` holds the rows with ``boundaries[b-1] < row_index <= boundaries[b]`` (the
    last block: everything above the last boundary). Exact quantiles of ``row_index``.
    """
    if folds < 1:
        raise ValueError(f"folds must be at least 1, got {folds}")
    probabilities = [block / (folds + 1) for block in range(1, folds + 1)]
    boundaries = [int(b) for b in df.approxQuantile("row_index", probabilities, 0.0)]
    if len(boundaries) != folds or len(set(boundaries)) != folds:
        raise ValueError(f"{folds} folds need at least {folds + 1} rows, got fewer")
    return boundaries


@dataclass(frozen=True)
class Fold:
    """One fold's validation window, scored by the model fitted on everything before it."""

    fold: int
    train_rows: int
    train_frauds: int
    row_index: np.ndarray
    scores: ScoredSlice

    def summary(self, resamples: int, seed: int) -> dict[str, Any]:
        data = self.scores
        low, high = bootstrap_ap_interval(data.labels, data.scores, resamples, seed)
        return {
            "fold": self.fold,
            "train_rows": self.train_rows,
            "train_frauds": self.train_frauds,
            "rows": data.rows,
            "frauds": data.frauds,
            "time_start_h": round(float(data.times.min()) / 3600.0, 2),
            "time_end_h": round(float(data.times.max()) / 3600.0, 2),
            "average_precision": average_precision(data.labels, data.scores),
            "ap_ci_low": low,
            "ap_ci_high": high,
        }


@dataclass(frozen=True)
class RollingOriginRun:
    """One configuration evaluated on every fold."""

    config: TrainingConfig
    folds: tuple[Fold, ...]

    @property
    def algorithm(self) -> str:
        return self.config.algorithm

    @property
    def row_index(self) -> np.ndarray:
        return np.concatenate([fold.row_index for fold in self.folds])

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([fold.scores.labels for fold in self.folds])

    @property
    def scores(self) -> np.ndarray:
        return np.concatenate([fold.scores.scores for fold in self.folds])

    @property
    def strata(self) -> np.ndarray:
        return np.concatenate([np.full(f.scores.rows, f.fold) for f in self.folds])


def _scored_window(model, window: DataFrame) -> tuple[np.ndarray, ScoredSlice]:
    pdf: pd.DataFrame = (
        with_fraud_prob(model, window)
        .select("row_index", LABEL_COLUMN, "fraud_prob", "Amount", "Time")
        .toPandas()
        .sort_values("row_index", kind="mergesort")
    )
    scores = ScoredSlice.of(pdf[LABEL_COLUMN], pdf["fraud_prob"], pdf["Amount"], pdf["Time"])
    return pdf["row_index"].to_numpy(np.int64), scores


def rolling_origin(
    audited: DataFrame, config: TrainingConfig, folds: int = DEFAULT_FOLDS
) -> RollingOriginRun:
    """Fit ``config`` on each fold's past and score its window (see the module doc).

    Raises:
        ValueError: A fold's past holds no fraud (fewer folds give the first more rows).
    """
    boundaries = fold_boundaries(audited, folds)
    row_index = F.col("row_index")
    results = []
    for fold, cutoff in enumerate(boundaries, start=1):
        past = audited.where(row_index <= cutoff)
        window = row_index > cutoff
        if fold < folds:
            window = window & (row_index <= boundaries[fold])
        counts = past.agg(F.count(F.lit(1)), F.sum(LABEL_COLUMN)).first()
        if not counts[1]:
            raise ValueError(
                f"rolling-origin fold {fold} of {folds} trains on {counts[0]} rows without a "
                "fraud: use fewer folds"
            )
        model = fit(past, config)
        indexes, scores = _scored_window(model, audited.where(window))
        results.append(Fold(fold, int(counts[0]), int(counts[1]), indexes, scores))
    return RollingOriginRun(config=config, folds=tuple(results))


def rolling_report(run: RollingOriginRun, resamples: int = 1000, seed: int = 42) -> dict[str, Any]:
    """Per-fold and pooled AP with bootstrap intervals, as JSON-ready values."""
    labels, scores, strata = run.labels, run.scores, run.strata
    low, high = bootstrap_ap_interval(labels, scores, resamples, seed, strata=strata)
    per_fold = [fold.summary(resamples, seed) for fold in run.folds]
    return {
        "model": run.algorithm,
        "protocol": PROTOCOL,
        "folds": per_fold,
        "pooled": {
            "average_precision": average_precision(labels, scores),
            "ap_ci_low": low,
            "ap_ci_high": high,
            "mean_fold_average_precision": float(
                np.nanmean([f["average_precision"] for f in per_fold])
            ),
            "rows": int(len(labels)),
            "frauds": int(labels.sum()),
            "folds": len(per_fold),
            "resamples": resamples,
        },
    }


def paired_comparison(
    a: RollingOriginRun, b: RollingOriginRun, resamples: int = 1000, seed: int = 42
) -> dict[str, Any]:
    """``AP(a) - AP(b)`` pooled (paired interval) and per fold, on the same rows.

    Raises:
        ValueError: The two runs did not score the same rows (other data or fold count).
    """
    if len(a.folds) != len(b.folds) or not np.array_equal(a.row_index, b.row_index):
        raise ValueError(
            f"{a.algorithm} and {b.algorithm} were not scored on the same rolling-origin rows"
        )
    pooled = paired_ap_difference(
        a.labels, a.scores, b.scores, resamples, seed, strata=a.strata
    ).as_dict()
    by_fold = [
        average_precision(fa.scores.labels, fa.scores.scores)
        - average_precision(fb.scores.labels, fb.scores.scores)
        for fa, fb in zip(a.folds, b.folds, strict=True)
    ]
    return {"a": a.algorithm, "b": b.algorithm, **pooled, "fold_differences": by_fold}


def paired_comparisons(
    runs: list[RollingOriginRun], resamples: int = 1000, seed: int = 42
) -> list[dict[str, Any]]:
    """Every other model against the one of best pooled AP (``a`` = the other, ``b`` = best)."""
    if len(runs) < 2:
        return []
    best = max(runs, key=lambda run: average_precision(run.labels, run.scores))
    return [paired_comparison(run, best, resamples, seed) for run in runs if run is not best]


def folds_table(reports: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per model x fold (and a ``pooled`` row per model): AP and its interval."""
    rows = []
    for report in reports:
        for fold in report["folds"]:
            rows.append({"model": report["model"], **fold, "fold": str(fold["fold"])})
        pooled = report["pooled"]
        rows.append(
            {
                "model": report["model"],
                "fold": "pooled",
                "rows": pooled["rows"],
                "frauds": pooled["frauds"],
                "average_precision": pooled["average_precision"],
                "ap_ci_low": pooled["ap_ci_low"],
                "ap_ci_high": pooled["ap_ci_high"],
            }
        )
    return pd.DataFrame(rows)


def comparison_entry(report: dict[str, Any]) -> dict[str, Any]:
    """The row of ``comparison.json`` of one rolling-origin report (pooled figures).

    Threshold figures are the time-ordered protocol's: None here.
    """
    pooled = report["pooled"]
    empty = ("ap_trapezoid", "roc_auc", "threshold", "policy", "precision", "recall")
    return {
        "model": report["model"],
        "protocol": PROTOCOL,
        "average_precision": pooled["average_precision"],
        "ap_formula": AP_FORMULA,
        "ap_ci_low": pooled["ap_ci_low"],
        "ap_ci_high": pooled["ap_ci_high"],
        **dict.fromkeys(empty),
        "precision_at_budget": None,
        "alerts_per_day": None,
        "validation_average_precision": None,
        "train_seconds": report.get("train_seconds"),
        "scoring_core_us_per_row": report.get("scoring_core_us_per_row"),
        "folds": pooled["folds"],
        "frauds": pooled["frauds"],
    }


def paired_by_model(paired: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`paired_comparisons` keyed by the compared model (``a``)."""
    return {pair["a"]: pair for pair in paired}


def paired_table(paired: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per paired comparison: pooled difference, its interval, each fold's."""
    rows = []
    for pair in paired:
        row = {
            "model": pair["a"],
            "against": pair["b"],
            "ap_difference": pair["difference"],
            "ci_low": pair["ci_low"],
            "ci_high": pair["ci_high"],
        }
        for fold, difference in enumerate(pair["fold_differences"], start=1):
            row[f"fold_{fold}_difference"] = difference
        rows.append(row)
    return pd.DataFrame(rows)
