"""One benchmark run: broker, data, model, the pipelines' throughput and latency, the report.

Order of a run (every step on the same machine, in one process that is also the Spark
driver):

1. an embedded Kafka broker on a free port, state under ``<run>/kafka``;
2. the audit of the real dataset (:mod:`fraud_assets.core.audit`) and a logistic
   regression trained with :mod:`fraud_assets.core.train` on its earliest 80%, its
   threshold the max-F1 one on the holdout, saved and promoted in the run's own registry
   (a fresh model per run: the benchmark depends on nothing under ``var/`` but the jars);
3. every audited transaction, pre-serialized, loaded into one topic (``generator_tps``);
4. throughput: each pipeline drains that backlog; alert ids are compared with batch scoring;
5. latency: each pipeline runs live while the paced generator offers 1k/5k/10k tx/s.
"""

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyspark
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fraud_assets.bench import generator, ladder, pipelines
from fraud_assets.bench.latency import ResourceSampler, latency_summary
from fraud_assets.bench.plain_python import linear_model_of
from fraud_assets.core import train
from fraud_assets.core.audit import audited_transactions, raw_transactions
from fraud_assets.core.evaluate import average_precision, scored_slice
from fraud_assets.core.kpis import KpiSettings
from fraud_assets.core.paths import ProjectPaths, StreamPaths
from fraud_assets.core.realtime import RealtimeSettings, start_realtime_alert_query
from fraud_assets.core.reconcile import (
    expected_alert_ids,
    kafka_alert_ids,
    parquet_alert_ids,
    reconcile_alerts,
)
from fraud_assets.core.registry import Promotion
from fraud_assets.core.scoring import parse_transactions
from fraud_assets.core.selection import recommend_max_f1, threshold_sweep
from fraud_assets.core.settings import KafkaSettings, SparkSettings, Topics
from fraud_assets.core.spark import get_spark, require_connector_jars
from fraud_assets.core.stream import StreamSettings, read_transactions_batch
from fraud_assets.kafka.admin import TopicSpec, ensure_topics
from fraud_assets.kafka.broker import BrokerSettings, EmbeddedKafka, free_port
from fraud_assets.kafka.io import read_topic
from fraud_assets.kafka.producer import read_audited_rows

log = logging.getLogger(__name__)

PIPELINES = ("production", "reference_style", "plain_python")
LATENCY_PIPELINES = (*PIPELINES, "production_realtime")
SAMPLER_EXCLUDE = ("kafka.Kafka", "fraud_assets.bench.generator", "fraud_assets.bench.plain")
"""The broker, the load generator and the plain-Python process are not the Spark pipeline."""


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures, and with which settings."""

    home: Path
    run_dir: Path
    dataset_csv: Path
    rates: tuple[int, ...] = (1000, 5000, 10000)
    seconds_per_rate: float = 20.0
    warm_up_seconds: float = 10.0
    """Untimed paced load at the first rate before the timed ones, for every pipeline: the
    first seconds of a fresh JVM query (class loading, JIT) are not its steady state."""
    alert_every: int = 50
    """In latency runs every ``alert_every``-th message is a transaction the model alerts
    on (2%: enough timed alerts for a p99 at 1k tx/s); the others never alert."""
    transactions_partitions: int = 2
    stream: StreamSettings = StreamSettings()
    kpi: KpiSettings = KpiSettings()
    realtime_checkpoint_interval: str = RealtimeSettings().checkpoint_interval
    spark_master: str = "local[*]"
    shuffle_partitions: int = SparkSettings().shuffle_partitions
    driver_memory: str = SparkSettings().driver_memory
    pipelines: tuple[str, ...] = PIPELINES
    latency_pipelines: tuple[str, ...] = LATENCY_PIPELINES
    drain_timeout_s: float = 600.0
    ladder_warm_up_per_partition: int = 20_000
    """Records per partition each cost-ladder rung reads untimed before its timed run."""
    subset_rows: int | None = None
    """Smoke runs: only the first ``subset_rows`` audited transactions and every fraud."""
    smoke: bool = False


@dataclass
class Context:
    """What every phase shares."""

    config: BenchConfig
    spark: SparkSession
    bootstrap_servers: str
    model: PipelineModel
    promotion: Promotion
    model_json: Path
    audited_dir: Path
    expected: set[str]


# --- set-up ------------------------------------------------------------------------------


def _kafka(ctx: Context, prefix: str, partitions: int | None = None) -> KafkaSettings:
    """Topics of one pipeline run; alert topics stamp LogAppendTime (the broker's clock)."""
    topics = Topics(
        transactions=f"{prefix}.transactions",
        alerts=f"{prefix}.alerts",
        dead_letter=f"{prefix}.dlq",
        kpis=f"{prefix}.kpis",
    )
    n = partitions or ctx.config.transactions_partitions
    ensure_topics(
        ctx.bootstrap_servers,
        [
            TopicSpec(topics.transactions, partitions=n),
            TopicSpec(topics.alerts, config=(("message.timestamp.type", "LogAppendTime"),)),
            TopicSpec(topics.dead_letter),
            TopicSpec(topics.kpis),
        ],
    )
    return KafkaSettings(
        bootstrap_servers=ctx.bootstrap_servers, topics=topics, transactions_partitions=n
    )


def prepare_model(spark: SparkSession, config: BenchConfig) -> tuple[PipelineModel, Promotion]:
    """Audit the dataset, train an LR model on its earliest 80%, pick the max-F1 threshold.

    The threshold is chosen on the held-out 20% (the benchmark reports speed, not model
    quality, so no separate validation slice is spent). The model stays in memory; the run
    depends on no registry under ``var/``.
    """
    audited_dir = config.run_dir / "tables" / "audited_transactions"
    raw = raw_transactions(spark, config.dataset_csv)
    if config.subset_rows is not None:
        raw = raw.where((F.col("row_index") < config.subset_rows) | (F.col("Class") == 1))
    audited = audited_transactions(raw)
    audited.write.mode("errorifexists").parquet(str(audited_dir))
    audited = spark.read.parquet(str(audited_dir))
    train_df, holdout_df = train.time_ordered_split(audited, 0.2)
    model = train.fit(train_df.cache(), train.TrainingConfig(algorithm="lr"))
    train_df.unpersist()
    holdout = scored_slice(model, holdout_df)
    choice = recommend_max_f1(threshold_sweep(holdout))
    # The chosen threshold is one transaction's exact score; halfway down to the next lower
    # score alerts on the same rows, and no float difference between engines (numpy in the
    # plain-Python baseline) can flip a row sitting exactly on it.
    below = holdout.scores[holdout.scores < choice.threshold]
    threshold = (choice.threshold + below.max()) / 2 if below.size else choice.threshold
    promotion = Promotion(
        version=f"lr-bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}",
        threshold=float(threshold),
        policy=choice.policy,
        promoted_at=datetime.now(UTC).isoformat(),
        pr_auc=float(average_precision(holdout.labels, holdout.scores)),
    )
    return model, promotion


def _spark_settings(config: BenchConfig) -> SparkSettings:
    return SparkSettings(
        master=config.spark_master,
        app_name="fraud_assets_bench",
        driver_memory=config.driver_memory,
        shuffle_partitions=config.shuffle_partitions,
        connector_jars_dir=ProjectPaths(config.home).spark_jars_dir,
    )


# --- throughput -----------------------------------------------------------------------------


def _alert_ids(ctx: Context, topic: str) -> list[str]:
    records = read_topic(ctx.bootstrap_servers, topic)
    return kafka_alert_ids([r.value for r in records], [r.key for r in records])


def _reference_alert_ids(ctx: Context, topic: str) -> list[str]:
    """Reference alerts carry the notebook fields only; their key is the transaction id."""
    records = read_topic(ctx.bootstrap_servers, topic)
    return [json.loads(r.value)["transaction_id"] for r in records]


def _correctness(expected: set[str], kafka_ids: list[str], parquet_ids: list[str] | None) -> dict:
    if parquet_ids is None:  # no Parquet sink: compare Kafka with itself on that side
        parquet_ids = sorted(set(kafka_ids))
    result = reconcile_alerts(expected, parquet_ids, kafka_ids).as_dict()
    return {k: v for k, v in result.items() if k not in ("missing_ids", "unexpected_ids")} | {
        "missing_ids": result["missing_ids"][:5],
        "unexpected_ids": result["unexpected_ids"][:5],
    }


def _throughput(messages: int, window: tuple[float, float] | None) -> float | None:
    if window is None or window[1] <= window[0]:
        return None
    return round(messages / (window[1] - window[0]), 1)


def throughput_production(ctx: Context, backlog: KafkaSettings, messages: int) -> dict:
    """Drain the backlog with the production queries; throughput and correctness."""
    kafka = _kafka(ctx, "tp-production")
    kafka = replace(kafka, topics=replace(kafka.topics, transactions=backlog.topics.transactions))
    paths = StreamPaths.under(
        ctx.config.run_dir / "production" / "tables",
        ctx.config.run_dir / "production" / "checkpoints",
    )
    with ResourceSampler(os.getpid(), SAMPLER_EXCLUDE) as sampler:
        events, writer = pipelines.run_production_backlog(
            ctx.spark, kafka, paths, ctx.model, ctx.promotion, ctx.config.stream, ctx.config.kpi
        )
    window = pipelines.busy_window(events)
    kafka_ids = _alert_ids(ctx, kafka.topics.alerts)
    parquet_ids = parquet_alert_ids(ctx.spark, paths.alerts_table)
    return {
        "tps": _throughput(messages, window),
        "scored": writer.totals.scored,
        "batches": writer.totals.batches,
        "seconds": round(window[1] - window[0], 2) if window else None,
        "resources": sampler.usage.as_dict(),
        "correctness": _correctness(ctx.expected, kafka_ids, parquet_ids),
    }


def throughput_reference(ctx: Context, backlog: KafkaSettings, messages: int) -> dict:
    """Drain the backlog with the three reference-style queries."""
    kafka = _kafka(ctx, "tp-reference")
    kafka = replace(kafka, topics=replace(kafka.topics, transactions=backlog.topics.transactions))
    out_dir = ctx.config.run_dir / "reference_style"
    with ResourceSampler(os.getpid(), SAMPLER_EXCLUDE) as sampler:
        queries = pipelines.start_reference_style(
            ctx.spark, kafka, out_dir, ctx.model, ctx.promotion.threshold
        )
        events = pipelines.drain(queries, messages, ctx.config.drain_timeout_s)
    window = pipelines.busy_window(events)
    kafka_ids = _reference_alert_ids(ctx, kafka.topics.alerts)
    parquet_ids = [r[0] for r in ctx.spark.read.parquet(str(out_dir / "alerts")).collect()]
    return {
        "tps": _throughput(messages, window),
        "seconds": round(window[1] - window[0], 2) if window else None,
        "resources": sampler.usage.as_dict(),
        "correctness": _correctness(ctx.expected, kafka_ids, parquet_ids),
    }


@contextmanager
def plain_python_process(
    ctx: Context, kafka: KafkaSettings, result: Path, expect: int | None
) -> Iterator[subprocess.Popen]:
    """The plain-Python consumer process; stopped (SIGTERM, then kill) on exit."""
    ready = result.with_suffix(".ready")
    command = [
        sys.executable,
        "-m",
        "fraud_assets.bench.plain_python",
        "--bootstrap-servers",
        ctx.bootstrap_servers,
        "--topic",
        kafka.topics.transactions,
        "--alerts-topic",
        kafka.topics.alerts,
        "--model",
        str(ctx.model_json),
        "--ready-file",
        str(ready),
        "--result",
        str(result),
    ]
    if expect is not None:
        command += ["--expect", str(expect)]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"plain-Python consumer did not start (exit {process.poll()})")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def throughput_plain_python(ctx: Context, backlog: KafkaSettings, messages: int) -> dict:
    """Drain the backlog with the plain-Python consumer process."""
    kafka = _kafka(ctx, "tp-plain")
    kafka = replace(kafka, topics=replace(kafka.topics, transactions=backlog.topics.transactions))
    result_path = ctx.config.run_dir / "plain_python" / "throughput.json"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    with plain_python_process(ctx, kafka, result_path, expect=messages) as process:
        with ResourceSampler(process.pid) as sampler:
            process.wait(timeout=ctx.config.drain_timeout_s)
    result = json.loads(result_path.read_text())
    window = (result["first_read_epoch"], result["last_output_epoch"])
    return {
        "tps": _throughput(result["consumed"], window),
        "seconds": round(window[1] - window[0], 2),
        "consumed": result["consumed"],
        "resources": sampler.usage.as_dict(),
        "correctness": _correctness(ctx.expected, _alert_ids(ctx, kafka.topics.alerts), None),
    }


# --- latency ------------------------------------------------------------------------------


def _latency_messages(
    ctx: Context, rate: int, alert_rows: list, quiet_rows: list, seconds: float, prefix: str
):
    """``rate * seconds`` messages: every ``alert_every``-th an alerting row, under new ids."""
    count = int(rate * seconds)
    rows, ids, timed = [], [], set()
    for i in range(count):
        tid = f"{prefix}{rate}-{i:07d}"
        if i % ctx.config.alert_every == 0:
            rows.append(alert_rows[(i // ctx.config.alert_every) % len(alert_rows)])
            timed.add(tid.encode())
        else:
            rows.append(quiet_rows[i % len(quiet_rows)])
        ids.append(tid)
    return generator.encode_rows(rows, ids), timed


def _wait_for_alerts(
    ctx: Context, topic: str, wanted: set[str], timeout_s: float
) -> list[tuple[str, int]]:
    """Alert ``(transaction_id, timestamp)`` pairs, once ``wanted`` arrived or time ran out."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_topic(ctx.bootstrap_servers, topic)
        pairs = [(r.key.decode(), r.timestamp_ms) for r in records if r.key is not None]
        if wanted <= {p[0] for p in pairs} or time.monotonic() > deadline:
            return pairs
        time.sleep(1.0)


def _paced_run(
    ctx: Context, kafka: KafkaSettings, rate: int, rows: tuple, seconds: float, prefix: str
) -> tuple[dict, dict]:
    """Offer ``rate`` tx/s for ``seconds`` under ids starting with ``prefix``; alert latency."""
    messages, timed = _latency_messages(ctx, rate, *rows, seconds=seconds, prefix=prefix)
    work = ctx.config.run_dir / "latency-jobs"
    work.mkdir(parents=True, exist_ok=True)
    name = f"{kafka.topics.transactions}-{prefix}{rate}"
    job, result = work / f"{name}.pkl", work / f"{name}.json"
    generator.write_job(job, messages, timed)
    del messages
    command = [
        sys.executable,
        "-m",
        "fraud_assets.bench.generator",
        "--bootstrap-servers",
        ctx.bootstrap_servers,
        "--topic",
        kafka.topics.transactions,
        "--job",
        str(job),
        "--rate",
        str(rate),
        "--result",
        str(result),
    ]
    subprocess.run(command, check=True, timeout=seconds * 4 + 60)
    job.unlink()
    produced = json.loads(result.read_text())
    created = produced["create_ms"]
    drain_s = max(30.0, seconds)
    alerts = _wait_for_alerts(ctx, kafka.topics.alerts, set(created), drain_s)
    return latency_summary(created, alerts), produced["result"]


def _wait_until_live(
    ctx: Context, kafka: KafkaSettings, alert_rows: list, timeout_s: float
) -> None:
    """Send alerting messages until one comes back: the pipeline is live end to end."""
    from fraud_assets.kafka.io import produce_messages

    deadline = time.monotonic() + timeout_s
    sent: set[str] = set()
    round_ = 0
    while True:
        ids = [f"warmup-{round_}-{i}" for i in range(5)]
        produce_messages(
            ctx.bootstrap_servers,
            kafka.topics.transactions,
            generator.encode_rows(alert_rows[:5], ids),
        )
        sent |= set(ids)
        alerts = _wait_for_alerts(ctx, kafka.topics.alerts, set(ids), 10.0)
        if sent & {a[0] for a in alerts}:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no alert came back from {kafka.topics.alerts} in {timeout_s} s")
        round_ += 1


def latency_pipeline(ctx: Context, name: str, rows: tuple) -> dict:
    """Run ``name`` live through every offered rate; per-rate latency and resources."""
    config = ctx.config
    # The real-time query holds one core per input partition for its whole life.
    partitions = 1 if name == "production_realtime" else None
    kafka = _kafka(ctx, f"lat-{name}", partitions)
    base = config.run_dir / "latency" / name
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        if name == "plain_python":
            result_path = base / "result.json"
            base.mkdir(parents=True, exist_ok=True)
            process = stack.enter_context(plain_python_process(ctx, kafka, result_path, None))
            root, exclude = process.pid, ()
        else:
            if name == "production":
                paths = StreamPaths.under(base / "tables", base / "checkpoints")
                queries = pipelines.start_production_live(
                    ctx.spark, kafka, paths, ctx.model, ctx.promotion, config.stream, config.kpi
                )
            elif name == "reference_style":
                queries = pipelines.start_reference_style(
                    ctx.spark, kafka, base, ctx.model, ctx.promotion.threshold
                )
            else:
                queries = [
                    start_realtime_alert_query(
                        ctx.spark,
                        kafka,
                        base / "checkpoint",
                        ctx.model,
                        ctx.promotion,
                        RealtimeSettings(
                            checkpoint_interval=config.realtime_checkpoint_interval,
                            starting_offsets="earliest",
                        ),
                    )
                ]
            stack.callback(lambda: [q.stop() for q in queries if q.isActive])
            root, exclude = os.getpid(), SAMPLER_EXCLUDE
        _wait_until_live(ctx, kafka, rows[0], timeout_s=300.0)
        if config.warm_up_seconds > 0:
            warm, _ = _paced_run(
                ctx, kafka, config.rates[0], rows, config.warm_up_seconds, prefix="w"
            )
            out["warm_up"] = warm | {"offered_tps": config.rates[0]}
            log.info("latency %s warm-up (untimed in the report's rates): %s", name, warm)
        for rate in config.rates:
            with ResourceSampler(root, exclude) as sampler:
                summary, produced = _paced_run(
                    ctx, kafka, rate, rows, config.seconds_per_rate, prefix="r"
                )
            if name != "plain_python":
                failed = [q.name for q in queries if q.exception() is not None]
                if failed:
                    raise RuntimeError(f"{failed} failed: {queries[0].exception()}")
            out[str(rate)] = summary | {
                "offered_tps": rate,
                "generator_achieved_tps": round(produced["rate_tps"], 1),
                "resources": sampler.usage.as_dict(),
            }
            log.info("latency %s @ %d tx/s: %s", name, rate, summary)
    return out


# --- the whole run ------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "spark": pyspark.__version__,
        "kafka": "4.1.1 (embedded, kafka_2.13)",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written by the CLI)."""
    paths = ProjectPaths(config.home)
    require_connector_jars(paths.spark_jars_dir)
    started = time.monotonic()
    timings: dict[str, float] = {}
    report: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(), "smoke": config.smoke}

    def lap(stage: str, since: float) -> float:
        now = time.monotonic()
        timings[stage] = round(now - since, 1)
        return now

    with ExitStack() as stack:
        broker = stack.enter_context(
            EmbeddedKafka(
                BrokerSettings(
                    state_dir=config.run_dir / "kafka",
                    jars_dir=paths.kafka_jars_dir,
                    port=free_port(),
                    heap="1g",
                )
            )
        )
        report["machine"] = _machine()
        t = lap("broker_start", started)
        spark = get_spark(_spark_settings(config))
        # Stop Spark before the broker: its cached Kafka producers would retry a dead broker.
        stack.callback(spark.stop)
        model, promotion = prepare_model(spark, config)
        audited_dir = config.run_dir / "tables" / "audited_transactions"
        audited = spark.read.parquet(str(audited_dir))
        expected = expected_alert_ids(model, audited, promotion)
        model_json = config.run_dir / "linear_model.json"
        linear_model_of(model, promotion.threshold, promotion.version).save(model_json)
        ctx = Context(
            config,
            spark,
            broker.bootstrap_servers,
            model,
            promotion,
            model_json,
            audited_dir,
            expected,
        )
        t = lap("audit_train", t)

        # The backlog: every audited transaction, pre-serialized, then produced.
        total, rows = read_audited_rows(audited_dir)
        messages = generator.encode_rows(rows)
        backlog = _kafka(ctx, "backlog")
        loaded = generator.produce_all(ctx.bootstrap_servers, backlog.topics.transactions, messages)
        del messages
        report["generator_tps"] = round(loaded.rate_tps, 1)
        report["backlog_messages"] = total
        t = lap("load_backlog", t)

        report["from_json_count"] = _plans(spark, backlog, model, promotion, config.run_dir)

        throughput: dict[str, Any] = {}
        runners = {
            "production": throughput_production,
            "reference_style": throughput_reference,
            "plain_python": throughput_plain_python,
        }
        for name in config.pipelines:
            log.info("throughput: %s draining %d messages", name, total)
            try:
                throughput[name] = runners[name](ctx, backlog, total)
            except Exception as error:  # one pipeline failing must not hide the others
                log.exception("throughput run of %s failed", name)
                throughput[name] = _failed(error)
            log.info("throughput %s: %s tx/s", name, throughput[name]["tps"])
            t = lap(f"throughput_{name}", t)

        # After the throughput runs: its warm-up passes would otherwise warm the JVM for them.
        report["cost_ladder"] = ladder.cost_ladder(
            spark,
            backlog,
            model,
            promotion,
            cores=os.cpu_count() or 1,
            scratch_dir=config.run_dir / "ladder",
            warm_up_per_partition=config.ladder_warm_up_per_partition,
            on_rung=lambda name, rung: log.info("cost ladder %s: %s", name, rung),
        )
        report["cost_ladder_exact"] = all(
            rung["rows"] == total and rung["alerts"] in (None, len(expected))
            for rung in report["cost_ladder"].values()
        )
        t = lap("cost_ladder", t)

        alert_rows, quiet_rows = _latency_rows(audited_dir, audited, model, promotion)
        latency: dict[str, Any] = {}
        for name in config.latency_pipelines:
            try:
                latency[name] = latency_pipeline(ctx, name, (alert_rows, quiet_rows))
            except Exception as error:  # one pipeline failing must not hide the others
                log.exception("latency run of %s failed", name)
                latency[name] = {"error": _failed(error)["error"]}
            t = lap(f"latency_{name}", t)

    report |= _summarize(config, promotion, throughput, latency)
    report["stage_seconds"] = timings
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def _plans(
    spark: SparkSession,
    kafka: KafkaSettings,
    model: PipelineModel,
    promotion: Promotion,
    run_dir: Path,
) -> dict[str, int]:
    """Write ``plan.txt`` and count ``from_json`` in the executed plans.

    ``foreachBatch`` hides the per-batch plan from ``query.explain()``, so the plans are
    the same functions over a batch read of the same topic: the parse that
    ``ScoringBatchWriter`` caches once per micro-batch (validation, dead letters and scoring
    then read the cache), and the uncached parse -> validate -> score chain that the
    real-time path runs, with our settings and with Spark's default JSON optimizer.
    """
    records = read_transactions_batch(spark, kafka)
    parse_plan = pipelines.executed_plan(parse_transactions(records))
    chain_plan = pipelines.executed_plan(pipelines.scoring_chain(records, model, promotion))
    spark.conf.set(pipelines.JSON_OPTIMIZER_CONF, "true")
    try:
        default_plan = pipelines.executed_plan(pipelines.scoring_chain(records, model, promotion))
    finally:
        spark.conf.set(pipelines.JSON_OPTIMIZER_CONF, "false")
    (run_dir / "plan.txt").write_text(
        "# Micro-batch: parse_transactions(records), cached by ScoringBatchWriter\n"
        f"{parse_plan}\n\n"
        "# parse -> filter_valid -> score_transactions -> alerts, uncached (real-time path)\n"
        f"{chain_plan}\n"
    )
    return {
        "production_microbatch_parse": pipelines.count_from_json(parse_plan),
        "uncached_scoring_chain": pipelines.count_from_json(chain_plan),
        "uncached_scoring_chain_json_optimizer_default": pipelines.count_from_json(default_plan),
    }


def _latency_rows(
    audited_dir: Path, audited: Any, model: PipelineModel, promotion: Promotion
) -> tuple[list[dict], list[dict]]:
    """Audited rows that alert, and rows far below the threshold (as producer rows)."""
    from fraud_assets.core.scoring import score_transactions

    scored = score_transactions(model, audited, promotion.threshold, promotion.version)
    # Keep away from the threshold so float differences between engines cannot flip them.
    alert_ids = scored.where(F.col("fraud_prob") >= promotion.threshold + 1e-6)
    quiet_ids = scored.where(F.col("fraud_prob") < promotion.threshold / 2).limit(20000)

    def rows_of(df: Any) -> list[dict]:
        keep = {r[0] for r in df.select("transaction_id").collect()}
        return list(read_audited_rows(audited_dir, transaction_ids=keep)[1])

    return rows_of(alert_ids), rows_of(quiet_ids)


def _failed(error: Exception) -> dict[str, Any]:
    """A pipeline's entry when its run raised: no figures, a failed correctness check."""
    text = f"{type(error).__name__}: {error}".splitlines()[0][:500]
    return {
        "tps": None,
        "error": text,
        "resources": {"peak_rss_mb": None, "cpu_seconds": None, "avg_cores": None},
        "correctness": {"exact": False, "error": text},
    }


def _summarize(config: BenchConfig, promotion: Promotion, throughput: dict, latency: dict) -> dict:
    tps = {name: result.get("tps") for name, result in throughput.items()}

    def ratio(other: str) -> float | None:
        if tps.get("production") and tps.get(other):
            return round(tps["production"] / tps[other], 2)
        return None

    latency_ms = {
        name: {
            rate: {k: v[k] for k in ("p50", "p95", "p99")}
            for rate, v in points.items()
            if isinstance(v, dict) and "p50" in v and rate != "warm_up"
        }
        for name, points in latency.items()
    }
    rss = {name: r["resources"]["peak_rss_mb"] for name, r in throughput.items()}
    cpu = {
        name: {k: r["resources"][k] for k in ("cpu_seconds", "avg_cores")}
        for name, r in throughput.items()
    }
    for name, points in latency.items():
        for rate, point in points.items():
            if isinstance(point, dict) and "resources" in point:
                rss[f"{name}@{rate}"] = point["resources"]["peak_rss_mb"]
                cpu[f"{name}@{rate}"] = {
                    k: point["resources"][k] for k in ("cpu_seconds", "avg_cores")
                }
    return {
        "throughput_tps": tps,
        "ratio_vs_reference_style": ratio("reference_style"),
        "ratio_vs_plain_python": ratio("plain_python"),
        "latency_ms": latency_ms,
        "rss_mb": rss,
        "cpu": cpu,
        "correctness": {name: r["correctness"] for name, r in throughput.items()},
        "throughput_details": throughput,
        "latency_details": latency,
        "model": {
            "version": promotion.version,
            "threshold": promotion.threshold,
            "pr_auc": promotion.pr_auc,
        },
        "settings": {
            "spark_master": config.spark_master,
            "shuffle_partitions": config.shuffle_partitions,
            "driver_memory": config.driver_memory,
            "transactions_partitions": config.transactions_partitions,
            "stream": asdict(config.stream),
            "kpi": asdict(config.kpi),
            "realtime_checkpoint_interval": config.realtime_checkpoint_interval,
            "rates": list(config.rates),
            "seconds_per_rate": config.seconds_per_rate,
            "warm_up_seconds": config.warm_up_seconds,
            "alert_every": config.alert_every,
        },
    }
