"""Audits of the live stream: an alert digest for people and an hourly sink reconciliation."""

import json

import dagster as dg

from fraud_assets.core import digest, quality
from fraud_assets.core.reconcile import kafka_alert_ids, parquet_alert_ids
from fraud_assets.core.registry import write_json_atomic
from fraud_assets.defs.metadata import table
from fraud_assets.defs.resources import KafkaResource, ProjectResource, SparkResource
from fraud_assets.defs.stream import alerts_table, kpi_table
from fraud_assets.kafka.io import read_topic

DIGEST_TOP = 10
"""Rows in each digest table."""

IN_FLIGHT_GRACE_SECONDS = 900.0
"""How long a committed alert batch may take to reach Kafka before it counts as lost."""

SAMPLE_IDS = 50
"""Ids listed in the audit metadata for each kind of difference."""

KAFKA_READ_TIMEOUT_SECONDS = 120.0


@dg.asset(
    group_name="audits",
    kinds={"pandas", "json"},
    deps=[alerts_table],
    description=(
        "The alerts so far at a glance: how many, the latest and the largest, and precision "
        "so far (share of labelled alerts whose transaction was a fraud, Class == 1); "
        "written to alert_digest.json."
    ),
)
def alert_digest(project: ProjectResource) -> dg.MaterializeResult:
    summary = digest.alert_digest(project.stream_paths.alerts_table, top=DIGEST_TOP)
    target = project.table("alert_digest.json")
    write_json_atomic(
        target,
        {
            "alerts": summary.alerts,
            "distinct_transactions": summary.distinct_transactions,
            "labelled": summary.labelled,
            "true_frauds": summary.true_frauds,
            "precision_so_far": summary.precision_so_far,
            "latest_scored_at": summary.latest_scored_at,
            "by_model_version": summary.by_model_version,
            # pandas' JSON writer turns NaN into null and timestamps into ISO-8601.
            "latest": json.loads(summary.latest.to_json(orient="records", date_format="iso")),
            "largest": json.loads(summary.largest.to_json(orient="records", date_format="iso")),
        },
    )
    precision = summary.precision_so_far
    return dg.MaterializeResult(
        # The tables first: what an analyst reads first (the UI keeps this order).
        metadata={
            "latest_alerts": table(summary.latest),
            "largest_amounts": table(summary.largest),
            "dagster/row_count": summary.alerts,
            "alerts": summary.alerts,
            "distinct_transactions": summary.distinct_transactions,
            "labelled_alerts": summary.labelled,
            "true_frauds": summary.true_frauds,
            # NaN would be a float the UI cannot plot; no labelled alert yet reads as null.
            "precision_so_far": dg.MetadataValue.float(precision)
            if precision is not None
            else dg.MetadataValue.null(),
            "latest_scored_at": summary.latest_scored_at or "",
            "alerts_by_model_version": dg.MetadataValue.json(summary.by_model_version),
            "path": dg.MetadataValue.path(str(target)),
        }
    )


alert_digest_job = dg.define_asset_job(
    "refresh_alert_digest",
    selection=[alert_digest],
    description="Rebuild alert_digest from the Parquet alerts table.",
)


@dg.asset(
    group_name="audits",
    kinds={"spark", "kafka"},
    deps=[alerts_table],
    check_specs=[
        dg.AssetCheckSpec(
            "alerts_reached_kafka",
            asset="alerts_audit",
            description="Every alert committed to Parquet is in Kafka fraud_alerts (recent "
            "batches may still be producing and are excused), and Kafka holds only "
            "contract alerts keyed by transaction_id.",
        ),
        dg.AssetCheckSpec(
            "kafka_alerts_in_parquet",
            asset="alerts_audit",
            description="Every alert in Kafka fraud_alerts is in the Parquet alerts table "
            "(a warning: older topic contents are possible).",
        ),
    ],
    description=(
        "Kafka fraud_alerts reconciled against the Parquet alerts table: distinct "
        "transaction ids on both sides and the ids found on one side only."
    ),
)
def alerts_audit(project: ProjectResource, spark: SparkResource, kafka: KafkaResource):
    settings = kafka.settings
    paths = project.stream_paths
    session = spark.session()
    records = read_topic(settings, settings.topics.alerts, timeout_s=KAFKA_READ_TIMEOUT_SECONDS)
    kafka_ids: list[str] = []
    malformed = 0
    for record in records:
        try:
            kafka_ids.extend(kafka_alert_ids([record.value], [record.key]))
        except ValueError:
            malformed += 1
    # Kafka is read first: a batch committed after that read shows as in flight or, once
    # logged, as missing; reading Parquet second keeps the window as short as possible.
    parquet_ids = parquet_alert_ids(session, paths.alerts_table)
    in_flight = digest.in_flight_batches(
        paths.alerts_table, paths.batch_log_dir, IN_FLIGHT_GRACE_SECONDS
    )
    audit = digest.audit_alert_sinks(
        parquet_ids,
        kafka_ids,
        in_flight_ids=digest.alert_ids_in_batches(session, paths.alerts_table, in_flight),
        malformed_kafka_records=malformed,
    )
    counts = {
        "parquet_rows": audit.parquet_rows,
        "parquet_distinct_ids": audit.parquet_distinct,
        "kafka_records": audit.kafka_records,
        "kafka_distinct_ids": audit.kafka_distinct,
    }
    yield dg.MaterializeResult(
        metadata={
            **counts,
            "malformed_kafka_records": audit.malformed_kafka_records,
            "missing_from_kafka": len(audit.missing_from_kafka),
            "in_flight": len(audit.in_flight),
            "in_flight_batches": dg.MetadataValue.json(in_flight),
            "kafka_only": len(audit.kafka_only),
            "missing_from_kafka_ids": dg.MetadataValue.json(audit.missing_from_kafka[:SAMPLE_IDS]),
            "kafka_only_ids": dg.MetadataValue.json(audit.kafka_only[:SAMPLE_IDS]),
            "alerts_topic": settings.topics.alerts,
            "alerts_table": dg.MetadataValue.path(str(paths.alerts_table)),
        }
    )
    yield dg.AssetCheckResult(
        check_name="alerts_reached_kafka",
        passed=audit.kafka_complete,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            **counts,
            "missing_from_kafka": len(audit.missing_from_kafka),
            "malformed_kafka_records": audit.malformed_kafka_records,
            "in_flight": len(audit.in_flight),
            "missing_ids": dg.MetadataValue.json(audit.missing_from_kafka[:SAMPLE_IDS]),
        },
    )
    yield dg.AssetCheckResult(
        check_name="kafka_alerts_in_parquet",
        passed=audit.parquet_complete,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **counts,
            "kafka_only": len(audit.kafka_only),
            "kafka_only_ids": dg.MetadataValue.json(audit.kafka_only[:SAMPLE_IDS]),
        },
    )


alerts_audit_job = dg.define_asset_job(
    "audit_alerts",
    selection=dg.AssetSelection.assets(
        "alerts_audit", "live_quality", "feature_drift", "challenger_comparison"
    ),
    description="Reconcile Kafka fraud_alerts with the Parquet alerts table, measure live "
    "quality, KPI freshness and drift from the training data, compare a challenger scored in "
    "shadow with the champion (and run their checks).",
)

alerts_audit_schedule = dg.ScheduleDefinition(
    name="hourly_alerts_audit",
    job=alerts_audit_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour: reconcile the two alert sinks, check KPI freshness, live quality "
    "and drift.",
)


KPI_MAX_EVENT_LAG_SECONDS = 2 * 60.0
"""Two 1-minute windows behind the newest closable window: the KPI query is falling behind."""

KPI_MAX_COMMIT_LAG_SECONDS = 15 * 60.0
QUALITY_TOLERANCE = 0.15
"""How far live precision/recall may fall below the offline holdout figures."""


@dg.asset(
    group_name="audits",
    kinds={"spark", "json"},
    deps=[alerts_table, kpi_table],
    description=(
        "Live precision and recall of the stream's alerts on labelled transactions, against "
        "the promoted model's offline holdout figures, and how far the KPI table lags."
    ),
)
def live_quality(project: ProjectResource, spark: SparkResource) -> dg.MaterializeResult:
    measured = quality.live_quality(spark.session(), project.stream_paths)
    summary_path = project.paths.models_dir / "model_selection_summary.json"
    offline = json.loads(summary_path.read_text())["recommended"] if summary_path.is_file() else {}
    report = {"live": measured.as_dict(), "offline": offline}
    write_json_atomic(project.table("live_quality.json"), report)
    return dg.MaterializeResult(
        metadata={
            "live_precision": measured.precision,
            "live_recall": measured.recall,
            "offline_precision": offline.get("precision"),
            "offline_recall": offline.get("recall"),
            "labelled_transactions": measured.labelled,
            "kpi_event_lag_seconds": measured.kpi_event_lag_seconds,
            "kpi_commit_lag_seconds": measured.kpi_commit_lag_seconds,
            "report": dg.MetadataValue.json(report),
        }
    )


def _live_report(project: ProjectResource) -> dict:
    return json.loads(project.table("live_quality.json").read_text())


@dg.asset_check(
    asset=live_quality,
    description="The KPI table keeps up: its newest window is at most two windows behind the "
    "newest window the watermark can close, and committed within 15 minutes of the newest "
    "scored batch.",
)
def kpis_are_fresh(project: ProjectResource) -> dg.AssetCheckResult:
    live = _live_report(project)["live"]
    event_lag, commit_lag = live["kpi_event_lag_seconds"], live["kpi_commit_lag_seconds"]
    passed = (
        event_lag is not None
        and event_lag <= KPI_MAX_EVENT_LAG_SECONDS
        and commit_lag is not None
        and commit_lag <= KPI_MAX_COMMIT_LAG_SECONDS
    )
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "kpi_event_lag_seconds": event_lag,
            "kpi_commit_lag_seconds": commit_lag,
            "newest_event_time": live["newest_event_time"],
            "newest_kpi_window_end": live["newest_kpi_window_end"],
        },
    )


@dg.asset_check(
    asset=live_quality,
    description=f"Live precision and recall are no more than {QUALITY_TOLERANCE} below the "
    "promoted model's offline holdout figures.",
)
def live_quality_matches_offline(project: ProjectResource) -> dg.AssetCheckResult:
    report = _live_report(project)
    live, offline = report["live"], report["offline"]
    gaps = {
        name: (offline.get(name) or 0.0) - (live[name] if live[name] is not None else 0.0)
        for name in ("precision", "recall")
    }
    passed = bool(offline) and all(gap <= QUALITY_TOLERANCE for gap in gaps.values())
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **{f"{k}_shortfall": round(v, 4) for k, v in gaps.items()},
            "labelled": live["labelled"],
        },
    )
