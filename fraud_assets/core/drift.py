"""Drift: how far live traffic has moved from the data the promoted model was trained on.

The measure is the population stability index (PSI) of each model input (``V1..V28``,
``Amount``) and of the score (``fraud_prob``)::

    PSI = sum over bins i of (live_i - reference_i) * ln(live_i / reference_i)

where ``reference_i`` and ``live_i`` are the shares of the reference and live rows in bin
``i``. The bins are cut at the reference's quantiles (deciles by default, from Spark's
``approxQuantile``), open at both ends so that every live value falls in one; ties in the
reference (a score with much of its mass near 0, amounts of exactly 1.00) merge quantiles,
so a column may have fewer bins. A share of 0 is floored at :data:`EMPTY_SHARE` so the
logarithm stays finite. The usual reading: below 0.1 no shift, 0.1-0.2 a moderate one,
above 0.2 a significant shift (the default threshold of the drift check).

The reference is summarised once into a :class:`ReferenceProfile` (cut points and shares,
plain JSON); a live sample is then counted into the same bins in one Spark aggregation.
Everything is built-in Spark functions; the PSI sum runs on the driver over a few hundred
numbers.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fraud_assets.core.contracts import FEATURE_COLUMNS
from fraud_assets.core.scoring import filter_valid, parse_transactions
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.train import SPLIT_SEED, time_ordered_split

SCORE_COLUMN = "fraud_prob"
DRIFT_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, SCORE_COLUMN)
"""What the drift audit compares: every model input, and the promoted model's score."""

DEFAULT_BINS = 10
QUANTILE_RELATIVE_ERROR = 1e-3
"""``approxQuantile``'s relative error: a cut point is within 0.1% of rank of the exact one."""

EMPTY_SHARE = 1e-4
"""The share an empty bin counts as (PSI's logarithm is undefined at 0)."""

PSI_COLUMNS: tuple[str, ...] = (
    "feature",
    "psi",
    "bins",
    "reference_rows",
    "live_rows",
    "reference_mean",
    "live_mean",
)
"""One row per compared column of :func:`drift_table`, largest PSI first."""


@dataclass(frozen=True)
class ReferenceProfile:
    """The reference distribution of each column: cut points and the share of rows per bin.

    ``edges[c]`` are ascending, distinct cut points; bin ``i`` holds values in
    ``[edges[i-1], edges[i])`` (the first bin everything below ``edges[0]``, the last
    everything from ``edges[-1]``), so ``shares[c]`` has ``len(edges[c]) + 1`` entries.
    """

    rows: int
    edges: dict[str, list[float]]
    shares: dict[str, list[float]]
    means: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ReferenceProfile":
        return cls(
            rows=int(values["rows"]),
            edges={k: [float(x) for x in v] for k, v in values["edges"].items()},
            shares={k: [float(x) for x in v] for k, v in values["shares"].items()},
            means={k: float(v) for k, v in values["means"].items()},
        )


def bin_counts(
    df: DataFrame, edges: dict[str, list[float]]
) -> tuple[dict[str, list[int]], dict[str, float | None]]:
    """Rows of ``df`` in each bin of each column of ``edges`` (one Spark job), and the means.

    Nulls are in no bin. A bin's count is the difference of two counts below cut points, so
    the aggregation holds one ``count_if`` per cut point and one count per column.
    """
    aggregates = []
    for column, cuts in edges.items():
        value = F.col(column)
        aggregates.append(F.count(value).alias(f"{column}__n"))
        aggregates.append(F.avg(value).alias(f"{column}__mean"))
        aggregates.extend(
            F.count_if(value < F.lit(cut)).alias(f"{column}__{i}") for i, cut in enumerate(cuts)
        )
    row = df.agg(*aggregates).first().asDict()
    counts, means = {}, {}
    for column, cuts in edges.items():
        below = [
            0,
            *(int(row[f"{column}__{i}"]) for i in range(len(cuts))),
            int(row[f"{column}__n"]),
        ]
        counts[column] = [high - low for low, high in zip(below, below[1:], strict=False)]
        mean = row[f"{column}__mean"]
        means[column] = float(mean) if mean is not None else None
    return counts, means


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [count / total if total else 0.0 for count in counts]


def reference_profile(
    reference: DataFrame, columns: Sequence[str] = DRIFT_COLUMNS, bins: int = DEFAULT_BINS
) -> ReferenceProfile:
    """Cut points at the ``bins``-quantiles of each column of ``reference``, and its shares.

    Raises:
        ValueError: ``reference`` has no rows, or ``bins`` is below 2.
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    probabilities = [i / bins for i in range(1, bins)]
    quantiles = reference.approxQuantile(list(columns), probabilities, QUANTILE_RELATIVE_ERROR)
    if not quantiles or not all(quantiles):
        raise ValueError("the reference data has no rows: nothing to compare live traffic with")
    edges = {column: sorted(set(cuts)) for column, cuts in zip(columns, quantiles, strict=True)}
    counts, means = bin_counts(reference, edges)
    rows = max(sum(c) for c in counts.values())
    return ReferenceProfile(
        rows=rows,
        edges=edges,
        shares={column: _shares(c) for column, c in counts.items()},
        means={column: mean for column, mean in means.items() if mean is not None},
    )


def population_stability_index(reference: Sequence[float], live: Sequence[float]) -> float:
    """PSI of two share vectors over the same bins (empty bins floored at EMPTY_SHARE)."""
    if len(reference) != len(live):
        raise ValueError(f"{len(reference)} reference bins but {len(live)} live bins")
    total = 0.0
    for expected, actual in zip(reference, live, strict=True):
        expected, actual = max(expected, EMPTY_SHARE), max(actual, EMPTY_SHARE)
        total += (actual - expected) * math.log(actual / expected)
    return total


@dataclass(frozen=True)
class Drift:
    """A live sample counted into a reference profile's bins."""

    profile: ReferenceProfile
    counts: dict[str, list[int]]
    means: dict[str, float | None]

    def psi(self, column: str) -> float:
        """The column's PSI; NaN when the sample has no value of it (nothing to compare)."""
        counts = self.counts[column]
        if not sum(counts):
            return math.nan
        return population_stability_index(self.profile.shares[column], _shares(counts))

    def table(self) -> pd.DataFrame:
        """One row per column (:data:`PSI_COLUMNS`), largest PSI first, no PSI last."""
        rows = [
            {
                "feature": column,
                "psi": self.psi(column),
                "bins": len(shares),
                "reference_rows": self.profile.rows,
                "live_rows": sum(self.counts[column]),
                "reference_mean": self.profile.means.get(column, math.nan),
                "live_mean": math.nan if self.means[column] is None else self.means[column],
            }
            for column, shares in self.profile.shares.items()
        ]
        table = pd.DataFrame(rows, columns=list(PSI_COLUMNS))
        return table.sort_values("psi", ascending=False, na_position="last").reset_index(drop=True)

    def bin_shares(self, column: str) -> pd.DataFrame:
        """Reference and live share of each bin of ``column``, lowest bin first."""
        edges = self.profile.edges[column]
        return pd.DataFrame(
            {
                "low": [-math.inf, *edges],
                "high": [*edges, math.inf],
                "reference_share": self.profile.shares[column],
                "live_share": _shares(self.counts[column]),
            }
        )


def measure_drift(profile: ReferenceProfile, live: DataFrame) -> Drift:
    """Count ``live`` into the bins of ``profile`` (one Spark job over ``live``)."""
    counts, means = bin_counts(live, profile.edges)
    return Drift(profile, counts, means)


def drift_table(profile: ReferenceProfile, live: DataFrame) -> pd.DataFrame:
    """PSI of each column of ``profile`` in ``live``, largest first (:data:`PSI_COLUMNS`)."""
    return measure_drift(profile, live).table()


def save_profile(path: Path, profile: ReferenceProfile, **provenance: Any) -> None:
    """Write ``profile`` and what it was computed from (``provenance``) as JSON."""
    from fraud_assets.core.registry import write_json_atomic

    write_json_atomic(path, {"provenance": provenance, "profile": profile.as_dict()})


def load_profile(path: Path, **provenance: Any) -> ReferenceProfile | None:
    """The profile saved at ``path`` if it was computed from the same ``provenance``."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("provenance") != json.loads(json.dumps(provenance, default=str)):
        return None
    return ReferenceProfile.from_dict(saved["profile"])


# --- the two samples ------------------------------------------------------------------------


def training_reference(audited: DataFrame, holdout_fraction: float, max_rows: int) -> DataFrame:
    """The rows a time-ordered model trained on (``audited`` minus its holdout).

    At most about ``max_rows`` of them: a seeded hash of ``row_index`` keeps the same
    sample each time.
    """
    training, _ = time_ordered_split(audited, holdout_fraction)
    rows = training.count()
    if rows <= max_rows:
        return training
    bucket = F.pmod(F.xxhash64(F.col("row_index"), F.lit(SPLIT_SEED + 11)), F.lit(1_000_000))
    return training.where(bucket < F.lit(round(max_rows / rows * 1_000_000)))


def recent_offsets(end_offsets: dict[int, int], rows: int) -> dict[int, int]:
    """Start offsets that take about the last ``rows`` messages, spread over the partitions."""
    per_partition = math.ceil(rows / max(len(end_offsets), 1))
    return {partition: max(0, end - per_partition) for partition, end in end_offsets.items()}


def recent_transactions(
    spark: SparkSession, kafka: KafkaSettings, end_offsets: dict[int, int], rows: int
) -> DataFrame:
    """The valid transactions among about the last ``rows`` messages of ``transactions``.

    Read in batch with Spark's Kafka source and parsed and validated exactly as the scoring
    stream does (:func:`parse_transactions`); rejected messages are left out. Offsets
    already deleted by retention are skipped (``failOnDataLoss=false``).
    """
    topic = kafka.topics.transactions
    starts = recent_offsets(end_offsets, rows)

    def offsets(values: dict[int, int]) -> str:
        return json.dumps({topic: {str(p): o for p, o in values.items()}})

    records = (
        spark.read.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", topic)
        .option("startingOffsets", offsets(starts))
        .option("endingOffsets", offsets(end_offsets))
        .option("failOnDataLoss", "false")
        .load()
    )
    return filter_valid(parse_transactions(records))
