"""A fitted logistic-regression pipeline as one built-in Spark expression.

Spark ML scores a row of ``[VectorAssembler, StandardScalerModel, LogisticRegressionModel]``
by building a feature vector, scaling it into a second vector and applying the classifier,
each stage through JVM functions that allocate vectors per row: about 23 core-µs per row on
this machine, more than parsing the JSON message. For logistic regression the whole pipeline
is the closed form

    P(fraud) = 1 / (1 + exp(-(b + sum_i w_i * (x_i - shift_i) * scale_i)))

(``shift`` the scaler's mean when it centres, else 0; ``scale`` ``1 / std``, 0 for a constant
feature), written here as one arithmetic expression over the raw feature columns: whole-stage
code-generated, no vectors, no UDF, and a small plan for every micro-batch.

It equals Spark ML's probability up to the order of the floating-point sum (Spark's BLAS dot
product adds in another order): the difference is in the last bits (tested to 1e-12). Every
scorer of fraud_assets (training evaluation, threshold selection, batch scoring, the stream,
real-time mode) goes through :func:`fraud_assets.core.scoring.with_fraud_prob`, so they all
evaluate this same expression and agree bit for bit. A feature that is null gives a null
probability (Spark ML's assembler would fail the job); validated messages never have one.

Random forests and gradient-boosted trees stay on Spark ML's own ``transform``.
"""

import weakref

from pyspark.ml import PipelineModel
from pyspark.ml.classification import LogisticRegressionModel
from pyspark.sql import Column
from pyspark.sql import functions as F

from fraud_assets.core.explain import (
    UnexplainableModelError,
    contribution_columns,
    feature_weights,
)

_CACHE: "weakref.WeakKeyDictionary[PipelineModel, Column | None]" = weakref.WeakKeyDictionary()


def _intercept(classifier: LogisticRegressionModel) -> float:
    """The log-odds of class 1 at the origin (binomial, or a two-class multinomial)."""
    vector = classifier.interceptVector.toArray()
    return float(vector[0] if len(vector) == 1 else vector[1] - vector[0])


def _build(model: PipelineModel) -> Column | None:
    stages = list(model.stages)
    if len(stages) != 3 or not isinstance(stages[2], LogisticRegressionModel):
        return None
    try:
        weights = feature_weights(model)
    except UnexplainableModelError:
        return None
    # The log-odds is the intercept plus the per-feature contributions the explanations
    # list (features with no weight or no spread in training contribute exactly 0).
    margin = F.lit(_intercept(stages[2]))
    for contribution in contribution_columns(weights).values():
        margin = margin + contribution
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-margin))


def compiled_fraud_probability(model: PipelineModel) -> Column | None:
    """P(fraud) of ``model`` as one expression over the raw features; None if not compilable.

    Only a two-class ``[VectorAssembler, StandardScalerModel, LogisticRegressionModel]`` is
    compiled. The expression is built once per model object (building it costs a few
    hundred JVM calls) and reused for every micro-batch.
    """
    if model not in _CACHE:
        _CACHE[model] = _build(model)
    return _CACHE[model]
