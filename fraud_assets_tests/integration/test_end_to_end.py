"""The foundation's promise on real data: the stream's alerts are exactly batch scoring's."""

import json
import uuid

import dagster as dg
import pytest

from fraud_assets.core.settings import Topics
from fraud_assets.end_to_end import EndToEndOptions, run_end_to_end
from fraud_assets.kafka.io import read_topic
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.real_data import distinct_transactions, write_real_subset

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("delivery", ["microbatch", "realtime"])
def test_stream_alerts_equal_batch_alerts_on_real_transactions(
    kafka_broker, spark, repo_paths, tmp_path, delivery
):
    subset = write_real_subset(repo_paths.dataset_csv, tmp_path / "subset.csv", first_rows=3000)
    distinct = distinct_transactions(subset)
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        transactions=f"transactions-{suffix}",
        alerts=f"fraud_alerts-{suffix}",
        dead_letter=f"transactions_dlq-{suffix}",
        kpis=f"fraud_kpis-{suffix}",
        kpi_partials=f"fraud_kpi_partials-{suffix}",
    )

    instance = dg.DagsterInstance.ephemeral()
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
            alert_delivery=delivery,
            # Real time holds a task slot per partition: the session's local[2] has one
            # for it and one for the micro-batch queries.
            transactions_partitions=1 if delivery == "realtime" else None,
        ),
        instance,
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
    assert summary["alert_delivery"] == delivery
    assert summary["alerts_kafka_payload_mismatches"] == 0
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

    # The stream reported itself to Dagster while it ran: progress and the Kafka lag (0 at
    # the end of a bounded run).
    materialization = instance.fetch_materializations(dg.AssetKey("alerts"), limit=1).records[0]
    progress = materialization.asset_materialization.metadata
    assert progress["scored_total"].value == summary["transactions_scored"]
    assert progress["alerts_total"].value == summary["alerts_expected"]
    assert progress["processed_rows_per_second"].value > 0
    observation = instance.fetch_observations(dg.AssetKey("alerts"), limit=1).records[0]
    assert observation.asset_observation.metadata["kafka_lag"].value == 0

    # The hourly audit's live-quality asset agrees with the alerts and finds the KPIs fresh.
    from fraud_assets.defs.audits import kpis_are_fresh, live_quality, live_quality_matches_offline
    from fraud_assets.defs.resources import ProjectResource, build_resources

    result = dg.materialize(
        [live_quality, kpis_are_fresh, live_quality_matches_offline],
        resources={
            **build_resources(),
            "project": ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path / "state")),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"kpis_are_fresh": True, "live_quality_matches_offline": True}
    metadata = result.asset_materializations_for_node("live_quality")[0].metadata
    labelled_alerts = [p for p in payloads if p["Class"] is not None]
    true_alerts = sum(p["Class"] == 1 for p in labelled_alerts)
    assert metadata["live_precision"].value == pytest.approx(true_alerts / len(labelled_alerts))
    assert metadata["live_recall"].value == pytest.approx(
        summary["true_frauds_alerted"] / summary["true_frauds"]
    )

    kpi_view = instance.fetch_materializations(dg.AssetKey("kpis"), limit=1).records[0]
    kpi_meta = kpi_view.asset_materialization.metadata
    assert kpi_meta["windows_total"].value == summary["kpi_windows_streamed"]
    assert kpi_meta["n_txn"].value == summary["kpi_txn_streamed"]
