"""The foundation's promise on real data: the stream's alerts are exactly batch scoring's."""

import json
import uuid

import dagster as dg
import pytest

from fraud_assets.core.settings import Topics
from fraud_assets.demo import EndToEndOptions, run_end_to_end
from fraud_assets.kafka.io import read_topic
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.real_data import distinct_transactions, write_real_subset

pytestmark = pytest.mark.integration


def test_stream_alerts_equal_batch_alerts_on_real_transactions(
    kafka_broker, spark, repo_paths, tmp_path
):
    subset = write_real_subset(repo_paths.dataset_csv, tmp_path / "subset.csv", first_rows=3000)
    distinct = distinct_transactions(subset)
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        transactions=f"transactions-{suffix}",
        alerts=f"fraud_alerts-{suffix}",
        dead_letter=f"transactions_dlq-{suffix}",
        kpis=f"fraud_kpis-{suffix}",
    )

    summary = run_end_to_end(
        EndToEndOptions(
            home=REPO_ROOT,
            state_dir=tmp_path / "state",
            dataset_csv=tmp_path / "subset.csv",
            dataset_sha256="",
            bootstrap_servers=kafka_broker.bootstrap_servers,
            topics=topics,
            progress=False,
            # Every fraud of the dataset in a few thousand rows: ~14% frauds.
            project_overrides=(("fraud_rate_max", 0.5),),
        ),
        dg.DagsterInstance.ephemeral(),
    )

    # Expectations computed here, independently of the pipeline's own counting.
    assert summary["transactions_produced"] == len(distinct)
    assert summary["transactions_scored"] == len(distinct)
    assert summary["transactions_rejected"] == 0
    assert summary["true_frauds"] == int(distinct["Class"].sum()) == 473
    assert summary["alerts_expected"] > 0
    assert summary["missing_alerts"] == 0, summary["missing_ids"]
    assert summary["unexpected_alerts"] == 0, summary["unexpected_ids"]
    assert summary["duplicate_alerts_parquet"] == 0
    assert (
        summary["alerts_parquet"] == summary["alerts_kafka_distinct"] == summary["alerts_expected"]
    )
    assert summary["success"] is True

    alerts = read_topic(kafka_broker.bootstrap_servers, topics.alerts)
    payloads = [json.loads(record.value) for record in alerts]
    known_ids = {str(i) for i in distinct["row_index"]}
    assert {p["transaction_id"] for p in payloads} <= known_ids
    for record, payload in zip(alerts, payloads, strict=True):
        assert record.key.decode() == payload["transaction_id"]
        assert payload["alert_id"] == f"{payload['model_version']}:{payload['transaction_id']}"
        assert payload["fraud_prob"] >= payload["threshold"] == summary["threshold"]
        assert payload["is_alert"] is True and payload["prediction"] == 1
    assert read_topic(kafka_broker.bootstrap_servers, topics.dead_letter) == []
    # KPIs: every window the final watermark closed was streamed once, equal to batch.
    assert summary["kpi_windows_closed"] > 0
    assert summary["kpi_windows_streamed"] == summary["kpi_windows_closed"]
    assert summary["kpi_windows_missing"] == 0
    assert summary["kpi_windows_mismatched"] == 0, summary["mismatched_windows"]
    assert summary["kpi_windows_duplicated"] == 0
    assert summary["kpis_exact"] is True
    kpi_records = read_topic(kafka_broker.bootstrap_servers, topics.kpis)
    assert len(kpi_records) == summary["kpi_windows_streamed"]
    assert sum(json.loads(r.value)["n_txn"] for r in kpi_records) == summary["kpi_txn_streamed"]
