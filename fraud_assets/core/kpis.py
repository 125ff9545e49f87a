"""Per-minute event-time KPIs: volume, alerts, and how good the alerts are.

The counts of a window are additive, so they are computed where the rows are and summed
where the windows close:

- every scoring micro-batch turns its committed ledger into :func:`kpi_partial_records` — what
  it adds to each 1-minute window it touched, a few rows — and produces them to the internal
  topic ``fraud_kpi_partials`` (at-least-once, like every Kafka output of a batch);
- the KPI streaming query (:func:`start_kpi_query`) reads that topic, counts each
  ``(batch_id, window)`` once (a replayed batch re-sends identical partials), sums the
  partials of each window and emits it once its watermark has passed.

So the KPI query reads a few rows per micro-batch from Kafka instead of every scored row
from a growing Parquet folder, and the same :func:`window_counts` gives the batch KPIs
(tests, audits, the demo's reconciliation) from the ledger table.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from fraud_assets.core.contracts import (
    KPI_COUNT_COLUMNS,
    KPI_PARTIAL_SCHEMA,
    KPI_SCHEMA,
    LEDGER_TABLE_SCHEMA,
    field_names,
)
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.queries import (
    guard_checkpoint,
    owes_no_data_batch,
    session_conf,
    start_with_trigger,
)
from fraud_assets.core.scoring import JSON_KEEP_NULLS, per_application
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.sinks import commit_batch_partition, write_kafka
from fraud_assets.core.spark import SHUFFLE_PARTITIONS

log = logging.getLogger(__name__)

WINDOW = "1 minute"

EVICTION_REQUEST = "fraud_assets:evict"
"""The ``stream_id`` of a record on ``fraud_kpi_partials`` that no KPI query counts (no
scoring query has this id): produced only to make a restarted KPI query run the batch that
emits the windows its last watermark closed (:func:`start_kpi_query`)."""


@dataclass(frozen=True)
class KpiSettings:
    """The KPI query's watermark: how late (in event time) a transaction may arrive.

    The watermark is global to the query, but Kafka partitions drift apart in event time:
    draining a backlog, Spark cuts every partition at the same fraction of its lag, and
    hash partitioning leaves a few hundred messages of difference between partitions — at
    the ULB data's night-time rate, minutes of event time (2 min 52 s measured in a chaos
    run, which dropped late rows under a 2-minute watermark). Ten minutes covers that with
    margin; windows are emitted ten minutes of event time later.

    The query's event time is a partial's window start, so its watermark is the newest
    window start seen minus the delay (:func:`final_watermark`): a window closes up to a
    minute of event time later than it would on per-row event times. A partial exactly
    ``watermark_delay`` behind the newest window start is late (Spark drops rows at or below
    the watermark), although its window closes a minute after: the tolerance is the delay.
    """

    watermark_delay: str = "10 minutes"
    trigger_interval: str = "10 seconds"
    query_name: str = "fraud_kpis"
    state_partitions: int = 1
    """Partitions of the query's state (its two stateful operators): a micro-batch holds a
    few partial records per scoring batch, so one partition serves, and each more costs a
    state-store task per operator per batch (four: a KPI batch of 9 tasks instead of 3,
    docs/operations.md). Fixed when a checkpoint is created; an existing one keeps its own."""


# --- the counts, in batch and per micro-batch -----------------------------------------------


@per_application
def _event_columns() -> tuple[Column, ...]:
    valid = F.col("reason").isNull()
    return (
        F.col("event_time"),
        valid.cast("int").alias("valid"),
        F.coalesce(F.col("is_alert"), F.lit(False)).cast("int").alias("alert"),
        (valid & F.coalesce(F.col("Class") == 1, F.lit(False))).cast("int").alias("fraud"),
    )


def kpi_events(ledger: DataFrame) -> DataFrame:
    """One row per ledger row with an event time: is it valid, an alert, a labelled fraud."""
    return ledger.where(F.col("event_time").isNotNull()).select(
        *_event_columns(ledger.sparkSession)
    )


@per_application
def _count_columns(summed: bool) -> tuple[Column, tuple[Column, ...], tuple[Column, ...]]:
    """Grouping key, aggregates and output of a per-window count (``summed``: of partials)."""
    if summed:
        window = F.window("window_start", WINDOW).alias("window")
        sums = {name: F.sum(name) for name in KPI_COUNT_COLUMNS}
    else:
        window = F.window("event_time", WINDOW).alias("window")
        alert, fraud, valid = F.col("alert"), F.col("fraud"), F.col("valid")
        sums = {
            "n_txn": F.sum(valid),
            "n_alert": F.sum(alert),
            "n_fraud_true": F.sum(fraud),
            "tp": F.sum(alert * fraud),
            "fp": F.sum(alert * (1 - fraud)),
            "fn": F.sum((1 - alert) * fraud),
            "n_invalid": F.sum(1 - valid),
        }
    aggregates = tuple(sums[name].cast("long").alias(name) for name in KPI_COUNT_COLUMNS)
    # Grouped by the window itself, not by an expression of it: that is what Spark's
    # watermark tracks, so the streaming query can evict and emit closed windows.
    final = (F.col("window.start").alias("window_start"), *map(F.col, KPI_COUNT_COLUMNS))
    return window, aggregates, final


def _per_window(rows: DataFrame, summed: bool) -> DataFrame:
    window, aggregates, final = _count_columns(rows.sparkSession, summed)
    return rows.groupBy(window).agg(*aggregates).select(*final)


def window_counts(events: DataFrame) -> DataFrame:
    """:func:`kpi_events` summed per 1-minute window: ``window_start`` + the KPI counts."""
    return _per_window(events, summed=False)


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator / denominator)


@per_application
def _kpi_columns() -> tuple[Column, ...]:
    computed = {
        "window_end": F.col("window_start") + F.expr(f"INTERVAL {WINDOW}"),
        "precision": _ratio(F.col("tp"), F.col("n_alert")),
        "recall": _ratio(F.col("tp"), F.col("n_fraud_true")),
    }
    return tuple(computed.get(name, F.col(name)).alias(name) for name in field_names(KPI_SCHEMA))


def with_ratios(counts: DataFrame) -> DataFrame:
    """Window counts (``window_start`` + the KPI counts) as KPI rows (:data:`KPI_SCHEMA`)."""
    return counts.select(*_kpi_columns(counts.sparkSession))


def window_kpis(events: DataFrame) -> DataFrame:
    """Aggregate :func:`kpi_events` rows into 1-minute tumbling windows (:data:`KPI_SCHEMA`)."""
    return with_ratios(window_counts(events))


@per_application
def _partial_columns(stream_id: str, topic: str | None) -> tuple[Column, ...]:
    key = F.concat_ws(
        ":",
        F.lit(stream_id),
        F.col("batch_id").cast("string"),
        F.date_format("window_start", "yyyy-MM-dd'T'HH:mm:ssXXX"),
    )
    partial = {"stream_id": F.lit(stream_id), "batch_id": F.col("batch_id")}
    value = F.to_json(
        F.struct(
            *[
                partial.get(name, F.col(name)).alias(name)
                for name in field_names(KPI_PARTIAL_SCHEMA)
            ]
        )
    )
    columns = (key.alias("key"), value.alias("value"))
    return columns if topic is None else (*columns, F.lit(topic).alias("topic"))


def kpi_partial_records(ledger: DataFrame, stream_id: str, topic: str | None = None) -> DataFrame:
    """What one committed micro-batch adds to each window it touched, as Kafka records.

    ``ledger`` is one batch's committed ledger partition read with its ``batch_id`` column.
    Each record's value is a :data:`KPI_PARTIAL_SCHEMA` row, its key
    ``<stream_id>:<batch_id>:<window_start>``; with ``topic``, each names its topic. The
    ledger of one batch is small enough for one task: without a shuffle, the aggregation is
    a single stage of a single Spark job.
    """
    events = ledger.coalesce(1).where(F.col("event_time").isNotNull())
    events = events.select("batch_id", *_event_columns(ledger.sparkSession))
    window, aggregates, final = _count_columns(ledger.sparkSession, False)
    counts = events.groupBy("batch_id", window).agg(*aggregates).select("batch_id", *final)
    return counts.select(*_partial_columns(ledger.sparkSession, stream_id, topic))


def committed_events(spark: SparkSession, paths: StreamPaths) -> DataFrame:
    """:func:`kpi_events` of everything the scoring query committed (batch read)."""
    return kpi_events(spark.read.schema(LEDGER_TABLE_SCHEMA).parquet(str(paths.ledger_table)))


def batch_kpis(spark: SparkSession, paths: StreamPaths) -> DataFrame:
    """KPIs of everything the scoring query committed, computed in batch."""
    return window_kpis(committed_events(spark, paths))


def final_watermark(latest_event_time: pd.Timestamp, watermark_delay: str) -> pd.Timestamp:
    """The KPI query's watermark once it has seen every row up to ``latest_event_time``.

    Its event time is a partial's window start, so the newest one is the latest event time
    floored to the window; windows that end at or before this are closed.
    """
    window = pd.Timedelta(WINDOW)
    return pd.Timestamp(latest_event_time).floor(window) - pd.Timedelta(watermark_delay)


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
    row = kpis.agg(
        *[F.sum(c).alias(c) for c in KPI_COUNT_COLUMNS],
        F.count(F.lit(1)).alias("windows"),
        F.max("window_end").alias("newest_window_end"),
    ).first()
    totals = {c: int(row[c] or 0) for c in KPI_COUNT_COLUMNS}
    overview: dict[str, object] = {
        "windows_total": int(row["windows"]),
        "newest_window_end": str(row["newest_window_end"]),
        **totals,
        "precision": totals["tp"] / totals["n_alert"] if totals["n_alert"] else None,
        "recall": totals["tp"] / totals["n_fraud_true"] if totals["n_fraud_true"] else None,
    }
    return overview, kpis.orderBy(F.col("window_start").desc()).limit(newest).toPandas()


# --- the KPI query ---------------------------------------------------------------------------


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


def read_kpi_partials(spark: SparkSession, kafka: KafkaSettings, stream_id: str) -> DataFrame:
    """The partials of scoring query ``stream_id`` as a streaming DataFrame."""
    records = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.kpi_partials)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        .load()
    )
    partials = records.select(
        F.from_json(F.col("value").cast("string"), KPI_PARTIAL_SCHEMA).alias("p")
    ).select("p.*")
    return partials.where(F.col("stream_id") == F.lit(stream_id))


def streaming_kpis(partials: DataFrame, watermark_delay: str) -> DataFrame:
    """Closed KPI windows (:data:`KPI_SCHEMA`) from a stream of partials.

    Each ``(batch_id, window_start)`` counts once: a scoring batch replayed after a crash
    re-sends the same partials, which the de-duplication drops while they are within the
    watermark (a replay follows its first attempt by seconds).
    """
    unique = partials.withWatermark("window_start", watermark_delay).dropDuplicatesWithinWatermark(
        ["batch_id", "window_start"]
    )
    counts = _per_window(unique, summed=True)
    return with_ratios(counts)


def _request_eviction(spark: SparkSession, kafka: KafkaSettings, stream_id: str) -> None:
    """Give a restarted KPI query one input record, which it drops, so that it runs a batch.

    The query stopped between the batch that moved its watermark and the no-data batch
    that emits the windows the new watermark closes; after a restart Spark runs that batch
    only on new input (:func:`~fraud_assets.core.queries.owes_no_data_batch`). A bounded run
    would otherwise end with those windows open. The record is filtered out before the
    watermark, so it moves neither the watermark nor any count.
    """
    record = spark.createDataFrame(
        [(f"{EVICTION_REQUEST}:{stream_id}", json.dumps({"stream_id": EVICTION_REQUEST}))],
        "key string, value string",
    )
    write_kafka(record, kafka, kafka.topics.kpi_partials)
    log.info("the KPI query stopped before its windows were emitted: requested that batch")


def start_kpi_query(
    spark: SparkSession,
    kafka: KafkaSettings,
    paths: StreamPaths,
    settings: KpiSettings,
    bounded: bool,
    stream_id: str,
) -> tuple[StreamingQuery, KpiBatchWriter]:
    """Start the KPI query over the partials of scoring query ``stream_id``.

    A query that was stopped before emitting the windows its watermark closed is first
    given the input that makes it emit them (:func:`_request_eviction`).
    """
    guard_checkpoint(
        paths.kpi_checkpoint_dir, settings.query_name, f"{kafka.topics.kpi_partials}/{stream_id}"
    )
    if owes_no_data_batch(paths.kpi_checkpoint_dir):
        _request_eviction(spark, kafka, stream_id)
    writer = KpiBatchWriter(spark, kafka, paths)
    stream = (
        streaming_kpis(read_kpi_partials(spark, kafka, stream_id), settings.watermark_delay)
        .writeStream.queryName(settings.query_name)
        .outputMode("append")
        .option("checkpointLocation", str(paths.kpi_checkpoint_dir))
        .foreachBatch(writer)
    )
    # The query copies the session's SQL settings when it starts: its state partitions are
    # set for it alone, not for the scoring query or batch work sharing the session.
    with session_conf(spark, SHUFFLE_PARTITIONS, str(settings.state_partitions)):
        query = start_with_trigger(stream, bounded, settings.trigger_interval)
    return query, writer
