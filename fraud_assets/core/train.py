"""Training: Spark ML pipelines that turn a transaction into a fraud probability.

Every model is ``VectorAssembler -> StandardScaler -> <classifier>`` with the classifier one
of logistic regression (class-weighted, the reference design), random forest, gradient-
boosted trees (Spark ML) or XGBoost (its Spark estimator, ``xgboost.spark``). Trees do not
need scaled inputs, but keeping the scaler gives every model the same structure (the per-alert
explanations and the plain-python benchmark rely on it).

Two protocols decide which rows train and which are held out:

- ``time_ordered``: the earliest 80% by ``Time`` train, the last 20% are held out; what a
  deployed model faces, and the protocol model selection uses;
- ``random_80_20``: a seeded random 80/20 split, for comparison with the reference notebooks
  (a random split lets the model see the future, so its numbers are optimistic).

Within the training part, a validation slice (the last 20% of the training period, or a
random 20% of it) chooses the hyper-parameters and the alert threshold; the chosen
configuration is then refitted on the whole training part and evaluated once on the holdout.
"""

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import (
    GBTClassifier,
    LogisticRegression,
    RandomForestClassifier,
)
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fraud_assets.core.contracts import FEATURE_COLUMNS, LABEL_COLUMN
from fraud_assets.core.evaluate import (
    ScoredSlice,
    at_threshold,
    average_precision,
    ranking_metrics,
    scored_slice,
)
from fraud_assets.core.scoring import with_fraud_prob
from fraud_assets.core.selection import (
    POLICIES,
    PolicySettings,
    display_thresholds,
    evaluate_policies,
    recommend,
    threshold_sweep,
)

WEIGHT_COLUMN = "class_weight"

ALGORITHMS: dict[str, str] = {
    "lr": "logistic_regression",
    "rf": "random_forest",
    "gbt": "gradient_boosted_trees",
    "xgb": "xgboost",
}
"""Short name (used in version names and configs) -> the name in metadata and reports."""

PROTOCOLS: tuple[str, ...] = ("time_ordered", "random_80_20")

SPLIT_SEED = 42
"""The reference notebooks' seed for the random 80/20 split."""


@dataclass(frozen=True)
class TrainingConfig:
    """One model configuration: the algorithm, its hyper-parameters and the holdout size.

    Only the fields of the chosen algorithm matter (see :meth:`params`).
    """

    holdout_fraction: float = 0.2
    algorithm: str = "lr"
    class_weighted: bool | None = None
    """Give each class half of the total weight; None: yes for ``lr``, no for trees (trees
    rank frauds well without it and their probabilities stay calibrated)."""
    negative_fraction: float = 1.0
    """Fraction of the legitimate training rows kept (seeded), all frauds always kept.
    Below 1 it makes tree ensembles several times cheaper to fit on 2 cores."""
    max_iter: int = 100
    reg_param: float = 0.0
    elastic_net_param: float = 0.0
    num_trees: int = 100
    rf_max_depth: int = 10
    gbt_max_iter: int = 60
    gbt_max_depth: int = 5
    gbt_step_size: float = 0.1
    xgb_n_estimators: int = 400
    xgb_max_depth: int = 4
    xgb_learning_rate: float = 0.05
    xgb_subsample: float = 0.8
    xgb_colsample_bytree: float = 0.8
    xgb_scale_pos_weight: float = 10.0
    """XGBoost's own class weighting: the gradient of every fraud counts this many times."""
    max_bins: int = 32
    min_instances_per_node: int = 1
    seed: int = SPLIT_SEED

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"unknown algorithm {self.algorithm!r}; choose one of {list(ALGORITHMS)}"
            )
        if not 0.0 < self.negative_fraction <= 1.0:
            raise ValueError(f"negative_fraction must be in (0, 1], got {self.negative_fraction}")

    @property
    def is_class_weighted(self) -> bool:
        return self.algorithm == "lr" if self.class_weighted is None else self.class_weighted

    def params(self) -> dict[str, Any]:
        """The hyper-parameters that shape this algorithm's model (for metadata and reports)."""
        common = {
            "class_weighted": self.is_class_weighted,
            "negative_fraction": self.negative_fraction,
        }
        if self.algorithm == "lr":
            specific = {
                "max_iter": self.max_iter,
                "reg_param": self.reg_param,
                "elastic_net_param": self.elastic_net_param,
            }
        elif self.algorithm == "rf":
            specific = {
                "num_trees": self.num_trees,
                "max_depth": self.rf_max_depth,
                "max_bins": self.max_bins,
                "min_instances_per_node": self.min_instances_per_node,
                "seed": self.seed,
            }
        elif self.algorithm == "xgb":
            specific = {
                "n_estimators": self.xgb_n_estimators,
                "max_depth": self.xgb_max_depth,
                "learning_rate": self.xgb_learning_rate,
                "subsample": self.xgb_subsample,
                "colsample_bytree": self.xgb_colsample_bytree,
                "scale_pos_weight": self.xgb_scale_pos_weight,
                "seed": self.seed,
            }
        else:
            specific = {
                "max_iter": self.gbt_max_iter,
                "max_depth": self.gbt_max_depth,
                "step_size": self.gbt_step_size,
                "max_bins": self.max_bins,
                "min_instances_per_node": self.min_instances_per_node,
                "seed": self.seed,
            }
        return {**specific, **common}


SEARCH_SPACE: dict[str, tuple[dict[str, Any], ...]] = {
    "lr": (
        {"reg_param": 0.0},
        {"reg_param": 0.001},
        {"reg_param": 0.01},
    ),
    "rf": (
        {"num_trees": 100, "rf_max_depth": 10, "negative_fraction": 0.25},
        {"num_trees": 100, "rf_max_depth": 14, "negative_fraction": 0.25},
    ),
    "gbt": (
        {"gbt_max_iter": 60, "gbt_max_depth": 5, "negative_fraction": 0.25},
        {"gbt_max_iter": 100, "gbt_max_depth": 4, "negative_fraction": 0.25},
    ),
    "xgb": (
        {"xgb_scale_pos_weight": 10.0},
        {"xgb_scale_pos_weight": 1.0},
        {
            "xgb_n_estimators": 800,
            "xgb_max_depth": 5,
            "xgb_learning_rate": 0.03,
            "xgb_colsample_bytree": 0.5,
        },
    ),
}
"""The bounded hyper-parameter search of ``fraud-assets models``: 3 + 2 + 2 + 3 candidates
per protocol, each fitted once on the fit slice and scored on the validation slice; the best
(validation AP) is refitted on the whole training part. Budget: 10 + 4 fits per protocol."""


def search_candidates(base: TrainingConfig, budget: int | None = None) -> list[TrainingConfig]:
    """``base`` with each setting of :data:`SEARCH_SPACE` for its algorithm (at most ``budget``)."""
    space = SEARCH_SPACE[base.algorithm][: budget if budget else None]
    return [replace(base, **setting) for setting in space] or [base]


# --- splits ---------------------------------------------------------------------------------


def time_ordered_split(df: DataFrame, holdout_fraction: float) -> tuple[DataFrame, DataFrame]:
    """Earliest ``1 - holdout_fraction`` of rows (by ``row_index``, i.e. ``Time``) to train.

    A random split lets the model see the future; the time-ordered one is what a deployed
    model faces.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    n_rows = df.count()
    n_train = round(n_rows * (1.0 - holdout_fraction))
    if not 0 < n_train < n_rows:
        raise ValueError(
            f"a {holdout_fraction:g} holdout of {n_rows} rows leaves {n_train} rows to train "
            "and the rest to hold out: both need at least one row"
        )
    cutoff = df.select("row_index").orderBy("row_index").limit(n_train).agg(F.max("row_index"))
    cutoff_index = cutoff.first()[0]
    return df.where(F.col("row_index") <= cutoff_index), df.where(F.col("row_index") > cutoff_index)


def random_split(
    df: DataFrame, holdout_fraction: float, seed: int = SPLIT_SEED
) -> tuple[DataFrame, DataFrame]:
    """A seeded random split: a row is held out when a hash of ``row_index`` says so.

    A hash of the row (rather than ``randomSplit``, whose draw depends on partitioning)
    holds out the same rows on every machine and every run.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    bucket = F.pmod(F.xxhash64(F.col("row_index"), F.lit(seed)), F.lit(1_000_000))
    is_holdout = bucket < F.lit(round(holdout_fraction * 1_000_000))
    return df.where(~is_holdout), df.where(is_holdout)


def protocol_split(
    df: DataFrame, protocol: str, holdout_fraction: float, seed: int = SPLIT_SEED
) -> tuple[DataFrame, DataFrame]:
    """``(train, holdout)`` of ``df`` under ``protocol``."""
    if protocol == "time_ordered":
        return time_ordered_split(df, holdout_fraction)
    if protocol == "random_80_20":
        return random_split(df, holdout_fraction, seed)
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")


# --- pipeline -------------------------------------------------------------------------------


def with_class_weight(df: DataFrame) -> DataFrame:
    """Add ``class_weight``: ``n / (2 n_class)`` so both classes weigh the same in total."""
    counts = {
        row[LABEL_COLUMN]: row["n"]
        for row in df.groupBy(LABEL_COLUMN).count().withColumnRenamed("count", "n").collect()
    }
    n = sum(counts.values())
    n_fraud, n_legit = counts.get(1, 0), counts.get(0, 0)
    if n_fraud == 0 or n_legit == 0:
        raise ValueError(f"training data needs both classes, got counts {counts}")
    return df.withColumn(
        WEIGHT_COLUMN,
        F.when(F.col(LABEL_COLUMN) == 1, F.lit(n / (2.0 * n_fraud))).otherwise(
            F.lit(n / (2.0 * n_legit))
        ),
    )


def filter_negative_sample(df: DataFrame, fraction: float, seed: int = SPLIT_SEED) -> DataFrame:
    """Every fraud and a seeded ``fraction`` of the legitimate rows (all rows at 1.0)."""
    if fraction >= 1.0:
        return df
    bucket = F.pmod(F.xxhash64(F.col("row_index"), F.lit(seed + 7)), F.lit(1_000_000))
    return df.where((F.col(LABEL_COLUMN) == 1) | (bucket < F.lit(round(fraction * 1_000_000))))


def _classifier(config: TrainingConfig):
    if config.algorithm == "xgb":
        return _xgboost_classifier(config)
    # probabilityCol and rawPredictionCol keep their defaults ("probability",
    # "rawPrediction"): GBTClassifier's constructor does not accept them.
    common = {
        "featuresCol": "features",
        "labelCol": LABEL_COLUMN,
        "predictionCol": "model_prediction",
    }
    if config.is_class_weighted:
        common["weightCol"] = WEIGHT_COLUMN
    if config.algorithm == "lr":
        return LogisticRegression(
            maxIter=config.max_iter,
            regParam=config.reg_param,
            elasticNetParam=config.elastic_net_param,
            **common,
        )
    tree = {
        "maxBins": config.max_bins,
        "minInstancesPerNode": config.min_instances_per_node,
        "seed": config.seed,
    }
    if config.algorithm == "rf":
        return RandomForestClassifier(
            numTrees=config.num_trees, maxDepth=config.rf_max_depth, **tree, **common
        )
    return GBTClassifier(
        maxIter=config.gbt_max_iter,
        maxDepth=config.gbt_max_depth,
        stepSize=config.gbt_step_size,
        **tree,
        **common,
    )


def _xgboost_classifier(config: TrainingConfig):
    # Imported here: xgboost.spark pulls in scikit-learn, which only training needs; a saved
    # model is loaded by PipelineModel.load from the class name in its metadata.
    from xgboost.spark import SparkXGBClassifier

    return SparkXGBClassifier(
        features_col="features",
        label_col=LABEL_COLUMN,
        prediction_col="model_prediction",
        **({"weight_col": WEIGHT_COLUMN} if config.is_class_weighted else {}),
        # One training task: xgboost's own threads (spark.task.cpus of them) do the work, and
        # the model does not depend on how many workers split the rows.
        num_workers=1,
        n_estimators=config.xgb_n_estimators,
        max_depth=config.xgb_max_depth,
        learning_rate=config.xgb_learning_rate,
        subsample=config.xgb_subsample,
        colsample_bytree=config.xgb_colsample_bytree,
        scale_pos_weight=config.xgb_scale_pos_weight,
        tree_method="hist",
        booster="gbtree",
        random_state=config.seed,
        verbosity=0,
        verbose=False,  # no training-loss line per boosting round in the worker's log
    )


def build_pipeline(config: TrainingConfig) -> Pipeline:
    """The unfitted scoring pipeline: assembler, scaler, classifier."""
    return Pipeline(
        stages=[
            # Inputs are validated (and bad messages dead-lettered) before the model, so a
            # null here is a bug and must fail loudly rather than be skipped or scored NaN.
            VectorAssembler(
                inputCols=list(FEATURE_COLUMNS), outputCol="features_raw", handleInvalid="error"
            ),
            StandardScaler(
                inputCol="features_raw", outputCol="features", withMean=True, withStd=True
            ),
            _classifier(config),
        ]
    )


def fit(train: DataFrame, config: TrainingConfig) -> PipelineModel:
    """Fit the pipeline on ``train`` (which must hold both classes)."""
    rows = filter_negative_sample(train, config.negative_fraction, config.seed)
    if config.is_class_weighted:
        rows = rows.transform(with_class_weight)
    return build_pipeline(config).fit(rows)


def scoring_cost_us_per_row(model: PipelineModel, df: DataFrame, repeats: int = 3) -> float:
    """Core-microseconds per row that computing ``fraud_prob`` adds to reading ``df``.

    ``df`` should be cached. Each variant is timed ``repeats`` times (the best counts: the
    first run pays code generation and JIT warm-up) as a sum over every row, and the time of
    summing a raw feature is subtracted, so what remains is the model's own cost in the
    expression or UDF the stream evaluates too. Multiplied by the cores Spark uses, so the
    figure does not depend on the machine's parallelism.
    """
    rows = df.count()
    if rows == 0:
        raise ValueError("cannot measure scoring cost on an empty DataFrame")

    def best_seconds(column: Column, frame: DataFrame) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            frame.agg(F.sum(column)).first()
            times.append(time.perf_counter() - started)
        return min(times)

    reading = best_seconds(F.col("V1"), df)
    scoring = best_seconds(F.col("fraud_prob"), with_fraud_prob(model, df))
    cores = df.sparkSession.sparkContext.defaultParallelism
    return net_cost_us_per_row(scoring, reading, cores=cores, rows=rows)


def net_cost_us_per_row(
    scoring_seconds: float, reading_seconds: float, *, cores: int, rows: int
) -> float:
    """Core-microseconds per row that scoring adds to reading, from two wall-clock timings.

    Args:
        scoring_seconds: Wall-clock seconds of summing ``fraud_prob`` over every row.
        reading_seconds: Wall-clock seconds of summing a raw feature over the same rows.
        cores: Cores Spark ran both sums on (the wall clock is shared by that many).
        rows: Rows each sum read.

    Returns:
        ``(scoring - reading) * cores * 1e6 / rows``, or 0.0 when timing noise makes the
        scoring sum the faster one (a cost is never negative).
    """
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    return max(scoring_seconds - reading_seconds, 0.0) * cores * 1e6 / rows


# --- one algorithm under one protocol -------------------------------------------------------


@dataclass
class ProtocolRun:
    """One algorithm trained and evaluated under one protocol.

    ``model`` was refitted on the whole training part with ``config``; ``validation`` holds
    the scores of the model fitted without the validation slice (what thresholds are chosen
    on) and ``holdout`` the refitted model's scores on the holdout (what is reported). With
    ``refit`` False, ``model`` is that model fitted without the validation slice itself (one
    fit instead of two), and ``holdout`` holds its scores.
    """

    protocol: str
    config: TrainingConfig
    model: PipelineModel
    validation: ScoredSlice
    holdout: ScoredSlice
    search: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_rows: int = 0
    train_frauds: int = 0
    validation_slice: str = ""
    """How the validation slice was drawn (the protocol's own way unless it lacked frauds)."""
    refit: bool = True

    @property
    def model_rows(self) -> int:
        """Rows ``model`` was fitted on.

        The training part; without ``refit``, the training part less its validation slice.
        """
        return self.train_rows - (0 if self.refit else self.validation.rows)

    @property
    def algorithm(self) -> str:
        return self.config.algorithm


MIN_VALIDATION_FRAUDS = 1
"""Fewest frauds a validation slice needs for thresholds to be chosen on it."""


def train_protocol(
    audited: DataFrame,
    protocol: str,
    candidates: Sequence[TrainingConfig],
    validation_fraction: float = 0.2,
    refit: bool = True,
) -> ProtocolRun:
    """Search ``candidates`` on the validation slice, refit the best, score the holdout.

    Every candidate must be the same algorithm with the same holdout fraction. ``refit``
    False keeps the best candidate as fitted without the validation slice: the thresholds
    are then chosen on scores of the very model that is saved, for one fit less (about 15 s
    of the logistic regression's 40 on the full data on 2 cores).
    """
    if not candidates:
        raise ValueError("no candidate configuration to train")
    first = candidates[0]
    started = time.monotonic()
    train, holdout = protocol_split(audited, protocol, first.holdout_fraction, first.seed)
    train = train.cache()
    fit_part, validation_part = protocol_split(train, protocol, validation_fraction, first.seed + 1)
    validation_slice = protocol
    if validation_part.where(F.col(LABEL_COLUMN) == 1).count() < MIN_VALIDATION_FRAUDS:
        # Thresholds are chosen by precision/recall on this slice: without frauds in it no
        # policy can be evaluated. A sample whose frauds cluster in time (a test subset, a
        # quiet period) gets a seeded random slice of the same training rows instead; the
        # holdout, and so every reported figure, is unchanged.
        fit_part, validation_part = random_split(train, validation_fraction, first.seed + 1)
        validation_slice = "random_80_20 (the time-ordered slice had no fraud)"
    fit_part, validation_part = fit_part.cache(), validation_part.cache()
    try:
        search, best = [], None
        for config in candidates:
            candidate_started = time.monotonic()
            fitted = fit(fit_part, config)
            scores = scored_slice(fitted, validation_part)
            ap = average_precision(scores.labels, scores.scores)
            search.append(
                {
                    "params": config.params(),
                    "validation_average_precision": ap,
                    "seconds": round(time.monotonic() - candidate_started, 1),
                }
            )
            if best is None or ap > best[0]:
                best = (ap, config, scores, fitted)
        _, config, validation, fitted = best
        model = fit(train, config) if refit else fitted
        holdout_scores = scored_slice(model, holdout)
        counts = train.agg(F.count(F.lit(1)), F.sum(LABEL_COLUMN)).first()
        train_rows = int(counts[0])
        # Daily alert budgets apply to the whole stream: a randomly sampled slice holds only
        # part of each day's transactions (see ScoredSlice.stream_share).
        train_share = 1.0
        if protocol == "random_80_20":
            train_share = train_rows / (train_rows + holdout_scores.rows)
            holdout_scores = replace(
                holdout_scores,
                stream_share=holdout_scores.rows / (train_rows + holdout_scores.rows),
            )
        if protocol == "random_80_20" or validation_slice != protocol:
            validation = replace(
                validation, stream_share=train_share * validation.rows / max(train_rows, 1)
            )
    finally:
        for df in (train, fit_part, validation_part):
            df.unpersist()
    return ProtocolRun(
        protocol=protocol,
        config=config,
        model=model,
        validation=validation,
        holdout=holdout_scores,
        search=search,
        train_seconds=round(time.monotonic() - started, 1),
        train_rows=train_rows,
        train_frauds=int(counts[1] or 0),
        validation_slice=validation_slice,
        refit=refit,
    )


def folder_fingerprint(folder: Path, pattern: str = "*.parquet") -> str:
    """SHA-256 over a table folder's files (names and bytes), for lineage."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob(pattern)):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def config_dict(config: TrainingConfig) -> dict[str, Any]:
    """Every field of ``config`` (what ``TrainingConfig(**d)`` rebuilds)."""
    return asdict(config)


# --- reports --------------------------------------------------------------------------------


def run_report(
    run: ProtocolRun, settings: PolicySettings, policy: str = "max_f1", resamples: int = 1000
) -> dict[str, Any]:
    """Everything worth keeping about ``run``, as JSON-ready values.

    ``policies`` has one row per threshold policy (chosen on validation, measured on both
    slices); ``recommended`` is ``policy``'s row measured on the holdout, or None with a
    ``recommended_error`` when that policy cannot be met.
    """
    holdout = ranking_metrics(run.holdout, settings.alerts_per_day, resamples=resamples)
    choices = evaluate_policies(run.validation, settings)
    policies = []
    for name in POLICIES:
        choice = choices[name]
        row: dict[str, Any] = {"policy": name, "met": choice is not None}
        if choice is not None:
            measured = at_threshold(run.holdout, choice.threshold)
            row.update(
                threshold=choice.threshold,
                validation_precision=choice.precision,
                validation_recall=choice.recall,
                validation_alerts=choice.alerts,
                holdout_precision=measured.precision,
                holdout_recall=measured.recall,
                holdout_alerts=measured.alerts,
                expected_cost=choice.expected_cost,
            )
        policies.append(row)
    recommended, error = None, None
    try:
        choice = recommend(choices, policy)
        measured = at_threshold(run.holdout, choice.threshold)
        p, r = measured.precision, measured.recall
        recommended = {
            "threshold": choice.threshold,
            "policy": choice.policy,
            "precision": p,
            "recall": r,
            "f1": 2 * p * r / (p + r) if measured.tp else 0.0,
            "alerts": measured.alerts,
            "validation_precision": choice.precision,
            "validation_recall": choice.recall,
        }
    except ValueError as failure:
        error = str(failure)
    sweep = threshold_sweep(run.holdout, display_thresholds(run.holdout.scores))
    return {
        "model": run.algorithm,
        "algorithm": ALGORITHMS[run.algorithm],
        "protocol": run.protocol,
        "params": run.config.params(),
        "config": config_dict(run.config),
        "search": run.search,
        "train_seconds": run.train_seconds,
        "train_rows": run.train_rows,
        "train_frauds": run.train_frauds,
        "refit": run.refit,
        "model_rows": run.model_rows,
        "holdout": holdout.as_dict(),
        "validation": {
            "average_precision": average_precision(run.validation.labels, run.validation.scores),
            "rows": run.validation.rows,
            "slice": run.validation_slice,
            "frauds": run.validation.frauds,
            "days": round(run.validation.days, 4),
        },
        "policy_settings": asdict(settings),
        "policies": policies,
        "recommended": recommended,
        "recommended_error": error,
        "holdout_sweep": json.loads(sweep.to_json(orient="records")),
    }


def comparison_entry(report: dict[str, Any]) -> dict[str, Any]:
    """One row of ``comparison.json`` (model x protocol) from a :func:`run_report`."""
    holdout, recommended = report["holdout"], report["recommended"] or {}
    return {
        "model": report["model"],
        "protocol": report["protocol"],
        "average_precision": holdout["average_precision"],
        "ap_formula": holdout["ap_formula"],
        "ap_trapezoid": holdout["ap_trapezoid"],
        "ap_ci_low": holdout["ap_ci_low"],
        "ap_ci_high": holdout["ap_ci_high"],
        "roc_auc": holdout["roc_auc"],
        "threshold": recommended.get("threshold"),
        "policy": recommended.get("policy"),
        "precision": recommended.get("precision"),
        "recall": recommended.get("recall"),
        "precision_at_budget": holdout["precision_at_budget"],
        "alerts_per_day": holdout["alerts_per_day"],
        "validation_average_precision": report["validation"]["average_precision"],
        "train_seconds": report["train_seconds"],
    }
