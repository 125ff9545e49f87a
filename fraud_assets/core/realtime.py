"""The low-latency alert path: Kafka ``transactions`` -> alerts on Kafka, in real-time mode.

Spark 4.1+ real-time mode (``trigger(realTime=...)``) runs long-lived tasks that process
each record as it arrives instead of planning one micro-batch per trigger. On the pinned
Spark (4.2.0) it accepts only stateless plans (project, filter, ... : the allowlist
``RealTimeModeAllowlist``), the ``update`` output mode and the Kafka, foreach, console and
memory sinks: no Parquet, no ``foreachBatch``, no windowed aggregation, no Python UDF. The
duration given to the trigger is how often a long-running batch ends and commits its
offsets to the checkpoint, not a latency bound.

So this query only *alerts*: it parses, validates and scores each message with the same
:mod:`fraud_assets.core.scoring` functions as the micro-batch query and writes the alerts to
Kafka (at-least-once; the alert key and ``alert_id`` are the same as the micro-batch path's,
so consumers de-duplicate). Rejected messages are dropped here: the micro-batch scoring
query, which keeps running beside it, owns the Parquet tables, the dead letters and the KPIs
with their exactly-once guarantees.
"""

from dataclasses import dataclass
from pathlib import Path

from pyspark.ml import PipelineModel
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from fraud_assets.core.explain import is_xgboost
from fraud_assets.core.registry import Promotion
from fraud_assets.core.scoring import (
    alert_kafka_records,
    alerts,
    filter_valid,
    parse_transactions,
    score_transactions,
)
from fraud_assets.core.settings import KafkaSettings


@dataclass(frozen=True)
class RealtimeSettings:
    """How the real-time alert query reads Kafka and how often it checkpoints."""

    checkpoint_interval: str = "60 seconds"
    """The ``realTime`` trigger duration: a long-running batch commits its offsets this often.

    Each hand-over from one long-running batch to the next stalls delivery for about half a
    second; with 5 s batches one fell in every 20 s benchmark window (p99 357-473 ms), with
    60 s batches p99 stayed at 6-68 ms in the windows without one and was 190-642 ms in the
    window holding one (``docs/performance.md``). The price: after a crash, up to this much
    of the alerts is sent again (at-least-once; consumers de-duplicate by the alert key)."""
    starting_offsets: str = "latest"
    """A fresh low-latency path alerts on new transactions; the backlog is the micro-batch
    query's job."""
    query_name: str = "fraud_alerts_realtime"
    alerts_topic: str | None = None
    """Topic of the alerts; None means ``kafka.topics.alerts``."""


def wall_clock_timestamp() -> Column:
    """The time a row is processed.

    ``current_timestamp()`` is fixed once per batch, and a real-time batch lasts for the
    whole checkpoint interval, so it would stamp alerts with the batch start. Reading the
    JVM clock per row (a non-deterministic expression, never constant-folded) is exact.
    """
    millis = F.expr("java_method('java.lang.System', 'currentTimeMillis')")
    return F.timestamp_millis(millis.cast("long"))


def start_realtime_alert_query(
    spark: SparkSession,
    kafka: KafkaSettings,
    checkpoint_dir: Path,
    model: PipelineModel,
    promotion: Promotion,
    settings: RealtimeSettings = RealtimeSettings(),
) -> StreamingQuery:
    """Start the stateless Kafka -> parse -> score -> Kafka alert query in real-time mode.

    Each core running one of its long-lived tasks is taken for the life of the query: the
    Spark master needs at least as many cores as ``transactions`` has partitions (plus
    what the micro-batch queries need beside it), or the query never starts processing.

    Raises:
        ValueError: ``model`` is an XGBoost model, scored by a pandas UDF, which real-time
            mode does not run.
    """
    if is_xgboost(model.stages[-1]):
        raise ValueError(
            f"model {promotion.version} is an XGBoost model, scored by a pandas UDF, and "
            "real-time mode runs no Python UDF: promote a logistic regression for the "
            "low-latency path (the micro-batch query scores any model)"
        )
    records = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.transactions)
        .option("startingOffsets", settings.starting_offsets)
        .option("failOnDataLoss", "true")
        .load()
    )
    scored = score_transactions(
        model, filter_valid(parse_transactions(records)), promotion.threshold, promotion.version
    )
    return (
        alert_kafka_records(alerts(scored, wall_clock_timestamp()))
        .writeStream.queryName(settings.query_name)
        .format("kafka")
        .options(**kafka.spark_options())
        .option("topic", settings.alerts_topic or kafka.topics.alerts)
        .option("checkpointLocation", str(checkpoint_dir))
        .outputMode("update")
        .trigger(realTime=settings.checkpoint_interval)
        .start()
    )
