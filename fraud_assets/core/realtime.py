"""Real-time delivery: Kafka ``transactions`` -> alerts on Kafka in milliseconds.

Spark 4.1+ real-time mode (``trigger(realTime=...)``) runs long-lived tasks that process
each record as it arrives instead of planning one micro-batch per trigger. On the pinned
Spark (4.2.0) it accepts only stateless plans (project, filter, ... : the allowlist
``RealTimeModeAllowlist``), the ``update`` output mode and the Kafka, foreach, console and
memory sinks: no Parquet, no ``foreachBatch``, no windowed aggregation, no Python UDF. The
duration given to the trigger is how often a long-running batch ends and commits its
offsets to the checkpoint, not a latency bound.

So in real-time delivery two queries read ``transactions``:

- this one only *alerts*: it parses, validates and scores each message with the same
  :mod:`fraud_assets.core.scoring` functions and model as the micro-batch query and produces
  the alerts (with their explanations) to ``fraud_alerts``: at-least-once, keyed by
  ``transaction_id`` with the same ``alert_id``; after a crash it resumes from its last
  checkpoint and sends up to one checkpoint interval of alerts again, as identical records
  (their ``scored_at`` is the transaction record's Kafka timestamp, which this query scores
  within milliseconds of: a value a replay reproduces);
- the micro-batch scoring query keeps owning the ledger, the Parquet alerts, the dead
  letters and the KPIs with their exactly-once guarantees; it just does not produce the
  alerts to Kafka (:class:`~fraud_assets.core.stream.ScoringBatchWriter` ``delivers_alerts``).

Each input partition holds one task slot for the life of the query, so the Spark master
needs the partitions of ``transactions`` plus the micro-batch queries' slots
(:func:`task_slots_needed`; ``local[*]`` is sized for it by ``SparkSettings``).
"""

from dataclasses import dataclass
from pathlib import Path

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from fraud_assets.core.explain import UnexplainableModelError, is_xgboost, top_features
from fraud_assets.core.queries import guard_checkpoint
from fraud_assets.core.registry import Promotion
from fraud_assets.core.scoring import (
    alert_kafka_records,
    alerts,
    filter_valid,
    parse_transactions,
    score_with_features,
)
from fraud_assets.core.settings import KafkaSettings

BOUNDED_CHECKPOINT_INTERVAL = "5 seconds"
"""Checkpoint interval of a bounded run (Spark's smallest by default): a bounded run stops once
a checkpoint covers every message that was there at its start, so it waits for one."""


class RealtimeSetupError(RuntimeError):
    """Real-time delivery cannot run as configured; the message says what to do."""


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
    query_name: str = "fraud_alerts_realtime"
    alerts_topic: str | None = None
    """Topic of the alerts; None means ``kafka.topics.alerts``."""


def check_realtime_model(model: PipelineModel, version: str) -> None:
    """Refuse a model that real-time mode cannot run, before anything starts.

    Raises:
        RealtimeSetupError: ``model`` is an XGBoost model (scored by a pandas UDF, which
            real-time mode does not run) or has no explanation recipe.
    """
    if is_xgboost(model.stages[-1]):
        raise RealtimeSetupError(
            f"model {version} is an XGBoost model, scored by a pandas UDF, and Spark's "
            "real-time mode runs no Python UDF: promote a logistic regression or a Spark ML "
            "tree model for real-time delivery, or set FRAUD_ALERT_DELIVERY=microbatch (the "
            "micro-batch query scores any model)"
        )
    try:
        top_features(model)
    except UnexplainableModelError as error:
        raise RealtimeSetupError(
            f"model {version} cannot explain its alerts ({error}): real-time alerts carry "
            "their top features like the micro-batch ones; promote another version"
        ) from None


def task_slots_needed(transactions_partitions: int) -> int:
    """Task slots real-time delivery needs: one per input partition, plus the micro-batch's.

    The micro-batch scoring and KPI queries beside it need at least one.
    """
    return transactions_partitions + 1


def check_task_slots(spark: SparkSession, transactions_partitions: int) -> None:
    """Fail fast when a local master has too few task slots for real-time delivery.

    A real-time query that cannot get a slot for each partition never processes anything,
    and one that takes them all leaves the micro-batch query none. Clusters are not checked
    (their executors may still be registering); size them the same way.

    Raises:
        RealtimeSetupError: Too few local task slots, with what to set instead.
    """
    master = spark.sparkContext.master
    if not master.startswith("local"):
        return
    have = spark.sparkContext.defaultParallelism
    needed = task_slots_needed(transactions_partitions)
    if have < needed:
        raise RealtimeSetupError(
            f"real-time delivery needs {needed} task slots ({transactions_partitions} held "
            f"by the real-time query for its whole life, one per partition of the "
            f"transactions topic, and at least 1 for the micro-batch query), but this Spark "
            f"session ({master}) has {have}: use FRAUD_SPARK_MASTER=local[*] (sized for it "
            f"automatically) or local[{needed}] or more"
        )


def start_realtime_alert_query(
    spark: SparkSession,
    kafka: KafkaSettings,
    checkpoint_dir: Path,
    model: PipelineModel,
    promotion: Promotion,
    settings: RealtimeSettings = RealtimeSettings(),
    starting_offsets: str = "earliest",
) -> StreamingQuery:
    """Start the stateless Kafka -> parse -> score -> Kafka alert query in real-time mode.

    ``starting_offsets`` applies to a fresh checkpoint only (Spark resumes from the
    checkpoint otherwise): the offsets the micro-batch query already delivered alerts up to
    (:func:`fraud_assets.core.queries.committed_offsets`), or ``earliest``.

    Raises:
        RealtimeSetupError: The model cannot run in real-time mode (checked first).
    """
    check_realtime_model(model, promotion.version)
    guard_checkpoint(checkpoint_dir, settings.query_name, kafka.topics.transactions)
    records = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.transactions)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "true")
        .load()
    )
    scored = score_with_features(
        model,
        filter_valid(parse_transactions(records)),
        promotion.threshold,
        promotion.version,
        keep=("kafka_timestamp",),
    )
    # scored_at is the transaction record's Kafka timestamp: scored within milliseconds of
    # it here, and the same when a replay after a crash scores it again, so a re-sent alert
    # is the identical record (its own Kafka timestamp says when it was produced).
    return (
        alert_kafka_records(alerts(scored, F.col("kafka_timestamp"), top_features(model)))
        .writeStream.queryName(settings.query_name)
        .format("kafka")
        .options(**kafka.spark_options())
        .option("topic", settings.alerts_topic or kafka.topics.alerts)
        .option("checkpointLocation", str(checkpoint_dir))
        .outputMode("update")
        .trigger(realTime=settings.checkpoint_interval)
        .start()
    )
