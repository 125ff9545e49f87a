"""The scoring stream: Kafka ``transactions`` -> alerts (Kafka + Parquet) and dead letters.

One Structured Streaming query reads Kafka, parses each message once and scores it once.
Its ``foreachBatch`` writer commits each micro-batch idempotently:

0. the model version and threshold of batch ``N`` are chosen and recorded before anything is
   written (``<batch_log_dir>/models/batch-N.json``): given a registry, the writer re-reads
   the promotion pointer at the start of every batch, so an operator's promotion or
   threshold change applies from the next micro-batch without a restart; a replayed batch
   reuses the recorded choice, so its outputs stay byte-identical;
1. alerts of batch ``N`` are written to ``<alerts_table>/batch_id=N`` through a staging
   folder and an atomic rename; a replayed batch (after a crash) finds the folder and skips
   the write, so the Parquet table is exactly-once;
2. the Kafka ``fraud_alerts`` records are produced from that committed folder, so a replay
   re-sends byte-identical records with the same key (at-least-once, de-duplicable);
3. every scored transaction is committed to the scored-transactions table, the input of
   the KPI query (:mod:`fraud_assets.core.kpis`), so Kafka is parsed and scored once;
4. rejected messages go the same way as alerts to the quarantine table and
   ``transactions_dlq`` (a batch without any writes no quarantine partition: its count
   is observed while the alerts are written);
5. a small JSON batch log records the counts.

Spark's checkpoint (one per query, never deleted by code) makes a restart resume at the
first uncommitted batch with the same offsets.
"""

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from fraud_assets.core.compiled import compiled_fraud_probability
from fraud_assets.core.contracts import (
    ALERT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    SCORED_TRANSACTIONS_SCHEMA,
    field_names,
)
from fraud_assets.core.explain import UnexplainableModelError, top_features
from fraud_assets.core.registry import (
    ModelRegistry,
    Promotion,
    check_compatible,
    write_json_atomic,
)
from fraud_assets.core.scoring import (
    alert_kafka_records,
    alerts,
    dead_letter_kafka_records,
    dead_letters,
    filter_valid,
    parse_transactions,
    score_with_features,
    without_valid_text,
)
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.io import end_offsets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamPaths:
    """Where the scoring query keeps its checkpoint and writes its tables."""

    checkpoint_dir: Path
    kpi_checkpoint_dir: Path
    alerts_table: Path
    scored_table: Path
    quarantine_table: Path
    kpi_table: Path
    batch_log_dir: Path

    @classmethod
    def under(cls, tables_dir: Path, checkpoints_dir: Path) -> "StreamPaths":
        return cls(
            checkpoint_dir=checkpoints_dir / "scoring",
            kpi_checkpoint_dir=checkpoints_dir / "kpis",
            alerts_table=tables_dir / "alerts",
            scored_table=tables_dir / "scored_transactions",
            quarantine_table=tables_dir / "quarantine",
            kpi_table=tables_dir / "kpis",
            batch_log_dir=tables_dir / "stream_batches",
        )

    @property
    def batch_models_dir(self) -> Path:
        """One JSON per micro-batch: the promotion (version, threshold) it was scored with."""
        return self.batch_log_dir / "models"


@dataclass(frozen=True)
class StreamSettings:
    """How the scoring query reads Kafka and how often it commits."""

    trigger_interval: str = "1 second"
    """Micro-batch interval in unbounded mode (bounded mode drains what is available)."""
    max_offsets_per_trigger: int = 100_000
    starting_offsets: str = "earliest"
    query_name: str = "fraud_scoring"
    max_poll_records: int = 20_000
    """Records one Kafka consumer poll may return (Kafka's default 500 makes a 100k-row
    micro-batch 200 round trips per partition)."""
    max_partition_fetch_bytes: int = 16 * 1024 * 1024
    """Bytes one fetch may return per partition (Kafka's default 1 MiB is ~1,400 messages).
    With the poll size above it cut reading + parsing from ~65 to ~45 core-µs per message
    here (``make bench``); a consumer holds at most this much per partition."""

    def consumer_options(self) -> dict[str, str]:
        """The Kafka consumer settings above as Spark Kafka source options."""
        return {
            "kafka.max.poll.records": str(self.max_poll_records),
            "kafka.max.partition.fetch.bytes": str(self.max_partition_fetch_bytes),
            "kafka.fetch.max.bytes": str(4 * self.max_partition_fetch_bytes),
        }


@dataclass
class BatchStats:
    """What one committed micro-batch did."""

    batch_id: int
    input_rows: int
    scored: int
    alerts: int
    invalid: int
    model_version: str
    threshold: float
    duration_ms: int
    replayed: bool
    stage_ms: dict[str, int] = field(default_factory=dict)
    """Wall milliseconds of each step: ``alerts`` (parse, score, commit the alerts; the
    first step reads Kafka), ``alerts_kafka``, ``scored``, ``dead_letters``."""


@dataclass
class StreamTotals:
    """Running totals over the batches this process committed."""

    batches: int = 0
    input_rows: int = 0
    scored: int = 0
    alerts: int = 0
    invalid: int = 0
    last_batch: BatchStats | None = None
    history: list[BatchStats] = field(default_factory=list)

    def add(self, stats: BatchStats) -> None:
        self.batches += 1
        self.input_rows += stats.input_rows
        self.scored += stats.scored
        self.alerts += stats.alerts
        self.invalid += stats.invalid
        self.last_batch = stats
        self.history.append(stats)


def commit_batch_partition(df: DataFrame, table_dir: Path, batch_id: int) -> tuple[Path, bool]:
    """Write ``df`` as ``table_dir/batch_id=N`` exactly once.

    Returns the partition folder and whether it already existed (a replayed batch). The
    data is written to ``table_dir/_staging`` (ignored by Parquet readers) and renamed into
    place, so the folder either holds the whole batch or does not exist.
    """
    final = table_dir / f"batch_id={batch_id}"
    if final.exists():
        return final, True
    staging = table_dir / "_staging" / f"batch_id={batch_id}-{uuid.uuid4().hex}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    df.write.mode("errorifexists").parquet(str(staging))
    os.replace(staging, final)
    return final, False


class Laps:
    """Wall milliseconds of consecutive steps, each measured from the end of the previous."""

    def __init__(self) -> None:
        self.ms: dict[str, int] = {}
        self._last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.ms[step] = int((now - self._last) * 1000)
        self._last = now


class CountedRows:
    """A DataFrame whose aggregates are observed while it is written (no second pass).

    ``df`` is what to write; :meth:`result` returns the observed aggregates once the write
    has run, or computes them with a job of their own when the write was skipped (a
    replayed batch whose partition was already committed).
    """

    def __init__(self, source: DataFrame, *aggregates: Column):
        self._source = source
        self._aggregates = aggregates
        self._observation = Observation()
        self.df = source.observe(self._observation, *aggregates)

    def result(self, written: bool) -> dict:
        if written:
            return dict(self._observation.get)
        return self._source.agg(*self._aggregates).first().asDict()


def write_kafka(
    df: DataFrame, kafka: KafkaSettings, topic: str, producer_options: dict[str, str] | None = None
) -> None:
    """Produce ``key``/``value`` rows to ``topic`` (Kafka's batch writer, at-least-once).

    ``producer_options`` are more ``kafka.``-prefixed settings of Spark's Kafka producer.
    """
    (
        df.write.format("kafka")
        .options(**kafka.spark_options())
        .options(**(producer_options or {}))
        .option("topic", topic)
        .save()
    )


@dataclass(frozen=True)
class _Scorer:
    """A loaded model version and its explanation expression (None: not explainable)."""

    model: PipelineModel
    top_features: Column | None

    @property
    def cheap(self) -> bool:
        """Scoring is one arithmetic expression (a compiled logistic regression)."""
        return compiled_fraud_probability(self.model) is not None


MODEL_CACHE_SIZE = 3
"""Loaded model versions kept by a writer (the current one and a couple to switch back to)."""


class ScoringBatchWriter:
    """The ``foreachBatch`` function of the scoring query (see the module docstring).

    Args:
        spark: The session the query runs in.
        kafka: Where alerts and dead letters are produced.
        paths: The tables, batch logs and checkpoint of the query.
        model: The loaded model of ``promotion.version``.
        promotion: The promotion to score with when no registry is given (and the first one
            otherwise, until the registry says something else).
        on_batch: Called with each committed batch's stats.
        registry: When given, the promotion pointer is re-read at the start of every
            micro-batch and a changed version or threshold applies to that batch.
    """

    def __init__(
        self,
        spark: SparkSession,
        kafka: KafkaSettings,
        paths: StreamPaths,
        model: PipelineModel,
        promotion: Promotion,
        on_batch: Callable[[BatchStats], None] | None = None,
        *,
        registry: ModelRegistry | None = None,
    ):
        self.spark = spark
        self.kafka = kafka
        self.paths = paths
        self.promotion = promotion
        """The promotion the last micro-batch was scored with."""
        self.registry = registry
        self.on_batch = on_batch
        self.totals = StreamTotals()
        self._lock = threading.Lock()
        self._scorers: OrderedDict[str, _Scorer] = OrderedDict()
        self._scorers[promotion.version] = _Scorer(model, _explanation(model, promotion.version))

    @property
    def model(self) -> PipelineModel:
        """The model of the current promotion."""
        return self._scorers[self.promotion.version].model

    def _scorer(self, version: str) -> _Scorer:
        """The loaded model of ``version`` (loaded once, then cached)."""
        if version in self._scorers:
            self._scorers.move_to_end(version)
            return self._scorers[version]
        if self.registry is None:
            raise KeyError(version)
        check_compatible(self.registry.metadata(version))
        model = self.registry.load(version)
        scorer = _Scorer(model, _explanation(model, version))
        self._scorers[version] = scorer
        while len(self._scorers) > MODEL_CACHE_SIZE:
            self._scorers.popitem(last=False)
        return scorer

    def _wanted(self) -> Promotion:
        """The promotion to apply to a new batch: the registry's, if it is usable."""
        if self.registry is None:
            return self.promotion
        try:
            wanted = self.registry.promoted()
        except (OSError, ValueError, TypeError) as error:
            log.error("cannot read the promotion pointer (%s): keeping %s", error, self.promotion)
            return self.promotion
        if wanted is None:
            return self.promotion
        try:
            self._scorer(wanted.version)
        except Exception as error:  # a bad model must not stop the stream: keep scoring
            log.error(
                "promoted model %s cannot be loaded (%s): still scoring with %s",
                wanted.version,
                error,
                self.promotion.version,
            )
            return self.promotion
        return wanted

    def promotion_for(self, batch_id: int) -> tuple[Promotion, bool]:
        """The promotion batch ``batch_id`` is scored with, and whether it was recorded before.

        A new batch takes :meth:`_wanted` and records it before anything is written; a
        replayed batch (same id after a crash) gets the recorded one back, so its outputs
        are the ones it would have committed the first time.
        """
        path = self.paths.batch_models_dir / f"batch-{batch_id:012d}.json"
        if path.is_file():
            recorded = Promotion.from_dict(json.loads(path.read_text()))
            try:
                self._scorer(recorded.version)
            except Exception as error:
                # Only a writer without a registry (or a deleted version) gets here.
                log.warning(
                    "batch %d was first scored with %s, which is not available here (%s); "
                    "replaying it with %s",
                    batch_id,
                    recorded.version,
                    error,
                    self.promotion.version,
                )
                return self.promotion, True
            return recorded, True
        wanted = self._wanted()
        write_json_atomic(path, {"batch_id": batch_id, **asdict(wanted)})
        return wanted, False

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        promotion, _ = self.promotion_for(batch_id)
        if (promotion.version, promotion.threshold) != (
            self.promotion.version,
            self.promotion.threshold,
        ):
            log.info(
                "batch %d: scoring with %s at threshold %s (was %s at %s)",
                batch_id,
                promotion.version,
                promotion.threshold,
                self.promotion.version,
                self.promotion.threshold,
            )
        self.promotion = promotion
        scorer = self._scorer(promotion.version)
        # Kafka is read and parsed once: the parsed rows stay in memory for the writes below,
        # with the raw message text kept only for rejected ones (the dead letters need it).
        parsed = without_valid_text(parse_transactions(records)).persist()
        # The alerts write reads every parsed row: it counts the rejected ones on the way,
        # so a batch without any skips the dead-letter commit (a Spark job and a rename).
        rejected = CountedRows(parsed, F.count_if(F.col("reason").isNotNull()).alias("invalid"))
        # Trees: scoring costs more than keeping the scored rows until the last write. The
        # count is then taken by a job of its own: metrics observed inside a cached plan are
        # not something to wait on.
        observed = scorer.cheap
        scored_with_features = score_with_features(
            scorer.model,
            filter_valid(rejected.df if observed else parsed),
            promotion.threshold,
            promotion.version,
        )
        if not scorer.cheap:
            scored_with_features = scored_with_features.persist()
        scored = scored_with_features.select(*field_names(SCORED_TRANSACTIONS_SCHEMA))
        laps = Laps()
        try:
            # Alerts first: they are what someone waits for.
            alert_dir, replayed = commit_batch_partition(
                alerts(scored_with_features, F.current_timestamp(), scorer.top_features),
                self.paths.alerts_table,
                batch_id,
            )
            committed_alerts = self.spark.read.schema(ALERT_SCHEMA).parquet(str(alert_dir))
            laps.done("alerts")
            write_kafka(alert_kafka_records(committed_alerts), self.kafka, self.kafka.topics.alerts)
            laps.done("alerts_kafka")

            # Every scored row, for the KPI query and live-quality audits (exactly once),
            # counted while it is written.
            scored_counts = CountedRows(
                scored, F.count(F.lit(1)).alias("scored"), F.count_if("is_alert").alias("alerts")
            )
            _, existed = commit_batch_partition(scored_counts.df, self.paths.scored_table, batch_id)
            counts = scored_counts.result(written=not existed)
            laps.done("scored")

            invalid = int(rejected.result(written=observed and not replayed)["invalid"])
            if invalid:
                letters_dir, _ = commit_batch_partition(
                    dead_letters(parsed), self.paths.quarantine_table, batch_id
                )
                committed_letters = self.spark.read.schema(DEAD_LETTER_SCHEMA).parquet(
                    str(letters_dir)
                )
                write_kafka(
                    dead_letter_kafka_records(committed_letters),
                    self.kafka,
                    self.kafka.topics.dead_letter,
                )
            laps.done("dead_letters")
        finally:
            scored_with_features.unpersist()
            parsed.unpersist()

        stats = BatchStats(
            batch_id=batch_id,
            input_rows=int(counts["scored"]) + int(invalid),
            scored=int(counts["scored"]),
            alerts=int(counts["alerts"]),
            invalid=int(invalid),
            model_version=promotion.version,
            threshold=promotion.threshold,
            duration_ms=int((time.monotonic() - started) * 1000),
            replayed=replayed,
            stage_ms=laps.ms,
        )
        write_json_atomic(self.paths.batch_log_dir / f"batch-{batch_id:012d}.json", asdict(stats))
        with self._lock:
            self.totals.add(stats)
        log.info(
            "batch %d: %d scored, %d alerts, %d invalid in %d ms%s",
            batch_id,
            stats.scored,
            stats.alerts,
            stats.invalid,
            stats.duration_ms,
            " (replayed)" if replayed else "",
        )
        if self.on_batch is not None:
            self.on_batch(stats)


def _explanation(model: PipelineModel, version: str) -> Column | None:
    """The alert explanation of ``model``; None (alerts without one) if it has no recipe."""
    try:
        return top_features(model)
    except UnexplainableModelError as error:
        log.warning("model %s: alerts carry no explanation (%s)", version, error)
        return None


def stream_rates(progress: dict | None) -> dict[str, float]:
    """Spark's own throughput figures of the last micro-batch (empty before the first)."""
    if not progress:
        return {}
    return {
        "input_rows_per_second": round(float(progress.get("inputRowsPerSecond") or 0.0), 1),
        "processed_rows_per_second": round(float(progress.get("processedRowsPerSecond") or 0.0), 1),
        "trigger_duration_ms": int(progress.get("durationMs", {}).get("triggerExecution", 0)),
    }


def kafka_lag(progress: dict | None, kafka: KafkaSettings) -> dict[str, int] | None:
    """Messages in ``transactions`` not yet read by the query, per partition."""
    if not progress or not progress.get("sources"):
        return None
    consumed = progress["sources"][0].get("endOffset") or {}
    if isinstance(consumed, str):
        consumed = json.loads(consumed)
    topic = kafka.topics.transactions
    latest = end_offsets(kafka, topic, timeout_s=10.0)
    read = consumed.get(topic, {})
    return {str(p): max(0, end - int(read.get(str(p), 0))) for p, end in sorted(latest.items())}


def read_transactions_stream(
    spark: SparkSession, kafka: KafkaSettings, settings: StreamSettings
) -> DataFrame:
    """The Kafka ``transactions`` topic as a streaming DataFrame of raw records."""
    return (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.transactions)
        .option("startingOffsets", settings.starting_offsets)
        .option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
        .options(**settings.consumer_options())
        # Losing data (a deleted topic, expired offsets) must stop the query, not be skipped.
        .option("failOnDataLoss", "true")
        .load()
    )


def read_transactions_batch(
    spark: SparkSession,
    kafka: KafkaSettings,
    settings: StreamSettings = StreamSettings(),
    ending_offsets: dict[str, int] | None = None,
) -> DataFrame:
    """The ``transactions`` topic read in batch, like the stream reads it.

    Same source columns and consumer settings; from the earliest offsets, and to
    ``ending_offsets`` (partition -> exclusive end offset) when given.
    """
    reader = (
        spark.read.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.transactions)
        .options(**settings.consumer_options())
    )
    if ending_offsets is not None:
        ending = json.dumps({kafka.topics.transactions: ending_offsets})
        reader = reader.option("endingOffsets", ending)
    return reader.load()


def start_scoring_query(
    spark: SparkSession,
    kafka: KafkaSettings,
    paths: StreamPaths,
    writer: ScoringBatchWriter,
    settings: StreamSettings,
    bounded: bool,
) -> StreamingQuery:
    """Start the scoring query; ``bounded`` drains what is available now, then stops."""
    guard_checkpoint(paths.checkpoint_dir, settings.query_name, kafka.topics.transactions)
    stream = (
        read_transactions_stream(spark, kafka, settings)
        .writeStream.queryName(settings.query_name)
        .option("checkpointLocation", str(paths.checkpoint_dir))
        .foreachBatch(writer)
    )
    return start_with_trigger(stream, bounded, settings.trigger_interval)


def start_with_trigger(
    stream: DataStreamWriter, bounded: bool, trigger_interval: str
) -> StreamingQuery:
    """Start ``stream``, bounded (drain what is available, then stop) or not.

    Unbounded, it runs a micro-batch every ``trigger_interval`` until stopped.
    """
    if bounded:
        return stream.trigger(availableNow=True).start()
    return stream.trigger(processingTime=trigger_interval).start()


class CheckpointMismatchError(RuntimeError):
    """The checkpoint folder belongs to another query; it is never deleted by code."""


def guard_checkpoint(checkpoint_dir: Path, query_name: str, source_topic: str) -> None:
    """Refuse to start on a checkpoint written by a different query or source topic.

    Spark would otherwise resume from offsets of another topic or fail deep inside the
    state store. The identity is recorded next to Spark's own files on first start.
    """
    identity_path = checkpoint_dir / "fraud_assets_query.json"
    identity = {"query_name": query_name, "source_topic": source_topic}
    if identity_path.is_file():
        recorded = json.loads(identity_path.read_text())
        if recorded != identity:
            raise CheckpointMismatchError(
                f"checkpoint {checkpoint_dir} belongs to {recorded}, not {identity}. "
                "Point the query at its own checkpoint folder, or move this one aside "
                "yourself if you really mean to reprocess (code never deletes checkpoints)."
            )
    elif checkpoint_dir.exists() and any(checkpoint_dir.iterdir()):
        raise CheckpointMismatchError(
            f"checkpoint {checkpoint_dir} holds files of an unknown query; refusing to reuse it"
        )
    else:
        write_json_atomic(identity_path, identity)


def await_queries(
    queries: list[StreamingQuery],
    stop_requested: Callable[[], bool] = lambda: False,
    poll_seconds: float = 1.0,
    on_poll: Callable[[], None] | None = None,
) -> None:
    """Wait until every query has ended (bounded mode), one fails, or ``stop_requested()``.

    A failure stops the other queries and is re-raised. Every query is stopped on the way
    out, also when the wait is interrupted (Ctrl-C, run termination).
    """
    try:
        while active := [q for q in queries if q.isActive]:
            if stop_requested():
                log.info("stop requested: stopping %s", [q.name for q in queries])
                break
            if any(q.exception() is not None for q in queries):
                break
            # One snapshot of the active queries: a bounded query may end between two
            # isActive calls (awaitTermination of an ended query returns at once).
            active[0].awaitTermination(poll_seconds)
            if on_poll is not None:
                on_poll()
        for query in queries:
            error = query.exception()
            if error is not None:
                raise RuntimeError(f"streaming query {query.name} failed: {error}") from None
    finally:
        for query in queries:
            if query.isActive:
                query.stop()


def await_query(
    query: StreamingQuery,
    stop_requested: Callable[[], bool] = lambda: False,
    poll_seconds: float = 1.0,
    on_poll: Callable[[], None] | None = None,
) -> None:
    """:func:`await_queries` for one query."""
    await_queries([query], stop_requested, poll_seconds, on_poll)


def clear_staging(table_dir: Path) -> None:
    """Remove leftovers of interrupted batch writes (never committed data, never checkpoints)."""
    staging = table_dir / "_staging"
    if staging.is_dir():
        shutil.rmtree(staging)
