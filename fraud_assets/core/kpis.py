"""Per-minute event-time KPIs: volume, alerts, and how good the alerts are.

One function, :func:`window_kpis`, computes them in batch (tests, audits, backfills) and
in the KPI streaming query, which reads the scored-transactions and quarantine tables that
the scoring query commits (so Kafka is parsed once) and emits each window once its
watermark has passed.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from fraud_assets.core.contracts import (
    KPI_SCHEMA,
    QUARANTINE_TABLE_SCHEMA,
    SCORED_TABLE_SCHEMA,
    field_names,
)
from fraud_assets.core.scoring import JSON_KEEP_NULLS
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.stream import (
    StreamPaths,
    commit_batch_partition,
    guard_checkpoint,
    start_with_trigger,
    write_kafka,
)

log = logging.getLogger(__name__)

WINDOW = "1 minute"


@dataclass(frozen=True)
class KpiSettings:
    """The KPI query's watermark: how late (in event time) a transaction may arrive.

    The watermark is global to the query, but Kafka partitions drift apart in event time:
    draining a backlog, Spark cuts every partition at the same fraction of its lag, and
    hash partitioning leaves a few hundred messages of difference between partitions — at
    the ULB data's night-time rate, minutes of event time (2 min 52 s measured in a chaos
    run, which dropped late rows under a 2-minute watermark). Ten minutes covers that with
    margin; windows are emitted ten minutes of event time later.
    """

    watermark_delay: str = "10 minutes"
    trigger_interval: str = "10 seconds"
    query_name: str = "fraud_kpis"


def kpi_events(scored: DataFrame, letters: DataFrame) -> DataFrame:
    """One row per message with an event time: is it valid, an alert, a (labelled) fraud."""
    is_fraud = F.coalesce(F.col("Class") == 1, F.lit(False))
    valid = scored.select(
        "event_time",
        F.lit(1).alias("valid"),
        F.col("is_alert").cast("int").alias("alert"),
        is_fraud.cast("int").alias("fraud"),
    )
    invalid = letters.where(F.col("event_time").isNotNull()).select(
        "event_time", F.lit(0).alias("valid"), F.lit(0).alias("alert"), F.lit(0).alias("fraud")
    )
    return valid.unionByName(invalid)


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator / denominator)


def window_kpis(events: DataFrame) -> DataFrame:
    """Aggregate :func:`kpi_events` rows into 1-minute tumbling windows (:data:`KPI_SCHEMA`)."""
    alert, fraud, valid = F.col("alert"), F.col("fraud"), F.col("valid")
    counts = events.groupBy(F.window("event_time", WINDOW).alias("window")).agg(
        F.sum(valid).cast("long").alias("n_txn"),
        F.sum(alert).cast("long").alias("n_alert"),
        F.sum(fraud).cast("long").alias("n_fraud_true"),
        F.sum(alert * fraud).cast("long").alias("tp"),
        F.sum(alert * (1 - fraud)).cast("long").alias("fp"),
        F.sum((1 - alert) * fraud).cast("long").alias("fn"),
        F.sum(1 - valid).cast("long").alias("n_invalid"),
    )
    return counts.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "n_txn",
        "n_alert",
        "n_fraud_true",
        "tp",
        "fp",
        "fn",
        _ratio(F.col("tp"), F.col("n_alert")).alias("precision"),
        _ratio(F.col("tp"), F.col("n_fraud_true")).alias("recall"),
        "n_invalid",
    ).select(*field_names(KPI_SCHEMA))


def committed_events(spark: SparkSession, paths: StreamPaths) -> DataFrame:
    """:func:`kpi_events` of everything the scoring query committed (batch read)."""
    scored = spark.read.schema(SCORED_TABLE_SCHEMA).parquet(str(paths.scored_table))
    letters = spark.read.schema(QUARANTINE_TABLE_SCHEMA).parquet(str(paths.quarantine_table))
    return kpi_events(scored, letters)


def batch_kpis(spark: SparkSession, paths: StreamPaths) -> DataFrame:
    """KPIs of everything the scoring query committed, computed in batch."""
    return window_kpis(committed_events(spark, paths))


def kpi_kafka_records(kpis: DataFrame) -> DataFrame:
    """KPI rows as Kafka records keyed by the window start."""
    return kpis.select(
        F.date_format("window_start", "yyyy-MM-dd'T'HH:mm:ssXXX").alias("key"),
        F.to_json(F.struct(*field_names(KPI_SCHEMA)), JSON_KEEP_NULLS).alias("value"),
    )


def kpi_overview(
    spark: SparkSession, kpi_table: Path, newest: int = 10
) -> tuple[dict[str, object], pd.DataFrame]:
    """Totals over every emitted window (with overall precision/recall) and the newest rows."""
    kpis = spark.read.schema(KPI_SCHEMA).parquet(str(kpi_table))
    counts = ("n_txn", "n_alert", "n_fraud_true", "tp", "fp", "fn", "n_invalid")
    row = kpis.agg(
        *[F.sum(c).alias(c) for c in counts],
        F.count(F.lit(1)).alias("windows"),
        F.max("window_end").alias("newest_window_end"),
    ).first()
    totals = {c: int(row[c] or 0) for c in counts}
    overview: dict[str, object] = {
        "windows_total": int(row["windows"]),
        "newest_window_end": str(row["newest_window_end"]),
        **totals,
        "precision": totals["tp"] / totals["n_alert"] if totals["n_alert"] else None,
        "recall": totals["tp"] / totals["n_fraud_true"] if totals["n_fraud_true"] else None,
    }
    return overview, kpis.orderBy(F.col("window_start").desc()).limit(newest).toPandas()


class KpiBatchWriter:
    """Commits each micro-batch of closed windows to Parquet once, then to Kafka."""

    def __init__(self, spark: SparkSession, kafka: KafkaSettings, paths: StreamPaths):
        self.spark = spark
        self.kafka = kafka
        self.paths = paths
        self.windows = 0

    def __call__(self, kpis: DataFrame, batch_id: int) -> None:
        folder, replayed = commit_batch_partition(kpis, self.paths.kpi_table, batch_id)
        if replayed:
            # The batch was committed before a crash and is replayed from the checkpoint. The
            # aggregation's state stores commit only when the batch's DataFrame is evaluated
            # in full (Spark 4 fails the query otherwise: "Not all StateStores committed"),
            # so evaluate it into the no-op sink; the rows are already in the table.
            kpis.write.format("noop").mode("overwrite").save()
        committed = self.spark.read.schema(KPI_SCHEMA).parquet(str(folder))
        n = committed.count()
        if n:
            write_kafka(kpi_kafka_records(committed), self.kafka, self.kafka.topics.kpis)
        self.windows += n
        log.info("KPI batch %d: %d closed windows", batch_id, n)


def start_kpi_query(
    spark: SparkSession,
    kafka: KafkaSettings,
    paths: StreamPaths,
    settings: KpiSettings,
    bounded: bool,
) -> tuple[StreamingQuery, KpiBatchWriter]:
    """Start the KPI query over the committed scored and quarantine tables."""
    guard_checkpoint(paths.kpi_checkpoint_dir, settings.query_name, str(paths.scored_table))
    for table in (paths.scored_table, paths.quarantine_table):
        Path(table).mkdir(parents=True, exist_ok=True)
    scored = spark.readStream.schema(SCORED_TABLE_SCHEMA).parquet(str(paths.scored_table))
    letters = spark.readStream.schema(QUARANTINE_TABLE_SCHEMA).parquet(str(paths.quarantine_table))
    events = kpi_events(scored, letters).withWatermark("event_time", settings.watermark_delay)
    writer = KpiBatchWriter(spark, kafka, paths)
    stream = (
        window_kpis(events)
        .writeStream.queryName(settings.query_name)
        .outputMode("append")
        .option("checkpointLocation", str(paths.kpi_checkpoint_dir))
        .foreachBatch(writer)
    )
    return start_with_trigger(stream, bounded, settings.trigger_interval), writer
