"""Throughput: each pipeline drains a backlog; its rate and its alerts, compared exactly.

The product (``production``) and the fast Python peer drain the whole backlog (at least a
million messages); the two slow baselines drain its slice (one replay of the dataset,
283,726 messages), which takes them about a minute each already: their rate is flat over a
backlog (each reads, parses and scores message after message), so the ratio compares rates
measured on the same messages' kind, in the same run.

``production`` is measured **sustained**: from the end of its first micro-batch (which pays
class loading, JIT and code generation, reported apart as ``production_first_batch``) to the
end of its KPI query, which closes the windows after the scoring query, as the bounded op
does. The baselines are timed over their whole busy window.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from fraud_assets.bench import pipelines
from fraud_assets.bench.latency import ResourceSampler
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.reconcile import kafka_alert_ids, parquet_alert_ids, reconcile_alerts
from fraud_assets.core.registry import Promotion
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.stream_run import RunSettings
from fraud_assets.kafka.io import read_topic

SAMPLER_EXCLUDE = (
    "kafka.Kafka",
    "fraud_assets.bench.generator",
    "fraud_assets.bench.plain_python",
)
"""The broker, the load generator and the plain-Python processes are not the Spark pipeline."""


@dataclass(frozen=True)
class Target:
    """What a throughput run drains: a topic, how many messages, the alert ids expected."""

    topic: str
    messages: int
    expected: set[str]


def correctness(expected: set[str], kafka_ids: list[str], parquet_ids: list[str] | None) -> dict:
    """Alert ids against the batch-expected set (a few ids of any difference)."""
    if parquet_ids is None:  # no Parquet sink: compare Kafka with itself on that side
        parquet_ids = sorted(set(kafka_ids))
    result = reconcile_alerts(expected, parquet_ids, kafka_ids).as_dict()
    return {k: v for k, v in result.items() if k not in ("missing_ids", "unexpected_ids")} | {
        "missing_ids": result["missing_ids"][:5],
        "unexpected_ids": result["unexpected_ids"][:5],
    }


def alert_ids(bootstrap_servers: str, topic: str) -> list[str]:
    """The transaction id of every alert record of ``topic`` (contract-checked)."""
    records = read_topic(bootstrap_servers, topic)
    return kafka_alert_ids([r.value for r in records], [r.key for r in records])


def _reference_alert_ids(bootstrap_servers: str, topic: str) -> list[str]:
    """Reference alerts carry the notebook fields only; their key is the transaction id."""
    return [json.loads(r.value)["transaction_id"] for r in read_topic(bootstrap_servers, topic)]


def rate(messages: int, window: tuple[float, float] | None) -> float | None:
    """Messages per second over an epoch-seconds window (None when empty)."""
    if window is None or window[1] <= window[0]:
        return None
    return round(messages / (window[1] - window[0]), 1)


def _end(event: dict) -> float:
    return pipelines.epoch(event["timestamp"]) + event["durationMs"]["triggerExecution"] / 1000


def sustained(scoring: list[dict], after: list[dict], messages: int) -> dict[str, Any]:
    """The sustained rate of a drained backlog: every batch but the first, to the last end.

    ``scoring`` are the scoring query's progress reports, ``after`` those of what ran after
    it as part of the same work (the KPI query of a bounded run).
    """
    busy = sorted((e for e in scoring if e.get("numInputRows", 0) > 0), key=lambda e: e["batchId"])
    if len(busy) < 2:
        return {"tps": None, "first_batch_tps": None, "batches": len(busy)}
    first = busy[0]
    first_end = _end(first)
    end = max(_end(e) for e in [*busy, *after])
    first_seconds = first["durationMs"]["triggerExecution"] / 1000
    return {
        "tps": rate(messages - first["numInputRows"], (first_end, end)),
        "first_batch_tps": round(first["numInputRows"] / first_seconds, 1),
        "first_batch_rows": first["numInputRows"],
        "first_batch_seconds": round(first_seconds, 2),
        "sustained_seconds": round(end - first_end, 2),
        "batches": len(busy),
    }


def production(
    spark: SparkSession,
    kafka: KafkaSettings,
    base: Path,
    model: PipelineModel,
    promotion: Promotion,
    settings: RunSettings,
    target: Target,
    challenger: tuple[Promotion, PipelineModel] | None = None,
) -> dict:
    """Drain ``target`` with the product's bounded run (scoring, then KPI query).

    With ``challenger`` (``production_shadow``), every message is also scored by it into the
    shadow table, which must then hold every message once.
    """
    kafka = replace(kafka, topics=replace(kafka.topics, transactions=target.topic))
    paths = StreamPaths.under(base / "tables", base / "checkpoints")
    run = pipelines.production_run(spark, kafka, paths, model, promotion, settings, challenger)
    with ResourceSampler(os.getpid(), SAMPLER_EXCLUDE) as sampler:
        pipelines.run_production_backlog(run)
    figures = sustained(
        pipelines.progress_events(run.scoring), pipelines.progress_events(run.kpis), target.messages
    )
    kafka_ids = alert_ids(kafka.bootstrap_servers, kafka.topics.alerts)
    shadow = {}
    if challenger is not None:
        rows = spark.read.parquet(str(paths.shadow_table)).select("transaction_id")
        count, distinct = rows.count(), rows.distinct().count()
        shadow = {"shadow_rows": count, "shadow_exact": count == distinct == target.messages}
    return {
        **figures,
        **shadow,
        "scored": run.writer.totals.scored,
        "resources": sampler.usage.as_dict(),
        "batch_logs": str(paths.batch_log_dir),
        "correctness": correctness(
            target.expected, kafka_ids, parquet_alert_ids(spark, paths.alerts_table)
        ),
        "scoring_query_id": run.scoring.id,
    }


def reference_style(
    spark: SparkSession,
    kafka: KafkaSettings,
    base: Path,
    model: PipelineModel,
    threshold: float,
    target: Target,
    drain_timeout_s: float,
) -> dict:
    """Drain ``target`` with the three reference-style queries."""
    kafka = replace(kafka, topics=replace(kafka.topics, transactions=target.topic))
    with ResourceSampler(os.getpid(), SAMPLER_EXCLUDE) as sampler:
        queries = pipelines.start_reference_style(spark, kafka, base, model, threshold)
        events = pipelines.drain(queries, target.messages, drain_timeout_s)
    window = pipelines.busy_window(events)
    kafka_ids = _reference_alert_ids(kafka.bootstrap_servers, kafka.topics.alerts)
    parquet_ids = [r[0] for r in spark.read.parquet(str(base / "alerts")).collect()]
    return {
        "tps": rate(target.messages, window),
        "seconds": round(window[1] - window[0], 2) if window else None,
        "resources": sampler.usage.as_dict(),
        "correctness": correctness(target.expected, kafka_ids, parquet_ids),
    }


@contextmanager
def python_consumer(
    module: str,
    bootstrap_servers: str,
    kafka: KafkaSettings,
    model_json: Path,
    result: Path,
    expect: int | None,
) -> Iterator[subprocess.Popen]:
    """A plain-Python consumer process (``module``); stopped (SIGTERM, then kill) on exit."""
    ready = result.with_suffix(".ready")
    command = [
        sys.executable,
        "-m",
        module,
        "--bootstrap-servers",
        bootstrap_servers,
        "--topic",
        kafka.topics.transactions,
        "--alerts-topic",
        kafka.topics.alerts,
        "--model",
        str(model_json),
        "--ready-file",
        str(ready),
        "--result",
        str(result),
    ]
    if expect is not None:
        command += ["--expect", str(expect)]
    result.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not start (exit {process.poll()})")
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


def plain_python(
    module: str,
    kafka: KafkaSettings,
    model_json: Path,
    base: Path,
    target: Target,
    drain_timeout_s: float,
) -> dict:
    """Drain ``target`` with a plain-Python consumer process."""
    kafka = replace(kafka, topics=replace(kafka.topics, transactions=target.topic))
    result_path = base / "throughput.json"
    servers = kafka.bootstrap_servers
    with python_consumer(module, servers, kafka, model_json, result_path, target.messages) as p:
        with ResourceSampler(p.pid) as sampler:
            p.wait(timeout=drain_timeout_s)
    result = json.loads(result_path.read_text())
    window = (result["first_read_epoch"], result["last_output_epoch"])
    return {
        "tps": rate(result["consumed"], window),
        "seconds": round(window[1] - window[0], 2),
        "consumed": result["consumed"],
        "resources": sampler.usage.as_dict(),
        "correctness": correctness(target.expected, alert_ids(servers, kafka.topics.alerts), None),
    }
