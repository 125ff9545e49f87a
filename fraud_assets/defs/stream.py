"""Stream: the scoring job (Kafka -> alerts) and the tables it maintains.

The alert and quarantine tables are written by a long-running streaming op, not by an
asset function, so they are declared as asset specs; the op records their
materializations while it runs.
"""

import time
from datetime import timedelta

import dagster as dg
from pyspark.sql import SparkSession

from fraud_assets.core.contracts import (
    ALERTS_TABLE_SCHEMA,
    KPI_TABLE_SCHEMA,
    QUARANTINE_TABLE_SCHEMA,
)
from fraud_assets.core.kpis import KpiSettings, kpi_overview
from fraud_assets.core.monitoring import HealthHistory, kpi_history, parquet_rows
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.plots import kpi_timeseries_png, stream_health_png
from fraud_assets.core.queries import kafka_lag, stream_rates
from fraud_assets.core.realtime import RealtimeSettings
from fraud_assets.core.registry import check_compatible
from fraud_assets.core.spark import require_connector_jars
from fraud_assets.core.stream import ScoringBatchWriter, StreamSettings, StreamTotals
from fraud_assets.core.stream_run import RunSettings, ScoringRun
from fraud_assets.defs.metadata import column_schema, png, table
from fraud_assets.defs.resources import (
    KafkaResource,
    ProjectResource,
    SparkResource,
    StreamResource,
)
from fraud_assets.defs.selection import promoted_model
from fraud_assets.interrupts import interrupts_deferred
from fraud_assets.kafka.admin import check_broker_reachable

STREAM_TAG = "fraud_assets/stream"
"""Run tag limited to one concurrent run in dagster.yaml: at most one scoring stream."""

# Dagster's freshness policies, evaluated by the daemon and shown on each asset: a running
# stream records `alerts` every report (30 s) and `kpis` whenever windows closed meanwhile
# (docs/operations.md, "Freshness").
ALERTS_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=5), warn_window=timedelta(minutes=2)
)
KPIS_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=5)
)

alerts_table = dg.AssetSpec(
    "alerts",
    group_name="stream",
    kinds={"spark", "parquet", "kafka"},
    deps=[promoted_model],
    description=(
        "One row per transaction scored at or above the promoted threshold (Parquet, "
        "partitioned by micro-batch; also produced to Kafka fraud_alerts, keyed by "
        "transaction_id)."
    ),
    metadata={"dagster/column_schema": column_schema(ALERTS_TABLE_SCHEMA)},
    freshness_policy=ALERTS_FRESHNESS,
)

kpi_table = dg.AssetSpec(
    "kpis",
    group_name="stream",
    kinds={"spark", "parquet", "kafka"},
    deps=[promoted_model],
    description=(
        "One row per 1-minute event-time window, emitted once the watermark passes it: "
        "transactions, alerts, true frauds, TP/FP/FN, precision, recall, rejected messages "
        "(also produced to Kafka fraud_kpis)."
    ),
    metadata={"dagster/column_schema": column_schema(KPI_TABLE_SCHEMA)},
    freshness_policy=KPIS_FRESHNESS,
)

quarantine_table = dg.AssetSpec(
    "quarantine",
    group_name="stream",
    kinds={"spark", "parquet", "kafka"},
    deps=[promoted_model],
    description="Messages rejected before scoring, with the reason and their Kafka origin "
    "(also produced to transactions_dlq).",
    metadata={"dagster/column_schema": column_schema(QUARANTINE_TABLE_SCHEMA)},
)


class ScoringStreamConfig(dg.Config):
    """How long and how fast the scoring stream runs."""

    bounded: bool = False
    """True: process every message available at start, then stop (demos, tests, backfills)."""
    trigger_interval: str = "1 second"
    max_offsets_per_trigger: int = StreamSettings.max_offsets_per_trigger
    early_alerts_max_messages: int = StreamSettings.early_alerts_max_messages
    """Micro-batches of at most this many messages send their alerts before their ledger is
    written (one Spark job before an alert is out instead of two; 0: never)."""
    report_every_seconds: float = 30.0
    """How often the op records materializations of the tables while it runs."""
    watermark_delay: str = KpiSettings.watermark_delay
    """How late (in event time) a transaction may arrive and still count in its KPI window."""
    alert_delivery: str = ""
    """``microbatch`` or ``realtime``; empty: the deployment's (``FRAUD_ALERT_DELIVERY``)."""


def _materializations(
    paths: StreamPaths,
    totals: StreamTotals,
    since_batches: int,
    progress: dict | None,
    health: HealthHistory,
    lag: int | None,
) -> list[dg.AssetMaterialization]:
    """The alerts and quarantine tables as they are now, with the stream's health.

    The numbers are also plotted over materializations by Dagster itself (the asset's
    Plots tab); ``stream_health`` plots every micro-batch of this run.
    """
    new = totals.history[since_batches:]
    last = totals.last_batch
    common = {
        "batches_total": totals.batches,
        "last_batch_id": last.batch_id if last else -1,
        "last_batch_duration_ms": last.duration_ms if last else 0,
        "model_version": last.model_version if last else "",
        "threshold": last.threshold if last else 0.0,
        **stream_rates(progress),
    }
    return [
        dg.AssetMaterialization(
            asset_key=alerts_table.key,
            metadata={
                **common,
                "dagster/row_count": parquet_rows(paths.alerts_table),
                "kafka_lag": dg.MetadataValue.null() if lag is None else lag,
                "stream_health": png(stream_health_png(health.frame()), "stream health"),
                "new_alerts": sum(b.alerts for b in new),
                "new_scored": sum(b.scored for b in new),
                "alerts_total": totals.alerts,
                "scored_total": totals.scored,
            },
        ),
        dg.AssetMaterialization(
            asset_key=quarantine_table.key,
            metadata={
                **common,
                "dagster/row_count": parquet_rows(paths.quarantine_table),
                "new_rejected": sum(b.invalid for b in new),
                "rejected_total": totals.invalid,
            },
        ),
    ]


def _kpi_materialization(
    session: SparkSession, paths: StreamPaths, windows_this_run: int
) -> dg.AssetMaterialization:
    """The KPI table at a glance: totals, overall precision/recall, a plot, the newest windows."""
    overview, newest = kpi_overview(session, paths.kpi_table)
    plot = kpi_timeseries_png(kpi_history(session, paths.kpi_table), "KPI windows (newest 360)")
    return dg.AssetMaterialization(
        asset_key=kpi_table.key,
        metadata={
            "dagster/row_count": overview["windows_total"],
            "kpi_plot": png(plot, "KPI windows"),
            "windows_emitted_this_run": windows_this_run,
            **overview,
            "newest_windows": table(newest.round(4)),
        },
    )


@dg.op(
    description="Run the scoring stream until stopped (or, bounded, until the backlog is done): "
    "the micro-batch scoring and KPI queries, and with real-time delivery the real-time alert "
    "query."
)
def run_scoring_stream(
    context: dg.OpExecutionContext,
    config: ScoringStreamConfig,
    project: ProjectResource,
    kafka: KafkaResource,
    spark: SparkResource,
    stream: StreamResource,
) -> dg.Output[dict]:
    settings = RunSettings(
        bounded=config.bounded,
        delivery=config.alert_delivery or stream.alert_delivery,
        stream=StreamSettings(
            trigger_interval=config.trigger_interval,
            max_offsets_per_trigger=config.max_offsets_per_trigger,
            early_alerts_max_messages=config.early_alerts_max_messages,
        ),
        kpi=KpiSettings(
            watermark_delay=config.watermark_delay, trigger_interval=stream.kpi_trigger_interval
        ),
        realtime=RealtimeSettings(checkpoint_interval=stream.realtime_checkpoint_interval),
    )
    kafka_settings = kafka.settings
    check_broker_reachable(kafka_settings)
    require_connector_jars(project.paths.spark_jars_dir)
    registry = project.registry
    promotion = registry.require_promoted()
    check_compatible(registry.metadata(promotion.version))
    # The session first: loading a PipelineModel needs an active Spark session, and a run
    # launched by the daemon starts in a fresh process that has none yet. Real-time delivery
    # holds a task slot per partition of transactions for the life of the run.
    reserved = kafka_settings.transactions_partitions if settings.is_realtime else 0
    session = spark.session(reserved_task_slots=reserved)
    model = registry.load(promotion.version)
    # With the registry, every micro-batch follows the promotion pointer: a threshold change or
    # a newly promoted model applies from the next micro-batch, without a restart.
    paths = project.stream_paths
    writer = ScoringBatchWriter(
        session,
        kafka_settings,
        paths,
        model,
        promotion,
        registry=registry,
        delivers_alerts=not settings.is_realtime,
        early_alerts_max_messages=settings.stream.early_alerts_max_messages,
    )
    run = ScoringRun(session, kafka_settings, paths, writer, settings, registry=registry)
    context.log.info(
        f"scoring with {promotion.version} at threshold {promotion.threshold} "
        f"from {kafka_settings.describe()} ({'bounded' if config.bounded else 'unbounded'}, "
        f"{settings.delivery} alert delivery)"
    )
    reported = 0
    last_report = time.monotonic()
    kpi_windows_reported = 0
    health = HealthHistory()

    def report() -> None:
        # A stop requested meanwhile lands after the report, not inside one of its Spark calls.
        with interrupts_deferred():
            _report()

    def _report() -> None:
        nonlocal reported, last_report, kpi_windows_reported
        progress = run.scoring.lastProgress if run.scoring is not None else None
        if run.scoring is not None:
            health.add(run.scoring.recentProgress)
        try:
            lag = kafka_lag(progress, kafka_settings)
        except Exception as error:  # observability must never stop the stream
            context.log.warning(f"could not read Kafka lag: {error}")
            lag = None
        if writer.totals.batches > reported:
            total_lag = sum(lag.values()) if lag is not None else None
            for event in _materializations(
                paths, writer.totals, reported, progress, health, total_lag
            ):
                context.log_event(event)
            reported = writer.totals.batches
        if lag is not None:
            context.log_event(
                dg.AssetObservation(
                    asset_key=alerts_table.key,
                    metadata={"kafka_lag": sum(lag.values()), "kafka_lag_by_partition": lag},
                )
            )
        kpi_writer = run.kpi_writer
        if kpi_writer is not None and kpi_writer.windows > kpi_windows_reported:
            context.log_event(_kpi_materialization(session, paths, kpi_writer.windows))
            kpi_windows_reported = kpi_writer.windows
        last_report = time.monotonic()

    def on_poll() -> None:
        # The first committed batch and the first closed KPI windows are reported at once:
        # the UI shows the run at work from its first micro-batch, then every
        # report_every_seconds.
        kpi_writer = run.kpi_writer
        first = (reported == 0 and writer.totals.batches > 0) or (
            kpi_windows_reported == 0 and kpi_writer is not None and kpi_writer.windows > 0
        )
        if first or time.monotonic() - last_report >= config.report_every_seconds:
            report()

    # Terminating the run raises DagsterExecutionInterruptedError here; the run stops its
    # queries in its `finally`, at a micro-batch boundary, before the error propagates.
    run.run(on_poll=on_poll)
    report()
    totals = writer.totals
    return dg.Output(
        {
            "batches": totals.batches,
            "scored": totals.scored,
            "alerts": totals.alerts,
            "invalid": totals.invalid,
            "model_version": writer.promotion.version,
            "threshold": writer.promotion.threshold,
            "kpi_windows": run.kpi_writer.windows if run.kpi_writer else 0,
            "alert_delivery": settings.delivery,
            "realtime_restarts": run.realtime_restarts,
        }
    )


@dg.job(
    tags={STREAM_TAG: "scoring"},
    description="Kafka transactions -> scored -> alerts (Kafka fraud_alerts + Parquet) and "
    "dead letters. Bounded or long-running (see the op config).",
)
def scoring_stream():
    run_scoring_stream()
