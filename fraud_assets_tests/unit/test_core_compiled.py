"""Logistic regression compiled to one built-in expression agrees with Spark ML's transform."""

import math

import pytest
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from fraud_assets.core.compiled import compiled_fraud_probability
from fraud_assets.core.scoring import with_fraud_prob
from fraud_assets.core.train import TrainingConfig, fit
from fraud_assets_tests.factories import audited_df, separable_model, separable_transactions
from fraud_assets_tests.unit.test_core_explain import FEATURES, constructed_lr


def spark_ml_probabilities(model, df) -> dict[str, float]:
    scored = model.transform(df).select(
        "transaction_id", vector_to_array("probability").getItem(1).alias("p")
    )
    return {r["transaction_id"]: r["p"] for r in scored.collect()}


def compiled_probabilities(model, df) -> dict[str, float]:
    scored = with_fraud_prob(model, df).select("transaction_id", "fraud_prob")
    return {r["transaction_id"]: r["fraud_prob"] for r in scored.collect()}


def test_fitted_lr_matches_spark_ml_to_the_last_bits(spark):
    model = separable_model(spark)
    df = audited_df(spark, separable_transactions(200))
    expected = spark_ml_probabilities(model, df)
    got = compiled_probabilities(model, df)
    assert got.keys() == expected.keys()
    worst = max(abs(got[k] - expected[k]) for k in expected)
    assert worst <= 1e-12, worst
    # Graded probabilities, so the comparison is not between saturated 0s and 1s.
    assert len({round(p, 6) for p in expected.values()}) > 20


def test_compiled_plan_has_no_vector_stages(spark):
    model = separable_model(spark)
    df = audited_df(spark, separable_transactions(20))
    plan = with_fraud_prob(model, df)._jdf.queryExecution().optimizedPlan().toString()
    assert compiled_fraud_probability(model) is not None
    assert "vector" not in plan.lower() and "UDF" not in plan


def test_constructed_lr_closed_form(spark):
    """Centred scaler, a zero-std feature and a known intercept: P = sigmoid(b + w·z)."""
    coefficients = [0.5, -1.0, 2.0, 0.0, 3.0]
    means, stds = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 0.5, 1.0, 1.0, 0.0]
    model = constructed_lr(spark, coefficients, -1.5, means, stds)
    row = {"transaction_id": "x", "a": 3.0, "b": 1.0, "c": 4.0, "d": 9.0, "e": 7.0}
    df = spark.createDataFrame(
        [row], "transaction_id string, " + ", ".join(f"{f} double" for f in FEATURES)
    )
    margin = -1.5 + sum(
        w * ((row[f] - m) * (0.0 if s == 0 else 1.0 / s))
        for f, w, m, s in zip(FEATURES, coefficients, means, stds, strict=True)
    )
    got = compiled_probabilities(model, df)["x"]
    assert got == pytest.approx(1.0 / (1.0 + math.exp(-margin)), abs=1e-15)
    assert got == pytest.approx(spark_ml_probabilities(model, df)["x"], abs=1e-12)


def test_trees_are_scored_by_spark_ml(spark):
    training = audited_df(spark, separable_transactions(200))
    model = fit(training, TrainingConfig(algorithm="rf", num_trees=5, rf_max_depth=3))
    assert compiled_fraud_probability(model) is None
    assert compiled_probabilities(model, training) == spark_ml_probabilities(model, training)


def test_null_feature_gives_null_probability(spark):
    model = separable_model(spark)
    rows = separable_transactions(2)
    rows[1]["V2"] = None
    df = audited_df(spark, rows).withColumn("V2", F.col("V2"))
    got = compiled_probabilities(model, df)
    assert got["0"] is not None and got["1"] is None
