"""Threshold selection: how many frauds are caught, and at what cost, at each threshold."""

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fraud_assets.core.contracts import LABEL_COLUMN

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(
    sorted(
        {round(i / 100, 2) for i in range(1, 100)}
        | {round(0.99 + i / 1000, 3) for i in range(1, 10)}
    )
)
"""0.01 .. 0.99 by 0.01, then 0.991 .. 0.999: the interesting part of a class-weighted
model's probabilities is close to 1."""

SWEEP_COLUMNS = ("threshold", "alerts", "tp", "fp", "fn", "tn", "precision", "recall", "f1")


def is_alert(fraud_prob: Column, threshold: Column) -> Column:
    """The alert rule, the same in batch, stream and tests: ``fraud_prob >= threshold``."""
    return fraud_prob >= threshold


def threshold_sweep(
    spark: SparkSession, scored: DataFrame, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
) -> pd.DataFrame:
    """Confusion counts, precision, recall and F1 of ``scored`` at every threshold.

    ``scored`` needs ``fraud_prob`` and ``Class``. Precision is NaN where nothing alerts.
    """
    grid = spark.createDataFrame([(float(t),) for t in thresholds], "threshold double")
    label = F.col(LABEL_COLUMN) == 1
    alert = is_alert(F.col("fraud_prob"), F.col("threshold"))
    counts = (
        scored.select("fraud_prob", LABEL_COLUMN)
        .crossJoin(F.broadcast(grid))
        .groupBy("threshold")
        .agg(
            F.count_if(alert & label).alias("tp"),
            F.count_if(alert & ~label).alias("fp"),
            F.count_if(~alert & label).alias("fn"),
            F.count_if(~alert & ~label).alias("tn"),
        )
        .orderBy("threshold")
        .toPandas()
    )
    counts["alerts"] = counts["tp"] + counts["fp"]
    counts["precision"] = counts["tp"] / counts["alerts"].where(counts["alerts"] > 0)
    counts["recall"] = counts["tp"] / (counts["tp"] + counts["fn"]).where(
        (counts["tp"] + counts["fn"]) > 0
    )
    pr_sum = (counts["precision"] + counts["recall"]).where(lambda s: s > 0)
    counts["f1"] = (2 * counts["precision"] * counts["recall"] / pr_sum).fillna(0.0)
    return counts[list(SWEEP_COLUMNS)].reset_index(drop=True)


@dataclass(frozen=True)
class ThresholdChoice:
    """The recommended alert threshold and why."""

    threshold: float
    policy: str
    precision: float
    recall: float
    f1: float
    alerts: int


def recommend_max_f1(sweep: pd.DataFrame) -> ThresholdChoice:
    """The threshold with the best F1 (ties: the higher threshold, fewer alerts)."""
    if sweep.empty or sweep["f1"].max() <= 0:
        raise ValueError("no threshold catches any fraud: the model cannot be promoted")
    best = sweep.sort_values(["f1", "threshold"], ascending=[False, False]).iloc[0]
    return ThresholdChoice(
        threshold=float(best["threshold"]),
        policy="max_f1",
        precision=float(best["precision"]),
        recall=float(best["recall"]),
        f1=float(best["f1"]),
        alerts=int(best["alerts"]),
    )
