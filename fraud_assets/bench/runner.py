"""One benchmark run: broker, data, model, every pipeline's throughput and latency, the report.

Order of a run (every step on the same machine, in one process that is also the Spark
driver):

1. an embedded Kafka broker on a free port, state under ``<run>/kafka``; one Spark session
   (``local[*]``, production settings, Spark's event log on: ``<run>/spark-events``);
2. the audit of the real dataset and a logistic regression trained on its earliest 80%, its
   threshold the max-F1 one on the holdout (a fresh model per run: the benchmark depends on
   nothing under ``var/`` but the jars);
3. the backlog (:mod:`fraud_assets.bench.backlog`): the dataset under fresh ids, at least a
   million messages, pre-serialized and produced (``generator_tps``), and its slice;
4. throughput (:mod:`fraud_assets.bench.throughput`), then the cost ladder on the slice;
5. latency of the micro-batch pipelines, with the fixed cost of a micro-batch
   (:mod:`fraud_assets.bench.live`);
6. a second Spark session sized for real-time delivery as the product sizes it (``local[*]``
   plus a slot per input partition), and the real-time latency runs;
7. the profile of the production micro-batches from Spark's event log
   (:mod:`fraud_assets.bench.timeline`), the goals, the report.
"""

import logging
import os
import platform
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyspark
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fraud_assets.bench import backlog as backlogs
from fraud_assets.bench import cli, generator, ladder, live, pipelines, throughput, timeline
from fraud_assets.bench.plain_python import linear_model_of
from fraud_assets.core import train
from fraud_assets.core.audit import audited_transactions, raw_transactions
from fraud_assets.core.evaluate import average_precision, scored_slice
from fraud_assets.core.explain import top_features
from fraud_assets.core.kpis import KpiSettings
from fraud_assets.core.paths import ProjectPaths, StreamPaths
from fraud_assets.core.realtime import RealtimeSettings
from fraud_assets.core.reconcile import expected_alert_ids
from fraud_assets.core.registry import Promotion
from fraud_assets.core.scoring import ledger_projection, ledger_rows, parse_transactions
from fraud_assets.core.selection import recommend_max_f1, threshold_sweep
from fraud_assets.core.settings import KafkaSettings, SparkSettings, Topics
from fraud_assets.core.spark import get_spark, require_connector_jars, stop_spark
from fraud_assets.core.stream import StreamSettings, read_transactions_batch
from fraud_assets.core.stream_run import MICROBATCH, REALTIME, RunSettings
from fraud_assets.kafka.admin import TopicSpec, ensure_topics
from fraud_assets.kafka.broker import BrokerSettings, EmbeddedKafka, free_port
from fraud_assets.kafka.producer import read_audited_rows

log = logging.getLogger(__name__)

THROUGHPUT_PIPELINES = cli.THROUGHPUT_PIPELINES
REALTIME_LATENCY = ("production_realtime", "bare_realtime")
MICROBATCH_LATENCY = tuple(p for p in cli.LATENCY_PIPELINES if p not in REALTIME_LATENCY)
FIXED_COST = ("production", "bare_microbatch", "bare_microbatch_tuned")
"""Pipelines whose small micro-batches give the fixed cost (``microbatch_fixed_ms``)."""
ON_THE_SLICE = ("reference_style", "plain_python")
"""Slow baselines that drain the backlog's slice (one replay of the dataset)."""


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures, and with which settings."""

    home: Path
    run_dir: Path
    dataset_csv: Path
    rates: tuple[int, ...] = (1000, 5000, 10000)
    microbatch_seconds: float = 20.0
    """Window of each rate for the micro-batch pipelines."""
    realtime_seconds: float = 120.0
    """Window of each rate for the real-time ones: long enough to hold checkpoint hand-overs
    (two at the 60 s interval), which a p99 over a short window would miss or overstate."""
    baseline_seconds: float = 10.0
    """Window of each rate for the slow baselines, whose latencies are seconds anyway."""
    warm_up_seconds: float = 10.0
    """Untimed paced load at the first rate before the timed ones, for every pipeline: the
    first seconds of a fresh JVM query (class loading, JIT) are not its steady state."""
    fixed_cost_seconds: float = 20.0
    fixed_cost_rate: float = 5.0
    alert_every: int = 50
    """In latency runs every ``alert_every``-th message is a transaction the model alerts
    on (2%: enough timed alerts for a p99 at 1k tx/s); the others never alert."""
    transactions_partitions: int = 2
    min_backlog: int = backlogs.MIN_BACKLOG
    stream: StreamSettings = StreamSettings()
    kpi: KpiSettings = KpiSettings()
    realtime_checkpoint_interval: str = RealtimeSettings().checkpoint_interval
    spark_master: str = "local[*]"
    shuffle_partitions: int = SparkSettings().shuffle_partitions
    driver_memory: str = SparkSettings().driver_memory
    pipelines: tuple[str, ...] = THROUGHPUT_PIPELINES
    latency_pipelines: tuple[str, ...] = (*MICROBATCH_LATENCY, *REALTIME_LATENCY)
    drain_timeout_s: float = 900.0
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
    backlog: backlogs.Backlog | None = None
    timings: dict[str, float] = field(default_factory=dict)
    challenger: tuple[Promotion, PipelineModel] | None = None
    """A second logistic regression scored in shadow by ``production_shadow``."""


# --- set-up ------------------------------------------------------------------------------


def _kafka(ctx: Context, prefix: str, partitions: int | None = None) -> KafkaSettings:
    """Topics of one pipeline run; alert topics stamp LogAppendTime (the broker's clock)."""
    topics = Topics(
        transactions=f"{prefix}.transactions",
        alerts=f"{prefix}.alerts",
        dead_letter=f"{prefix}.dlq",
        kpis=f"{prefix}.kpis",
        kpi_partials=f"{prefix}.kpi_partials",
    )
    n = partitions or ctx.config.transactions_partitions
    ensure_topics(
        ctx.bootstrap_servers,
        [
            TopicSpec(topics.transactions, partitions=n),
            TopicSpec(topics.alerts, config=(("message.timestamp.type", "LogAppendTime"),)),
            TopicSpec(topics.dead_letter),
            TopicSpec(topics.kpis),
            TopicSpec(topics.kpi_partials),
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


def prepare_challenger(
    spark: SparkSession, config: BenchConfig, promotion: Promotion
) -> tuple[Promotion, PipelineModel]:
    """A second logistic regression (less regularised) on the same training rows.

    Another compiled expression with other coefficients: the cost of a shadow score is that
    of a real second model, which an identical expression (shared by Spark's common
    subexpression elimination) would hide.
    """
    audited = spark.read.parquet(str(config.run_dir / "tables" / "audited_transactions"))
    train_df, _ = train.time_ordered_split(audited, 0.2)
    model = train.fit(train_df, train.TrainingConfig(algorithm="lr", reg_param=0.01))
    version = promotion.version.replace("lr-bench", "lr-bench-challenger")
    return replace(promotion, version=version), model


def spark_settings(config: BenchConfig, reserved_task_slots: int = 0) -> SparkSettings:
    """The production settings, with Spark's event log in the run folder."""
    events = config.run_dir / "spark-events"
    events.mkdir(parents=True, exist_ok=True)
    return SparkSettings(
        master=config.spark_master,
        app_name="fraud_assets_bench",
        driver_memory=config.driver_memory,
        shuffle_partitions=config.shuffle_partitions,
        connector_jars_dir=ProjectPaths(config.home).spark_jars_dir,
        reserved_task_slots=reserved_task_slots,
        extra_conf=(
            ("spark.eventLog.enabled", "true"),
            ("spark.eventLog.dir", events.as_uri()),
            ("spark.eventLog.compress", "false"),
        ),
    )


def load_backlog(ctx: Context, expected_base: set[str]) -> backlogs.Backlog:
    """Encode the backlog once, produce it and its slice; the alert ids expected on each."""
    total, rows = read_audited_rows(ctx.audited_dir)
    rows = list(rows)
    copies = backlogs.copies_for(total, ctx.config.min_backlog)
    messages = backlogs.encode_copies(rows, copies)
    full = _kafka(ctx, "backlog").topics.transactions
    loaded = generator.produce_all(ctx.bootstrap_servers, full, messages)
    part = _kafka(ctx, "slice").topics.transactions
    generator.produce_all(ctx.bootstrap_servers, part, messages[:total])
    return backlogs.Backlog(
        topic=full,
        slice_topic=part,
        copies=copies,
        messages=len(messages),
        slice_messages=total,
        expected=backlogs.copied_ids(expected_base, copies),
        slice_expected=backlogs.copied_ids(expected_base, 1),
        generator_tps=round(loaded.rate_tps, 1),
    )


def _run_settings(config: BenchConfig, delivery: str, bounded: bool) -> RunSettings:
    return RunSettings(
        bounded=bounded,
        delivery=delivery,
        stream=config.stream,
        kpi=config.kpi,
        realtime=RealtimeSettings(checkpoint_interval=config.realtime_checkpoint_interval),
    )


# --- throughput ------------------------------------------------------------------------------


def run_throughput(ctx: Context, name: str) -> dict:
    """Drain the backlog (or its slice, for the slow baselines) with pipeline ``name``."""
    config, b = ctx.config, ctx.backlog
    on_slice = name in ON_THE_SLICE
    target = throughput.Target(
        b.slice_topic if on_slice else b.topic,
        b.slice_messages if on_slice else b.messages,
        b.slice_expected if on_slice else b.expected,
    )
    kafka = _kafka(ctx, f"tp-{name}")
    base = config.run_dir / "throughput" / name
    if name in ("production", "production_shadow"):
        settings = _run_settings(config, MICROBATCH, bounded=True)
        challenger = ctx.challenger if name == "production_shadow" else None
        return throughput.production(
            ctx.spark, kafka, base, ctx.model, ctx.promotion, settings, target, challenger
        )
    if name == "reference_style":
        return throughput.reference_style(
            ctx.spark,
            kafka,
            base,
            ctx.model,
            ctx.promotion.threshold,
            target,
            config.drain_timeout_s,
        )
    module = f"fraud_assets.bench.{name}"
    return throughput.plain_python(
        module, kafka, ctx.model_json, base, target, config.drain_timeout_s
    )


# --- latency ---------------------------------------------------------------------------------


def start_live(ctx: Context, name: str) -> live.LiveHandle:
    """Start ``name`` on fresh topics; the handle the live runs drive it by."""
    config = ctx.config
    kafka = _kafka(ctx, f"lat-{name}")
    base = config.run_dir / "latency" / name
    root, exclude = os.getpid(), throughput.SAMPLER_EXCLUDE
    if name in ("production", "production_realtime"):
        delivery = REALTIME if name == "production_realtime" else MICROBATCH
        paths = StreamPaths.under(base / "tables", base / "checkpoints")
        run = pipelines.production_run(
            ctx.spark,
            kafka,
            paths,
            ctx.model,
            ctx.promotion,
            _run_settings(config, delivery, bounded=False),
        )
        running = pipelines.LiveRun(run).start()
        handle = live.LiveHandle(kafka, running.stop, running.check, root, exclude)
        if delivery == MICROBATCH:
            handle.fixed_cost_query = run.scoring
        else:
            handle.lag_of = live.lag_of(lambda: run.scoring, kafka)
        handle.notes["scoring_query_id"] = run.scoring.id
        return handle
    if name.startswith("bare_"):
        realtime = name == "bare_realtime"
        query = pipelines.start_bare_copy(
            ctx.spark,
            kafka,
            base / "checkpoint",
            trigger_interval=config.stream.trigger_interval,
            realtime_interval=config.realtime_checkpoint_interval if realtime else None,
            consumer_options=config.stream.consumer_options() if name.endswith("_tuned") else None,
        )
        handle = live.LiveHandle(kafka, query.stop, _failure_check(query), root, exclude)
        handle.fixed_cost_query = None if realtime else query
        handle.notes["query_id"] = query.id
        return handle
    if name == "reference_style":
        queries = pipelines.start_reference_style(
            ctx.spark, kafka, base, ctx.model, ctx.promotion.threshold
        )

        def stop() -> None:
            for query in queries:
                if query.isActive:
                    query.stop()

        return live.LiveHandle(kafka, stop, _failure_check(*queries), root, exclude)
    stack = ExitStack()
    process = stack.enter_context(
        throughput.python_consumer(
            f"fraud_assets.bench.{name}",
            ctx.bootstrap_servers,
            kafka,
            ctx.model_json,
            base / "result.json",
            None,
        )
    )
    return live.LiveHandle(kafka, stack.close, root_pid=process.pid)


def _failure_check(*queries: Any):
    def check() -> None:
        for query in queries:
            if query.exception() is not None:
                raise RuntimeError(f"{query.name} failed: {query.exception()}")

    return check


def _plan(config: BenchConfig, name: str) -> live.LivePlan:
    if name in REALTIME_LATENCY:
        seconds = config.realtime_seconds
    elif name in ON_THE_SLICE:
        seconds = config.baseline_seconds
    else:
        seconds = config.microbatch_seconds
    return live.LivePlan(
        rates=config.rates,
        seconds_per_rate=seconds,
        warm_up_seconds=config.warm_up_seconds,
        fixed_cost_seconds=config.fixed_cost_seconds if name in FIXED_COST else 0.0,
        fixed_cost_rate=config.fixed_cost_rate,
        alert_every=config.alert_every,
    )


def run_latency(ctx: Context, name: str, rows: live.Rows) -> dict:
    """One pipeline live through the warm-up, its fixed cost and every rate."""
    handle = start_live(ctx, name)
    try:
        plan = _plan(ctx.config, name)
        if name == "bare_microbatch_tuned":  # reported for its fixed cost only
            plan = replace(plan, rates=(), warm_up_seconds=0.0)
        out = live.run_live(handle, ctx.config.run_dir / "latency-jobs" / name, plan, rows)
    finally:
        handle.stop()
    return out | {"notes": handle.notes}


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
    mark = [started]

    def lap(stage: str) -> None:
        now = time.monotonic()
        timings[stage] = round(now - mark[0], 1)
        mark[0] = now

    throughput_results: dict[str, Any] = {}
    latency: dict[str, Any] = {}
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
        lap("broker_start")
        spark = get_spark(spark_settings(config))
        # Stop Spark (and its JVM: the benchmark leaves no process) before the broker: its
        # cached Kafka producers would retry a dead broker.
        stack.callback(stop_spark)
        model, promotion = prepare_model(spark, config)
        audited_dir = config.run_dir / "tables" / "audited_transactions"
        audited = spark.read.parquet(str(audited_dir))
        expected_base = expected_alert_ids(model, audited, promotion)
        model_json = config.run_dir / "linear_model.json"
        linear_model_of(model, promotion.threshold, promotion.version).save(model_json)
        ctx = Context(
            config, spark, broker.bootstrap_servers, model, promotion, model_json, audited_dir
        )
        if "production_shadow" in config.pipelines:
            ctx.challenger = prepare_challenger(spark, config, promotion)
        lap("audit_train")
        ctx.backlog = load_backlog(ctx, expected_base)
        report["generator_tps"] = ctx.backlog.generator_tps
        report["backlog_messages"] = ctx.backlog.messages
        report["backlog_copies"] = ctx.backlog.copies
        report["slice_messages"] = ctx.backlog.slice_messages
        lap("load_backlog")
        slice_kafka = replace(
            _kafka(ctx, "slice"),
            topics=replace(_kafka(ctx, "slice").topics, transactions=ctx.backlog.slice_topic),
        )
        report["from_json_count"] = _plans(spark, slice_kafka, model, promotion, config.run_dir)

        for name in config.pipelines:
            log.info("throughput: %s", name)
            try:
                throughput_results[name] = run_throughput(ctx, name)
            except Exception as error:  # one pipeline failing must not hide the others
                log.exception("throughput run of %s failed", name)
                throughput_results[name] = _failed(error)
            log.info("throughput %s: %s tx/s", name, throughput_results[name].get("tps"))
            lap(f"throughput_{name}")

        # After the throughput runs: its warm-up passes would otherwise warm the JVM for them.
        report["cost_ladder"] = ladder.cost_ladder(
            spark,
            slice_kafka,
            model,
            promotion,
            cores=os.cpu_count() or 1,
            scratch_dir=config.run_dir / "ladder",
            expected=ctx.backlog.slice_expected,
            warm_up_per_partition=config.ladder_warm_up_per_partition,
            on_rung=lambda name, rung: log.info("cost ladder %s: %s", name, rung),
        )
        report["cost_ladder_exact"] = all(rung["exact"] for rung in report["cost_ladder"].values())
        lap("cost_ladder")

        rows = _latency_rows(audited_dir, audited, model, promotion)
        wanted = [n for n in config.latency_pipelines if n not in REALTIME_LATENCY]
        if "bare_microbatch" in wanted and config.fixed_cost_seconds > 0:
            wanted.append("bare_microbatch_tuned")
        for name in wanted:
            latency[name] = _latency_or_error(ctx, name, rows)
            lap(f"latency_{name}")
        realtime = [n for n in config.latency_pipelines if n in REALTIME_LATENCY]
        if realtime:
            # The product's real-time sizing: a task slot per input partition beside the
            # micro-batch queries' (local[*] widened), in a session of its own.
            spark.stop()
            ctx.spark = get_spark(spark_settings(config, config.transactions_partitions))
            report["machine"]["realtime_master"] = ctx.spark.sparkContext.master
            for name in realtime:
                latency[name] = _latency_or_error(ctx, name, rows)
                lap(f"latency_{name}")

    report |= _summarize(config, promotion, throughput_results, latency, report)
    report["profile"] = _profile(config, throughput_results, latency)
    report["goals"] = goals(report)
    report["stage_seconds"] = timings
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def _latency_or_error(ctx: Context, name: str, rows: live.Rows) -> dict:
    log.info("latency: %s", name)
    try:
        return run_latency(ctx, name, rows)
    except Exception as error:  # one pipeline failing must not hide the others
        log.exception("latency run of %s failed", name)
        return {"error": _failed(error)["error"]}


def _plans(
    spark: SparkSession,
    kafka: KafkaSettings,
    model: PipelineModel,
    promotion: Promotion,
    run_dir: Path,
) -> dict[str, int]:
    """Write ``plan.txt`` and count ``from_json`` in the executed plans.

    ``foreachBatch`` hides the per-batch plan from ``query.explain()``, so the plans are
    the same functions over a batch read of the same topic: the micro-batch's one pass
    (parse, score, the ledger projection ``ScoringBatchWriter`` writes), and the
    parse -> validate -> score chain that the real-time query runs, with our settings and
    with Spark's default JSON optimizer.
    """
    records = read_transactions_batch(spark, kafka)
    projection = ledger_projection(promotion.threshold, promotion.version, top_features(model))
    parse_plan = pipelines.executed_plan(
        ledger_rows(parse_transactions(records), model, projection)
    )
    chain_plan = pipelines.executed_plan(pipelines.scoring_chain(records, model, promotion))
    spark.conf.set(pipelines.JSON_OPTIMIZER_CONF, "true")
    try:
        default_plan = pipelines.executed_plan(pipelines.scoring_chain(records, model, promotion))
    finally:
        spark.conf.set(pipelines.JSON_OPTIMIZER_CONF, "false")
    (run_dir / "plan.txt").write_text(
        "# Micro-batch: ledger_rows(parse_transactions(records)), the one pass it writes\n"
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


RATE_KEYS = ("p50", "p95", "p99", "p999")


def _summarize(
    config: BenchConfig, promotion: Promotion, tp: dict, latency: dict, report: dict
) -> dict:
    tps = {name: result.get("tps") for name, result in tp.items()}
    production = tp.get("production", {})
    tps["production_first_batch"] = production.get("first_batch_tps")

    def ratio(other: str) -> float | None:
        if tps.get("production") and tps.get(other):
            return round(tps["production"] / tps[other], 2)
        return None

    floor = report.get("cost_ladder", {}).get("from_json_score", {}).get("tps")
    latency_ms = {
        name: {
            rate: {k: v.get(k) for k in RATE_KEYS}
            for rate, v in points.items()
            if rate in {str(r) for r in config.rates} and isinstance(v, dict) and "p50" in v
        }
        for name, points in latency.items()
        if name != "bare_microbatch_tuned"
    }
    fixed = {
        name: points.get("fixed_cost", {}).get("median_ms")
        for name, points in latency.items()
        if "fixed_cost" in points
    }
    rss = {name: r["resources"]["peak_rss_mb"] for name, r in tp.items()}
    cpu = {
        name: {k: r["resources"][k] for k in ("cpu_seconds", "avg_cores")} for name, r in tp.items()
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
        "floor_ratio": round(tps["production"] / floor, 3)
        if tps.get("production") and floor
        else None,
        "ratio_vs_reference_style": ratio("reference_style"),
        "ratio_vs_plain_python": ratio("plain_python"),
        "ratio_vs_plain_python_fast": ratio("plain_python_fast"),
        "shadow_cost_ratio": _ratio(tps.get("production_shadow"), tps.get("production")),
        "microbatch_fixed_ms": fixed,
        "latency_ms": latency_ms,
        "rss_mb": rss,
        "cpu": cpu,
        "correctness": {name: r["correctness"] for name, r in tp.items()},
        "throughput_details": tp,
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
            "microbatch_seconds": config.microbatch_seconds,
            "realtime_seconds": config.realtime_seconds,
            "baseline_seconds": config.baseline_seconds,
            "warm_up_seconds": config.warm_up_seconds,
            "fixed_cost_seconds": config.fixed_cost_seconds,
            "fixed_cost_rate": config.fixed_cost_rate,
            "alert_every": config.alert_every,
        },
    }


def _profile(config: BenchConfig, tp: dict, latency: dict) -> dict:
    """The production micro-batches taken apart from Spark's event log (docs/performance.md)."""
    files = timeline.event_log_files(config.run_dir / "spark-events")
    out: dict[str, Any] = {"event_log_files": [str(f) for f in files]}
    production = tp.get("production", {})
    if production.get("scoring_query_id"):
        batches = timeline.batch_profiles(files, production["scoring_query_id"])
        out["throughput_batches"] = [b.as_dict() for b in batches]
        out["throughput_warm"] = timeline.summarize([b for b in batches[1:] if b.rows])
    live_production = latency.get("production", {})
    query_id = live_production.get("notes", {}).get("scoring_query_id")
    if query_id:
        batches = timeline.batch_profiles(files, query_id)
        out["fixed_cost"] = timeline.summarize(timeline.small_batches(batches))
        for rate in config.rates:
            point = live_production.get(str(rate))
            if isinstance(point, dict) and "window_start_ms" in point:
                window = timeline.in_window(
                    batches, point["window_start_ms"], point["window_end_ms"]
                )
                out[f"rate_{rate}"] = timeline.summarize(window)
    bare = latency.get("bare_microbatch", {}).get("notes", {}).get("query_id")
    if bare:
        out["bare_fixed_cost"] = timeline.summarize(
            timeline.small_batches(timeline.batch_profiles(files, bare))
        )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def goals(report: dict) -> dict:
    """Each goal of the issue, its measured value in this run, and whether it is met."""
    out: dict[str, Any] = {}
    tps = report["throughput_tps"]
    out["throughput_floor_ratio"] = {"value": report["floor_ratio"], "goal": ">= 0.5 (stretch 0.7)"}
    out["vs_reference_style"] = {"value": report["ratio_vs_reference_style"], "goal": ">= 5"}
    out["vs_plain_python"] = {"value": report["ratio_vs_plain_python"], "goal": ">= 3"}
    out["shadow_throughput_vs_champion_only"] = {
        "value": report.get("shadow_cost_ratio"),
        "goal": ">= 0.9",
    }
    latency = report["latency_ms"]
    for rate in report["settings"]["rates"]:
        key = str(rate)
        mb = _ratio(
            latency.get("production", {}).get(key, {}).get("p99"),
            latency.get("bare_microbatch", {}).get(key, {}).get("p99"),
        )
        rt = _ratio(
            latency.get("production_realtime", {}).get(key, {}).get("p99"),
            latency.get("bare_realtime", {}).get(key, {}).get("p99"),
        )
        out[f"microbatch_p99_vs_bare@{rate}"] = {"value": mb, "goal": "<= 1.25"}
        out[f"realtime_p99_vs_bare@{rate}"] = {"value": rt, "goal": "<= 2"}
    fixed = report["microbatch_fixed_ms"]
    out["fixed_cost_vs_bare"] = {
        "value": _ratio(fixed.get("production"), fixed.get("bare_microbatch")),
        "goal": "<= 1.5",
    }
    limits = {
        "throughput_floor_ratio": (0.5, ">="),
        "vs_reference_style": (5, ">="),
        "vs_plain_python": (3, ">="),
        "shadow_throughput_vs_champion_only": (0.9, ">="),
        "fixed_cost_vs_bare": (1.5, "<="),
    }
    for name, goal in out.items():
        limit, sense = limits.get(name, (1.25 if name.startswith("microbatch") else 2.0, "<="))
        value = goal["value"]
        goal["met"] = (
            None if value is None else (value >= limit if sense == ">=" else value <= limit)
        )
    del tps
    return out
