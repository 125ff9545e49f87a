"""The code location loads, with exactly the objects we expect (guards every refactor)."""

import os
import subprocess
import sys

import dagster as dg

from fraud_assets.definitions import defs
from fraud_assets_tests.conftest import REPO_ROOT

EXPECTED_ASSETS = {
    "raw_transactions",
    "audited_transactions",
    "fraud_model",
    "model_selection",
    "promoted_model",
    "alerts",
    "quarantine",
    "kpis",
    "alert_digest",
    "alerts_audit",
    "live_quality",
    "challenger_comparison",
    "feature_drift",
}
EXPECTED_CHECKS = {
    ("live_quality", "kpis_are_fresh"),
    ("live_quality", "live_quality_matches_offline"),
    ("audited_transactions", "audited_has_no_duplicates"),
    ("audited_transactions", "audited_has_no_missing_values"),
    ("audited_transactions", "audited_fraud_rate_in_band"),
    ("model_selection", "model_quality_gate"),
    ("alerts_audit", "alerts_reached_kafka"),
    ("alerts_audit", "kafka_alerts_in_parquet"),
    ("feature_drift", "no_significant_drift"),
}


def load() -> dg.Definitions:
    return dg.Definitions.merge(defs())


def test_asset_keys_jobs_and_checks():
    definitions = load()
    graph = definitions.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == EXPECTED_ASSETS
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert checks == EXPECTED_CHECKS
    jobs = {job.name for job in definitions.resolve_all_job_defs()}
    assert {"train_and_promote", "scoring_stream"} <= jobs
    # Operator jobs: change the threshold or the promoted version of a running stream.
    assert {"set_alert_threshold", "promote_model_version"} <= jobs
    # ... and name, clear or promote a challenger scored in shadow.
    assert {"name_challenger", "clear_challenger", "promote_challenger"} <= jobs


def test_sensors_and_schedules_supervise_and_audit_the_stream():
    definitions = load()
    names = {sensor.name for sensor in definitions.sensors}
    assert names == {"stream_supervisor", "alert_digest_sensor", "model_retraining"}
    sensors = {name: definitions.resolve_sensor_def(name) for name in names}
    running = dg.DefaultSensorStatus.RUNNING
    assert all(sensor.default_status == running for sensor in sensors.values())
    assert sensors["stream_supervisor"].job_name == "scoring_stream"
    # A first promotion, and new alerts, are acted on within seconds (the live system's
    # two-minute start counts on it).
    assert sensors["stream_supervisor"].minimum_interval_seconds <= 5
    assert sensors["alert_digest_sensor"].minimum_interval_seconds <= 5
    assert sensors["alert_digest_sensor"].asset_key == dg.AssetKey("alerts")
    # Declarative automation of the model assets (weekly and after drift), running by default.
    retraining = sensors["model_retraining"]
    assert isinstance(retraining, dg.AutomationConditionSensorDefinition)
    targeted = retraining.asset_selection.resolve(definitions.resolve_asset_graph())
    assert {key.to_user_string() for key in targeted} == {
        "fraud_model",
        "model_selection",
        "promoted_model",
    }
    [schedule] = [definitions.resolve_schedule_def(s.name) for s in definitions.schedules]
    assert schedule.name == "hourly_alerts_audit"
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.job_name == "audit_alerts"
    audit_job = definitions.resolve_job_def("audit_alerts")
    assert {k.to_user_string() for k in audit_job.asset_layer.selected_asset_keys} == {
        "alerts_audit",
        "live_quality",
        "feature_drift",
        "challenger_comparison",
    }
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    jobs = {job.name for job in definitions.resolve_all_job_defs()}
    assert {"audit_alerts", "refresh_alert_digest"} <= jobs


GATES = {"audited_transactions", "model_selection"}
"""Data-quality and promotion gates block downstream assets; live audits only report."""


def test_quality_gates_are_blocking_and_live_audits_are_not():
    definitions = load()
    specs = [spec for checks_def in definitions.asset_checks for spec in checks_def.check_specs]
    assert specs
    for spec in specs:
        assert spec.blocking == (spec.asset_key.to_user_string() in GATES), spec.key


def test_flow_dependencies():
    graph = load().resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("audited_transactions") == {"raw_transactions"}
    assert parents("fraud_model") == {"audited_transactions"}
    assert parents("model_selection") == {"fraud_model"}
    assert parents("promoted_model") == {"model_selection"}
    assert parents("alerts") == {"promoted_model"}
    assert parents("feature_drift") == {"promoted_model"}


def test_only_the_model_assets_are_automated():
    graph = load().resolve_asset_graph()
    automated = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).automation_condition is not None
    }
    assert automated == {"fraud_model", "model_selection", "promoted_model"}


def test_stream_job_is_tagged_for_the_concurrency_limit():
    job = load().resolve_job_def("scoring_stream")
    assert job.tags.get("fraud_assets/stream") == "scoring"


def test_dagster_cli_validates_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fraud_assets" in result.stdout + result.stderr


TABLE_SCHEMAS = {
    "raw_transactions": "RAW_TRANSACTIONS_SCHEMA",
    "audited_transactions": "AUDITED_TRANSACTIONS_SCHEMA",
    "alerts": "ALERTS_TABLE_SCHEMA",
    "kpis": "KPI_TABLE_SCHEMA",
    "quarantine": "QUARANTINE_TABLE_SCHEMA",
}
"""Every table asset and the named Spark schema its column schema must follow."""


def test_every_table_asset_declares_its_contract_columns():
    from fraud_assets.core import contracts

    graph = load().resolve_asset_graph()
    for name, schema_name in TABLE_SCHEMAS.items():
        declared = graph.get(dg.AssetKey(name)).metadata["dagster/column_schema"]
        declared = getattr(declared, "schema", declared)  # the value, or its TableSchema
        schema = getattr(contracts, schema_name)
        assert [c.name for c in declared.columns] == schema.fieldNames(), name
        nullable = {c.name: c.constraints.nullable for c in declared.columns}
        assert nullable == {f.name: f.nullable for f in schema.fields}, name


def test_alerts_and_kpis_have_dagster_freshness_policies():
    graph = load().resolve_asset_graph()
    alerts = graph.get(dg.AssetKey("alerts")).freshness_policy
    kpis = graph.get(dg.AssetKey("kpis")).freshness_policy
    assert alerts.fail_window.to_timedelta().total_seconds() == 300
    assert alerts.warn_window.to_timedelta().total_seconds() == 120
    assert kpis.fail_window.to_timedelta().total_seconds() == 900
    assert graph.get(dg.AssetKey("quarantine")).freshness_policy is None
