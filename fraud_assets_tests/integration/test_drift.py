"""The drift audit on the real broker: live transactions against the model's training data.

Real transactions of the training period go through Kafka ``transactions`` twice: as they
are (no drift), then with every amount scaled (drift). The audit reads them back with
Spark's Kafka source, validates and scores them as the stream does, and compares them with
the promoted model's training rows, recorded by the model's metadata (the audited table
minus its time-ordered holdout).
"""

import dagster as dg
import pytest

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, FEATURE_COLUMNS
from fraud_assets.core.tables import write_parquet_atomic
from fraud_assets.core.train import folder_fingerprint
from fraud_assets.defs.drift import DRIFT_CHECK, feature_drift
from fraud_assets.defs.resources import (
    DriftResource,
    KafkaResource,
    ProjectResource,
    SparkResource,
)
from fraud_assets.kafka.io import produce_messages
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.integration.streams import messages

pytestmark = pytest.mark.integration

VERSION = "lr-20260101T000000Z"
AMOUNT_SCALE = 4.0
"""The injected drift: every live amount four times what it was."""


def run_audit(project, kafka_broker, topic):
    result = dg.materialize(
        [feature_drift],
        resources={
            "project": project,
            "spark": SparkResource(home=str(REPO_ROOT)),
            "kafka": KafkaResource(
                bootstrap_servers=kafka_broker.bootstrap_servers, transactions_topic=topic
            ),
            "drift": DriftResource(min_live_rows=500),
        },
        raise_on_error=False,
    )
    assert result.success, result.all_events
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == DRIFT_CHECK
    [materialization] = result.asset_materializations_for_node("feature_drift")
    return check, materialization.metadata


def psi_by_feature(metadata) -> dict[str, float]:
    return {row.data["feature"]: row.data["psi"] for row in metadata["psi_by_feature"].records}


def test_drift_check_passes_on_real_traffic_and_fails_when_amounts_are_scaled(
    spark, kafka_broker, unique_topics, tmp_path, real_rows, model_and_promotion
):
    project = ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path))
    audited = project.table("audited_transactions")
    write_parquet_atomic(spark.createDataFrame(real_rows, AUDITED_TRANSACTIONS_SCHEMA), audited)
    model, _ = model_and_promotion
    registry = project.registry
    registry.save(
        VERSION,
        model,
        {
            "features": list(FEATURE_COLUMNS),
            "training": {"holdout_fraction": 0.2},
            "training_data_sha256": folder_fingerprint(audited),
        },
    )
    registry.promote(VERSION, threshold=0.5, policy="fixed", pr_auc=None)

    # Live traffic like the training data: every other transaction of the training period
    # (the subset's later rows are mostly frauds, a shift of their own), and a message the
    # stream would reject, which the audit leaves out too.
    training_period = real_rows.sort_values("row_index").head(round(len(real_rows) * 0.8))
    live = training_period.iloc[::2]
    steady = unique_topics(partitions=2, prefix="tx")
    produce_messages(
        kafka_broker.bootstrap_servers, steady, [*messages(live), (b"bad", b"{not json")]
    )
    check, metadata = run_audit(project, kafka_broker, steady)
    steady_psi = psi_by_feature(metadata)
    print("steady PSI", {k: round(v, 4) for k, v in steady_psi.items()})
    assert check.passed, steady_psi
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert metadata["live_rows"].value == len(live)
    assert max(steady_psi.values()) < 0.2
    assert set(steady_psi) == {*FEATURE_COLUMNS, "fraud_prob"}
    assert metadata["reference"].value["matches_training_data"]
    assert not metadata["reference"].value["reused"]
    assert metadata["drift_plot"].value.startswith("![")

    # The same transactions with every amount scaled: Amount shifts, and with it the score.
    drifted = unique_topics(partitions=2, prefix="tx")
    scaled = live.assign(Amount=live["Amount"] * AMOUNT_SCALE)
    produce_messages(kafka_broker.bootstrap_servers, drifted, messages(scaled))
    check, metadata = run_audit(project, kafka_broker, drifted)
    drifted_psi = psi_by_feature(metadata)
    print("drifted PSI", {k: round(v, 4) for k, v in drifted_psi.items()})
    assert not check.passed, drifted_psi
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert metadata["max_psi_feature"].value == "Amount"
    assert drifted_psi["Amount"] > 0.5
    assert "Amount" in check.metadata["shifted_features"].value
    # Only Amount was touched: the PCA components stay where they were.
    assert all(drifted_psi[f"V{i}"] == pytest.approx(steady_psi[f"V{i}"]) for i in range(1, 29))
    # The training-data summary is computed once per promoted version.
    assert metadata["reference"].value["reused"]

    # Too few live transactions to tell: the check passes and says it measured nothing, so
    # a quiet topic never triggers retraining (these drifted rows would fail it otherwise).
    quiet = unique_topics(partitions=2, prefix="tx")
    produce_messages(kafka_broker.bootstrap_servers, quiet, messages(scaled.head(50)))
    check, metadata = run_audit(project, kafka_broker, quiet)
    assert check.passed
    assert check.metadata["measured"].value is False
    assert metadata["live_rows"].value == 50
    assert metadata["max_psi"].value > 0.2
