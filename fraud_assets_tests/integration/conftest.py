"""Fixtures of the stream integration tests: a real-data subset and a model trained on it."""

from datetime import timedelta

import pytest

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, EVENT_TIME_BASE
from fraud_assets.core.registry import Promotion
from fraud_assets.core.train import TrainingConfig, fit
from fraud_assets_tests.real_data import distinct_transactions, write_real_subset


@pytest.fixture(scope="session")
def real_rows(tmp_path_factory, repo_paths):
    folder = tmp_path_factory.mktemp("real")
    subset = distinct_transactions(
        write_real_subset(repo_paths.dataset_csv, folder / "subset.csv", first_rows=2000)
    )
    subset = subset.assign(
        transaction_id=subset["row_index"].astype(str),
        event_time=[EVENT_TIME_BASE + timedelta(seconds=float(t)) for t in subset["Time"]],
    )
    return subset[list(AUDITED_TRANSACTIONS_SCHEMA.fieldNames())].reset_index(drop=True)


@pytest.fixture(scope="session")
def model_and_promotion(spark, real_rows):
    frame = spark.createDataFrame(real_rows, schema=AUDITED_TRANSACTIONS_SCHEMA)
    model = fit(frame, TrainingConfig(max_iter=30))
    return model, Promotion("test-lr", 0.5, "fixed", "2026-01-01T00:00:00+00:00")
