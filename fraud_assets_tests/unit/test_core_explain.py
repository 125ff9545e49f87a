"""Per-alert explanations: exact LR contributions, the tree approximation, the alert field."""

import json
import math

import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.classification import LogisticRegressionModel, RandomForestClassifier
from pyspark.ml.common import _py2java
from pyspark.ml.feature import StandardScaler, StandardScalerModel, VectorAssembler
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F

from fraud_assets.core.contracts import ALERT_SCHEMA, FEATURE_COLUMNS, field_names
from fraud_assets.core.explain import (
    LINEAR,
    TREE_APPROXIMATION,
    UnexplainableModelError,
    contribution_columns,
    feature_weights,
    top_features,
)
from fraud_assets.core.scoring import alert_kafka_records, alerts, score_with_features
from fraud_assets.core.train import with_class_weight
from fraud_assets_tests.factories import (
    audited_df,
    separable_model,
    separable_transactions,
    xgboost_model,
)

FEATURES = ("a", "b", "c", "d", "e")


def constructed_lr(
    spark,
    coefficients,
    intercept,
    means,
    stds,
    *,
    with_mean=True,
    features=FEATURES,
) -> PipelineModel:
    """``[VectorAssembler, StandardScalerModel, LogisticRegressionModel]`` with given numbers."""
    sc = spark.sparkContext
    jvm = spark._jvm
    scaler = StandardScalerModel(
        jvm.org.apache.spark.ml.feature.StandardScalerModel(
            "scaler_test", _py2java(sc, Vectors.dense(stds)), _py2java(sc, Vectors.dense(means))
        )
    )
    scaler._set(withMean=with_mean, withStd=True, inputCol="raw", outputCol="features")
    classifier = LogisticRegressionModel(
        jvm.org.apache.spark.ml.classification.LogisticRegressionModel(
            "lr_test", _py2java(sc, Vectors.dense(coefficients)), float(intercept)
        )
    )
    classifier._set(featuresCol="features")
    assembler = VectorAssembler(inputCols=list(features), outputCol="raw")
    return PipelineModel([assembler, scaler, classifier])


def explain_rows(spark, model, rows, features=FEATURES):
    df = spark.createDataFrame(rows, ", ".join(f"{name} double" for name in features))
    return [
        [(entry["feature"], entry["contribution"]) for entry in row["top"]]
        for row in df.select(top_features(model).alias("top")).collect()
    ]


def test_lr_contribution_is_coefficient_times_standardized_value(spark):
    # z = (x - mean) / std: a=(3-1)/2=1, b=(6-1)/4=1.25, c=(11-10)/1=1, d=(0-0)/1=0,
    # e=(5-1)/8=0.5. Contributions: 2*1, -4*1.25, 0.5*1, 3*0, 1*0.5.
    model = constructed_lr(
        spark,
        coefficients=[2.0, -4.0, 0.5, 3.0, 1.0],
        intercept=0.25,
        means=[1.0, 1.0, 10.0, 0.0, 1.0],
        stds=[2.0, 4.0, 1.0, 1.0, 8.0],
    )
    [top] = explain_rows(spark, model, [(3.0, 6.0, 11.0, 0.0, 5.0)])
    # The largest |contribution| first, whatever its sign; ties (c and e: 0.5) by name.
    assert top == [("b", -5.0), ("a", 2.0), ("c", 0.5)]
    weights = feature_weights(model)
    assert weights.method == LINEAR
    assert weights.scales == (0.5, 0.25, 1.0, 1.0, 0.125)


def test_lr_contributions_add_up_to_the_models_log_odds(spark):
    model = constructed_lr(
        spark,
        coefficients=[2.0, -4.0, 0.5, 3.0, 1.0],
        intercept=0.25,
        means=[1.0, 1.0, 10.0, 0.0, 1.0],
        stds=[2.0, 4.0, 1.0, 1.0, 8.0],
    )
    rows = [(3.0, 6.0, 11.0, 0.0, 5.0), (-1.0, 0.5, 9.0, 2.0, -7.0)]
    df = spark.createDataFrame(rows, ", ".join(f"{name} double" for name in FEATURES))
    total = sum(contribution_columns(feature_weights(model)).values())
    scored = model.transform(df.withColumn("total", total)).collect()
    for row in scored:
        p = row["probability"][1]
        assert 0.25 + row["total"] == pytest.approx(math.log(p / (1 - p)), abs=1e-9)


def test_unused_and_constant_features_are_never_listed(spark):
    # c has a zero coefficient, d was constant in training (std 0: the scaler outputs 0).
    model = constructed_lr(
        spark,
        coefficients=[1.0, 1.0, 0.0, 5.0, 1.0],
        intercept=0.0,
        means=[0.0] * 5,
        stds=[1.0, 1.0, 1.0, 0.0, 1.0],
    )
    [top] = explain_rows(spark, model, [(1.0, -3.0, 100.0, 100.0, 2.0)])
    assert top == [("b", -3.0), ("e", 2.0), ("a", 1.0)]

    only_two = constructed_lr(spark, [1.0, 0.0, 0.0, 0.0, 2.0], 0.0, [0.0] * 5, [1.0] * 5)
    [top] = explain_rows(spark, only_two, [(1.0, 9.0, 9.0, 9.0, 1.0)])
    assert top == [("e", 2.0), ("a", 1.0)]


def test_without_mean_centering_the_value_is_only_scaled(spark):
    model = constructed_lr(
        spark, [1.0, 1.0, 1.0, 1.0, 1.0], 0.0, [100.0] * 5, [2.0] * 5, with_mean=False
    )
    [top] = explain_rows(spark, model, [(8.0, 6.0, 4.0, 2.0, -10.0)])
    assert top == [("e", -5.0), ("a", 4.0), ("b", 3.0)]


def test_the_trained_lr_explains_with_the_contract_features(spark):
    weights = feature_weights(separable_model(spark))
    assert weights.features == FEATURE_COLUMNS
    assert weights.method == LINEAR
    # The separable data's signal is V1: it is the largest coefficient.
    assert max(zip(weights.weights, weights.features, strict=True))[1] == "V1"


def test_trees_use_importance_times_absolute_standardized_value(spark):
    training = audited_df(spark, separable_transactions(200)).transform(with_class_weight)
    assembled = VectorAssembler(inputCols=list(FEATURE_COLUMNS), outputCol="raw")
    scaler = StandardScaler(inputCol="raw", outputCol="features", withMean=True, withStd=True).fit(
        assembled.transform(training)
    )
    forest = RandomForestClassifier(
        featuresCol="features", labelCol="Class", numTrees=3, maxDepth=2, seed=7
    ).fit(scaler.transform(assembled.transform(training)))
    model = PipelineModel([assembled, scaler, forest])
    weights = feature_weights(model)
    assert weights.method == TREE_APPROXIMATION
    importances = dict(zip(FEATURE_COLUMNS, forest.featureImportances.toArray(), strict=True))
    means = dict(zip(FEATURE_COLUMNS, scaler.mean.toArray(), strict=True))
    stds = dict(zip(FEATURE_COLUMNS, scaler.std.toArray(), strict=True))

    row = separable_transactions(1)[0]
    df = audited_df(spark, [row])
    [result] = df.select(top_features(model).alias("top")).collect()
    got = [(entry["feature"], entry["contribution"]) for entry in result["top"]]
    expected = sorted(
        (
            (name, importances[name] * abs((row[name] - means[name]) / stds[name]))
            for name in FEATURE_COLUMNS
            if importances[name] > 0 and stds[name] > 0
        ),
        key=lambda item: (-abs(item[1]), item[0]),
    )[:3]
    assert [name for name, _ in got] == [name for name, _ in expected]
    assert [value for _, value in got] == pytest.approx([value for _, value in expected])
    assert all(value >= 0 for _, value in got)


def test_xgboost_uses_total_gain_importance(spark):
    model = xgboost_model(spark)
    weights = feature_weights(model)
    assert weights.method == TREE_APPROXIMATION
    gains = model.stages[2].get_booster().get_score(importance_type="total_gain")
    total = sum(gains.values())
    expected = [gains.get(f"f{i}", 0.0) / total for i in range(len(FEATURE_COLUMNS))]
    assert weights.weights == pytest.approx(expected)
    assert sum(weights.weights) == pytest.approx(1.0)
    # The separable data's signal is V1: the trees gain the most from splitting on it.
    assert max(zip(weights.weights, weights.features, strict=True))[1] == "V1"
    [result] = (
        audited_df(spark, separable_transactions(1))
        .select(top_features(model).alias("top"))
        .collect()
    )
    assert 1 <= len(result["top"]) <= 3 and all(e["contribution"] >= 0 for e in result["top"])


def test_a_model_with_other_stages_is_refused(spark):
    assembler = VectorAssembler(inputCols=["a"], outputCol="raw")
    with pytest.raises(UnexplainableModelError, match="expected"):
        feature_weights(PipelineModel([assembler]))


def test_alerts_carry_their_top_three_features_in_parquet_and_kafka_json(spark):
    model = separable_model(spark)
    transactions = audited_df(spark, separable_transactions(40))
    scored = score_with_features(model, transactions, 0.5, "lr-test")
    alert_rows = alerts(scored, F.current_timestamp(), top_features(model)).cache()
    rows = alert_rows.collect()
    assert alert_rows.columns == field_names(ALERT_SCHEMA)
    assert rows, "the separable model alerts on its frauds"
    for row in rows:
        top = row["top_features"]
        assert len(top) == 3
        magnitudes = [abs(entry["contribution"]) for entry in top]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert top[0]["feature"] == "V1"  # the signal of the separable data pushes to fraud
        assert top[0]["contribution"] > 0
    for record in alert_kafka_records(alert_rows).collect():
        payload = json.loads(record["value"])
        assert [set(entry) for entry in payload["top_features"]] == [
            {"feature", "contribution"}
        ] * 3
    alert_rows.unpersist()


def test_alerts_without_an_explanation_carry_null(spark):
    model = separable_model(spark)
    scored = score_with_features(model, audited_df(spark, separable_transactions(1)), 0.5, "v")
    [row] = alerts(scored, F.current_timestamp()).collect()
    assert row["top_features"] is None
