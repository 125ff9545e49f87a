"""Per-alert explanations: the three features that pushed a transaction's score the most.

Every promoted model is a ``PipelineModel`` of ``[VectorAssembler, StandardScalerModel,
classifier]``. The explanation is built once per model version as a Spark expression over the
raw feature columns, from the numbers of the fitted stages (no Python UDF): each feature's
standardized value ``z = (x - shift) * scale`` exactly as the fitted scaler computes it
(``shift`` is the mean when ``withMean``, else 0; ``scale`` is ``1 / std`` when ``withStd``,
0 for a constant feature, else 1), times a per-feature weight.

- **Logistic regression**: ``contribution = coefficient * z``. This is exact: the model's
  log-odds of fraud is ``intercept + sum(contributions)``, so a positive contribution pushes
  toward fraud and the three largest ``|contribution|`` are the features that moved this
  score the most.
- **Random forest / gradient-boosted trees / XGBoost**: ``contribution = importance * |z|``,
  with Spark ML's ``featureImportances`` (mean impurity decrease, normalised to sum to 1) or
  XGBoost's ``total_gain`` importance (the loss reduction of every split on the feature,
  normalised the same way). This is an approximation: a tree's effect is not linear in a
  feature and depends on the others, so there is no per-feature term to read off. Global
  importance says how much the model relies on a feature, ``|z|`` how far this transaction's
  value sits from the training mean in standard deviations; their product ranks the features
  the model relies on *and* that are unusual here. It is non-negative (the direction is not
  known) and the contributions do not add up to the score. Exact per-row attributions for
  trees (TreeSHAP, Saabas paths) would need the tree structure evaluated per row; this keeps
  the cost of a handful of multiplications on alert rows only.

Features whose weight is zero (unused by the model) or whose training values were constant
are never listed, so an alert can carry fewer than three entries.
"""

from dataclasses import dataclass

from pyspark.ml import PipelineModel
from pyspark.ml.classification import (
    DecisionTreeClassificationModel,
    GBTClassificationModel,
    LogisticRegressionModel,
    RandomForestClassificationModel,
)
from pyspark.ml.feature import StandardScalerModel, VectorAssembler
from pyspark.sql import Column
from pyspark.sql import functions as F

TOP_K = 3
"""How many features an alert carries."""

LINEAR = "coefficient_x_standardized_value"
TREE_APPROXIMATION = "importance_x_abs_standardized_value"

_TREE_MODELS = (
    RandomForestClassificationModel,
    GBTClassificationModel,
    DecisionTreeClassificationModel,
)


class UnexplainableModelError(ValueError):
    """The model is not ``[VectorAssembler, StandardScalerModel, LR | RF | GBT | XGBoost]``."""


def is_xgboost(stage) -> bool:
    """Whether ``stage`` is a fitted model of ``xgboost.spark`` (without importing xgboost)."""
    return type(stage).__module__.startswith("xgboost.spark") and hasattr(stage, "get_booster")


def _xgboost_importances(classifier, n: int) -> list[float]:
    """Total gain per feature (``f0``, ``f1``, ... in assembler order), summing to 1."""
    gains = classifier.get_booster().get_score(importance_type="total_gain")
    total = sum(gains.values())
    return [gains.get(f"f{i}", 0.0) / total if total else 0.0 for i in range(n)]


@dataclass(frozen=True)
class FeatureWeights:
    """The numbers an explanation is built from, one entry per feature (in pipeline order)."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    """LR: the coefficient (log-odds of fraud per standard deviation); trees: the importance."""
    shifts: tuple[float, ...]
    scales: tuple[float, ...]
    method: str
    """:data:`LINEAR` (exact) or :data:`TREE_APPROXIMATION`."""


def feature_weights(model: PipelineModel) -> FeatureWeights:
    """Read the scaler and classifier numbers of a fitted scoring pipeline.

    Raises:
        UnexplainableModelError: the stages are not the agreed three.
    """
    stages = list(model.stages)
    if len(stages) != 3:
        raise UnexplainableModelError(
            f"expected [VectorAssembler, StandardScalerModel, classifier], got {stages}"
        )
    assembler, scaler, classifier = stages
    if not isinstance(assembler, VectorAssembler) or not isinstance(scaler, StandardScalerModel):
        raise UnexplainableModelError(
            f"expected VectorAssembler then StandardScalerModel, got {assembler}, {scaler}"
        )
    features = tuple(assembler.getInputCols())
    n = len(features)
    shifts = tuple(scaler.mean.toArray()) if scaler.getWithMean() else (0.0,) * n
    scales = (
        tuple(0.0 if s == 0 else 1.0 / s for s in scaler.std.toArray())
        if scaler.getWithStd()
        else (1.0,) * n
    )
    if isinstance(classifier, LogisticRegressionModel):
        if classifier.numClasses != 2:
            raise UnexplainableModelError("only a two-class logistic regression is explained")
        matrix = classifier.coefficientMatrix.toArray()
        # Binomial: one row, the log-odds of class 1. Multinomial with two classes: the
        # log-odds of class 1 against class 0 is the difference of the two rows.
        weights = matrix[0] if matrix.shape[0] == 1 else matrix[1] - matrix[0]
        method = LINEAR
    elif isinstance(classifier, _TREE_MODELS):
        weights = classifier.featureImportances.toArray()
        method = TREE_APPROXIMATION
    elif is_xgboost(classifier):
        weights = _xgboost_importances(classifier, n)
        method = TREE_APPROXIMATION
    else:
        raise UnexplainableModelError(f"no explanation for {type(classifier).__name__}")
    if len(weights) != n:
        raise UnexplainableModelError(f"{len(weights)} weights for {n} assembled features")
    return FeatureWeights(
        features=features,
        weights=tuple(float(w) for w in weights),
        shifts=tuple(float(s) for s in shifts),
        scales=tuple(float(s) for s in scales),
        method=method,
    )


def contribution_columns(weights: FeatureWeights) -> dict[str, Column]:
    """Each used feature's contribution, as a Spark expression over the raw feature column."""
    columns = {}
    for name, weight, shift, scale in zip(
        weights.features, weights.weights, weights.shifts, weights.scales, strict=True
    ):
        if weight == 0.0 or scale == 0.0:
            continue  # unused or constant in training: it cannot explain anything
        standardized = (F.col(name) - F.lit(shift)) * F.lit(scale)
        if weights.method == TREE_APPROXIMATION:
            standardized = F.abs(standardized)
        columns[name] = F.lit(weight) * standardized
    return columns


def top_features(model: PipelineModel, k: int = TOP_K) -> Column:
    """``array<struct<feature, contribution>>``: the ``k`` largest ``|contribution|`` first.

    Ties are broken by feature name. Evaluate it on alert rows only (it reads the raw
    feature columns, which must be present).
    """
    contributions = contribution_columns(feature_weights(model))
    if not contributions:
        return F.array().cast("array<struct<feature:string,contribution:double>>")
    # Sorting structs orders by their first field, then the next: (-|c|, name) puts the
    # largest magnitude first and makes ties deterministic.
    entries = F.array(
        *[
            F.struct(
                (-F.abs(value)).alias("rank"),
                F.lit(name).alias("feature"),
                value.alias("contribution"),
            )
            for name, value in contributions.items()
        ]
    )
    top = F.slice(F.sort_array(entries), 1, k)
    return F.transform(
        top,
        lambda entry: F.struct(
            entry["feature"].alias("feature"), entry["contribution"].alias("contribution")
        ),
    )
