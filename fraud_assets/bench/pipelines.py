"""The Spark pipelines under test, and their timing read from Spark's own progress reports.

- **production** is the product itself: a :class:`fraud_assets.core.stream_run.ScoringRun`
  (the scoring query with its one-pass ledger writer, the KPI query over its partials) with
  micro-batch delivery; **production_realtime** the same run with real-time delivery (the
  real-time alert query, the micro-batch query beside it keeping the tables and KPIs).
- **bare_microbatch** and **bare_realtime** are Spark's floors: a Kafka -> Kafka copy of
  every message (no parse, no score) with the production trigger, and the same copy in
  real-time mode. They say what Spark itself costs here before any work of ours. The bare
  copy reads with Spark's default consumer settings; ``bare_microbatch_tuned`` (reported
  for the fixed cost only) with the production ones, to tell a setting from the structure.
- **reference_style** is modelled on the reference notebooks: three independent queries,
  each reading Kafka and parsing the JSON again (``from_json`` -> ``select("j.*")``, the
  JSON optimizer at its default), a Python UDF for ``probability[1]``, the default trigger
  and the default 200 shuffle partitions; alerts to Kafka, alerts to Parquet, windowed KPIs.
"""

import json
import threading
import time
from datetime import datetime
from pathlib import Path

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from fraud_assets.core.contracts import TRANSACTION_MESSAGE_SCHEMA
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.registry import Promotion
from fraud_assets.core.scoring import filter_valid, parse_transactions, score_transactions
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.spark import SHUFFLE_PARTITIONS
from fraud_assets.core.stream import ScoringBatchWriter, StreamSettings
from fraud_assets.core.stream_run import RunSettings, ScoringRun

JSON_OPTIMIZER_CONF = "spark.sql.optimizer.enableJsonExpressionOptimization"
REFERENCE_CONF = {JSON_OPTIMIZER_CONF: "true", SHUFFLE_PARTITIONS: "200"}
"""Spark's defaults, which the reference notebooks run with (ours override both)."""


# --- progress ---------------------------------------------------------------------------


def progress_events(query: StreamingQuery | None) -> list[dict]:
    """The query's recent progress reports as dicts (oldest first; none without a query)."""
    if query is None:
        return []
    return [json.loads(p.json) if hasattr(p, "json") else dict(p) for p in query.recentProgress]


def epoch(timestamp: str) -> float:
    """Epoch seconds of a progress report's ISO timestamp."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def busy_window(events: list[dict]) -> tuple[float, float] | None:
    """Epoch seconds from the start of the first batch that read input to the end of the last.

    A batch's progress ``timestamp`` is its trigger start; adding its ``triggerExecution``
    duration gives the moment its outputs were committed. JVM and session start-up and
    query planning before the first trigger are excluded.
    """
    busy = [e for e in events if e.get("numInputRows", 0) > 0]
    if not busy:
        return None
    start = min(epoch(e["timestamp"]) for e in busy)
    end = max(
        epoch(e["timestamp"]) + e.get("durationMs", {}).get("triggerExecution", 0) / 1000
        for e in busy
    )
    return start, end


def input_rows(events: list[dict]) -> int:
    """Rows read over distinct batches of the reported progress."""
    by_batch = {e["batchId"]: e.get("numInputRows", 0) for e in events}
    return sum(by_batch.values())


class ProgressLog:
    """Every progress report of some queries, kept beyond Spark's last-100 buffer."""

    def __init__(self, queries: list[StreamingQuery]):
        self.queries = queries
        self.events: dict[str, dict[int, dict]] = {q.name: {} for q in queries}

    def poll(self) -> None:
        for query in self.queries:
            for event in progress_events(query):
                self.events[query.name][event["batchId"]] = event

    def of(self, name: str) -> list[dict]:
        return [self.events[name][b] for b in sorted(self.events[name])]

    def all(self) -> list[dict]:
        return [e for name in self.events for e in self.of(name)]


# --- production -------------------------------------------------------------------------


def production_run(
    spark: SparkSession,
    kafka: KafkaSettings,
    paths: StreamPaths,
    model: PipelineModel,
    promotion: Promotion,
    settings: RunSettings,
    challenger: tuple[Promotion, PipelineModel] | None = None,
) -> ScoringRun:
    """The product's run of the scoring stream (not started: call ``run``).

    ``challenger`` (its promotion and model) is scored in shadow beside ``model``.
    """
    named, challenger_model = challenger if challenger is not None else (None, None)
    writer = ScoringBatchWriter(
        spark,
        kafka,
        paths,
        model,
        promotion,
        delivers_alerts=not settings.is_realtime,
        early_alerts_max_messages=settings.stream.early_alerts_max_messages,
        challenger=named,
        challenger_model=challenger_model,
    )
    return ScoringRun(spark, kafka, paths, writer, settings)


def run_production_backlog(run: ScoringRun) -> list[dict]:
    """Drain the backlog as the bounded scoring op does; every progress report of its queries."""
    run.run(poll_seconds=0.5)
    return [event for query in run.queries for event in progress_events(query)]


class LiveRun:
    """An unbounded :class:`ScoringRun` in a background thread, until :meth:`stop`."""

    def __init__(self, run: ScoringRun):
        self.run = run
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._target, name="bench-live-run", daemon=True)

    def _target(self) -> None:
        try:
            self.run.run(stop_requested=self._stop.is_set, poll_seconds=0.5)
        except BaseException as error:  # reported by check() in the harness's thread
            self.error = error

    def start(self, timeout_s: float = 120.0) -> "LiveRun":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while self.run.scoring is None or (
            self.run.settings.bounded is False and self.run.kpis is None
        ):
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError("the production run did not start its queries in time")
            time.sleep(0.1)
        return self

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the production run failed: {self.error}") from self.error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=180)
        self.check()


# --- Spark's floors: Kafka -> Kafka copies ------------------------------------------------


def start_bare_copy(
    spark: SparkSession,
    kafka: KafkaSettings,
    checkpoint_dir: Path,
    trigger_interval: str | None = None,
    realtime_interval: str | None = None,
    consumer_options: dict[str, str] | None = None,
) -> StreamingQuery:
    """Copy every message of ``transactions`` to the alerts topic: no parse, no score.

    Micro-batch with ``trigger_interval`` (the production trigger), or real-time mode with
    ``realtime_interval`` (the production checkpoint interval).
    """
    copy = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.transactions)
        .option("startingOffsets", "earliest")
        .options(**(consumer_options or {}))
        .load()
        .select("key", "value")
        .writeStream.queryName("bare_realtime" if realtime_interval else "bare_microbatch")
        .format("kafka")
        .options(**kafka.spark_options())
        .option("topic", kafka.topics.alerts)
        .option("checkpointLocation", str(checkpoint_dir))
    )
    if realtime_interval is not None:
        return copy.outputMode("update").trigger(realTime=realtime_interval).start()
    return copy.trigger(
        processingTime=trigger_interval or StreamSettings().trigger_interval
    ).start()


def scoring_chain(records: DataFrame, model: PipelineModel, promotion: Promotion) -> DataFrame:
    """``parse -> filter_valid -> score`` alerts without a cache (the real-time path's plan)."""
    return score_transactions(
        model, filter_valid(parse_transactions(records)), promotion.threshold, promotion.version
    ).where("is_alert")


def executed_plan(df: DataFrame, mode: str = "formatted") -> str:
    """``df.explain(mode)`` as text (the physical plan after optimization)."""
    jvm = df.sparkSession.sparkContext._jvm
    return jvm.PythonSQLUtils.explainString(df._jdf.queryExecution(), mode)


def count_from_json(plan: str) -> int:
    """How many ``from_json`` expressions a plan evaluates."""
    return plan.count("from_json(")


# --- reference style ----------------------------------------------------------------------


def _reference_scored(
    spark: SparkSession, kafka: KafkaSettings, model: PipelineModel, threshold: float
) -> DataFrame:
    probability_of_fraud = F.udf(lambda v: float(v[1]), T.DoubleType())
    raw = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.topics.transactions)
        .option("startingOffsets", "earliest")
        .load()
    )
    parsed = raw.select(
        F.from_json(F.col("value").cast("string"), TRANSACTION_MESSAGE_SCHEMA).alias("j")
    ).select("j.*")
    parsed = parsed.withColumn("event_time", F.to_timestamp("event_time"))
    scored = model.transform(parsed).withColumn("fraud_prob", probability_of_fraud("probability"))
    return scored.withColumn("is_alert", F.col("fraud_prob") >= F.lit(threshold)).withColumn(
        "prediction", F.col("is_alert").cast("int")
    )


def start_reference_style(
    spark: SparkSession,
    kafka: KafkaSettings,
    out_dir: Path,
    model: PipelineModel,
    threshold: float,
) -> list[StreamingQuery]:
    """Start the three reference-style queries (Spark defaults set around their start)."""
    previous = {key: spark.conf.get(key) for key in REFERENCE_CONF}
    for key, value in REFERENCE_CONF.items():
        spark.conf.set(key, value)
    queries: list[StreamingQuery] = []
    try:
        alert_fields = ["transaction_id", "event_time", "Amount", "Class", "fraud_prob"]
        alert_fields += ["is_alert", "prediction"]
        alerts = _reference_scored(spark, kafka, model, threshold).where("is_alert")
        queries.append(
            alerts.select(
                F.col("transaction_id").alias("key"),
                F.to_json(F.struct(*alert_fields)).alias("value"),
            )
            .writeStream.queryName("reference_alerts_kafka")
            .format("kafka")
            .options(**kafka.spark_options())
            .option("topic", kafka.topics.alerts)
            .option("checkpointLocation", str(out_dir / "checkpoints" / "alerts_kafka"))
            .start()
        )
        alerts = _reference_scored(spark, kafka, model, threshold).where("is_alert")
        queries.append(
            alerts.select(*alert_fields)
            .writeStream.queryName("reference_alerts_parquet")
            .format("parquet")
            .option("path", str(out_dir / "alerts"))
            .option("checkpointLocation", str(out_dir / "checkpoints" / "alerts_parquet"))
            .start()
        )
        scored = _reference_scored(spark, kafka, model, threshold)
        is_fraud = F.coalesce(F.col("Class") == 1, F.lit(False))
        kpis = (
            scored.withWatermark("event_time", "2 minutes")
            .groupBy(F.window("event_time", "1 minute"))
            .agg(
                F.count(F.lit(1)).alias("n_txn"),
                F.sum(F.col("prediction")).alias("n_alert"),
                F.count_if(is_fraud).alias("n_fraud_true"),
                F.count_if(F.col("is_alert") & is_fraud).alias("tp"),
            )
        )
        queries.append(
            kpis.writeStream.queryName("reference_kpis")
            .format("parquet")
            .outputMode("append")
            .option("path", str(out_dir / "kpis"))
            .option("checkpointLocation", str(out_dir / "checkpoints" / "kpis"))
            .start()
        )
    except BaseException:
        for query in queries:
            query.stop()
        raise
    finally:
        for key, value in previous.items():
            spark.conf.set(key, value)
    return queries


def _settled(events: list[dict], quiet_s: float = 2.0) -> bool:
    """The last batch ran without input (e.g. the watermark-only batch), or ended a while ago.

    With the default trigger Spark loops continuously, so ``isTriggerActive`` is no sign of
    idleness; the age of the last batch is.
    """
    last = events[-1]
    if last.get("numInputRows", 0) == 0:
        return True
    ended = epoch(last["timestamp"]) + last.get("durationMs", {}).get("triggerExecution", 0) / 1e3
    return time.time() - ended > quiet_s


def drain(queries: list[StreamingQuery], messages: int, timeout_s: float) -> list[dict]:
    """Wait until every query has read ``messages`` rows and settled, then stop them all.

    Returns every progress report. Raises if a query fails or the backlog is not read in
    ``timeout_s``.
    """
    log = ProgressLog(queries)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            log.poll()
            for query in queries:
                if query.exception() is not None:
                    raise RuntimeError(f"query {query.name} failed: {query.exception()}")
            done = all(
                input_rows(log.of(q.name)) >= messages and _settled(log.of(q.name)) for q in queries
            )
            if done:
                return log.all()
            if time.monotonic() > deadline:
                read = {q.name: input_rows(log.of(q.name)) for q in queries}
                raise TimeoutError(f"backlog of {messages} not drained in {timeout_s} s: {read}")
            time.sleep(0.5)
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
