"""XGBoost (xgboost.spark) models: scored by XGBoost's own predictor, saved, explained.

The scores must be what XGBoost's C++ predictor gives for the features as the fitted scaler
standardizes them; the plan must run it on Arrow batches, never row-at-a-time Python.
"""

import numpy as np
import pytest
import xgboost as xgb
from pyspark.ml import PipelineModel

from fraud_assets.core.compiled import compiled_fraud_probability
from fraud_assets.core.contracts import FEATURE_COLUMNS
from fraud_assets.core.realtime import RealtimeSetupError, start_realtime_alert_query
from fraud_assets.core.registry import Promotion
from fraud_assets.core.scoring import with_fraud_prob
from fraud_assets.core.settings import KafkaSettings
from fraud_assets_tests.factories import audited_df, separable_transactions, xgboost_model


def scores(model, df) -> dict[str, float]:
    scored = with_fraud_prob(model, df).select("transaction_id", "fraud_prob").collect()
    return {r["transaction_id"]: r["fraud_prob"] for r in scored}


def test_scores_are_xgboosts_own_prediction_of_the_standardized_features(spark):
    model = xgboost_model(spark)
    rows = separable_transactions(400)
    got = scores(model, audited_df(spark, rows))

    _, scaler, classifier = model.stages
    mean, std = scaler.mean.toArray(), scaler.std.toArray()
    raw = np.array([[row[name] for name in FEATURE_COLUMNS] for row in rows])
    standardized = (raw - mean) * np.where(std == 0, 0.0, 1.0 / np.where(std == 0, 1.0, std))
    expected = classifier.get_booster().predict(xgb.DMatrix(standardized))

    assert [got[row["transaction_id"]] for row in rows] == pytest.approx(expected, abs=1e-6)
    assert len({round(p, 4) for p in got.values()}) > 10  # graded, not saturated 0/1
    frauds = [got[str(i)] for i in range(0, 400, 10)]
    legit = sorted(got[str(i)] for i in range(400) if i % 10)
    assert min(frauds) > legit[len(legit) // 2]


def test_scoring_runs_on_arrow_batches_not_row_at_a_time_python(spark):
    model = xgboost_model(spark)
    df = audited_df(spark, separable_transactions(20))
    plan = with_fraud_prob(model, df)._jdf.queryExecution().executedPlan().toString()
    assert compiled_fraud_probability(model) is None
    assert "ArrowEvalPython" in plan
    assert "BatchEvalPython" not in plan


def test_a_saved_model_loads_and_scores_the_same(spark, tmp_path):
    model = xgboost_model(spark)
    model.write().save(str(tmp_path / "model"))
    loaded = PipelineModel.load(str(tmp_path / "model"))
    df = audited_df(spark, separable_transactions(100))
    assert scores(loaded, df) == scores(model, df)


def test_real_time_mode_refuses_xgboost_before_starting(spark, tmp_path):
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # never reached
    promotion = Promotion("xgb-20260101T000000Z", 0.5, "max_f1", "")
    with pytest.raises(RealtimeSetupError, match="real-time mode runs no Python UDF"):
        start_realtime_alert_query(spark, kafka, tmp_path / "cp", xgboost_model(spark), promotion)
    assert not spark.streams.active
    assert not (tmp_path / "cp").exists()  # refused before its checkpoint is touched
