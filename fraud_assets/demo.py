"""``fraud-assets demo``: the whole pipeline, end to end, on the real dataset.

Starts an embedded Kafka broker, materializes the batch assets in Dagster (audit -> train
-> select -> promote), replays every audited transaction into Kafka, runs the scoring job
in bounded mode until all of them are processed, reads both alert sinks back and reconciles
them exactly against batch scoring. Writes ``var/demo/summary.json`` and exits non-zero
unless the stream's alerts are exactly the expected ones. Everything it starts, it stops,
also on failure or Ctrl-C.

The same :func:`run_end_to_end` drives the integration test on a subset of the real data.
"""

import argparse
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pyspark.sql import SparkSession

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, KPI_SCHEMA
from fraud_assets.core.kpis import KpiSettings, batch_kpis, committed_events
from fraud_assets.core.reconcile import (
    batch_log_totals,
    expected_alert_ids,
    kafka_alert_ids,
    max_event_time,
    parquet_alert_ids,
    reconcile_alerts,
    reconcile_kpis,
)
from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.spark import SparkSetupError, require_connector_jars
from fraud_assets.core.tables import read_table
from fraud_assets.defs.resources import KafkaResource, ProjectResource, build_resources
from fraud_assets.kafka.admin import ensure_topics, project_topics
from fraud_assets.kafka.broker import BrokerSettings, BrokerStartError, EmbeddedKafka, free_port
from fraud_assets.kafka.io import read_topic
from fraud_assets.kafka.producer import replay
from fraud_assets.setup.dataset import DatasetError, verify_dataset

log = logging.getLogger(__name__)

STAGES = (
    ("audit", ["raw_transactions", "audited_transactions"]),
    ("train", ["fraud_model"]),
    ("select", ["model_selection", "promoted_model"]),
)


class DemoFailure(RuntimeError):
    """The pipeline ran but its outputs do not reconcile."""


@dataclass(frozen=True)
class EndToEndOptions:
    """One end-to-end run: where its state lives and which data and broker it uses."""

    home: Path
    state_dir: Path
    dataset_csv: Path | None = None
    dataset_sha256: str | None = None
    """None: the real dataset's hash; "": check the header only (test subsets)."""
    bootstrap_servers: str | None = None
    """An existing broker; None starts an embedded one for the run."""
    broker_port: int = 0
    """Port of the embedded broker; 0 picks a free one."""
    progress: bool = True
    topics: Topics = Topics()
    stop_spark_at_end: bool = False
    """Stop the process's Spark session before the broker, so Spark's cached Kafka
    producers do not retry a stopped broker (the CLI; tests share one session)."""
    project_overrides: tuple[tuple[str, Any], ...] = ()
    """More ProjectResource fields (e.g. the fraud-rate band of a test subset)."""


def load_definitions() -> dg.Definitions:
    """The code location's definitions (the same objects ``dagster dev`` shows)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@contextmanager
def kafka_for(options: EndToEndOptions, paths_kafka_dir: Path, jars_dir: Path) -> Iterator[str]:
    """The bootstrap servers to use: the given broker, or an embedded one stopped on exit."""
    if options.bootstrap_servers:
        yield options.bootstrap_servers
        return
    settings = BrokerSettings(
        state_dir=paths_kafka_dir, jars_dir=jars_dir, port=options.broker_port or free_port()
    )
    with EmbeddedKafka(settings) as broker:
        yield broker.bootstrap_servers


def _stop_active_spark() -> None:
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record the seconds the block took as ``timings[stage]`` (also when it fails)."""
    started = time.monotonic()
    try:
        yield
    finally:
        timings[stage] = round(time.monotonic() - started, 2)


def project_resource(options: EndToEndOptions) -> ProjectResource:
    """The run's :class:`ProjectResource`: its home, state folder and dataset."""
    return ProjectResource(
        home=str(options.home),
        state_dir=str(options.state_dir),
        dataset_csv=str(options.dataset_csv or ""),
        **({} if options.dataset_sha256 is None else {"dataset_sha256": options.dataset_sha256}),
        **dict(options.project_overrides),
    )


def preflight(project: ProjectResource) -> None:
    """Fail in seconds, before any broker or Spark starts, on what the operator must fix."""
    paths = project.paths
    verify_dataset(paths.dataset_csv, expected_sha256=project.dataset_sha256 or None)
    require_connector_jars(paths.spark_jars_dir)


def kafka_resource(bootstrap_servers: str, topics: Topics) -> KafkaResource:
    """The run's :class:`KafkaResource`, with its topic names."""
    return KafkaResource(
        bootstrap_servers=bootstrap_servers,
        transactions_topic=topics.transactions,
        alerts_topic=topics.alerts,
        dead_letter_topic=topics.dead_letter,
        kpis_topic=topics.kpis,
        kpi_partials_topic=topics.kpi_partials,
    )


def materialize_batch_stages(
    definitions: dg.Definitions,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    timings: dict[str, float],
    tag: str = "fraud_assets/demo",
) -> None:
    """Materialize audit -> train -> select (with their checks), one stage at a time."""
    assets = [*definitions.assets, *definitions.asset_checks]
    for stage, keys in STAGES:
        with timed(timings, stage):
            log.info("materializing %s", ", ".join(keys))
            dg.materialize(
                assets,
                selection=dg.AssetSelection.assets(*keys)
                | dg.AssetSelection.checks_for_assets(*keys),
                resources=resources,
                instance=instance,
                tags={tag: stage},
            )


def run_end_to_end(options: EndToEndOptions, instance: dg.DagsterInstance) -> dict[str, Any]:
    """Run every stage once and return the reconciliation summary (see the module doc)."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    resources = build_resources()
    project = project_resource(options)
    paths = project.paths
    preflight(project)
    definitions = load_definitions()

    with ExitStack() as cleanup:
        with timed(timings, "broker_start"):
            bootstrap_servers = cleanup.enter_context(
                kafka_for(options, paths.kafka_dir, paths.kafka_jars_dir)
            )
        if options.stop_spark_at_end:
            cleanup.callback(_stop_active_spark)
        kafka = kafka_resource(bootstrap_servers, options.topics)
        ensure_topics(bootstrap_servers, project_topics(kafka.settings))
        resources = {**resources, "project": project, "kafka": kafka}
        materialize_batch_stages(definitions, resources, instance, timings)

        kafka_settings: KafkaSettings = kafka.settings
        with timed(timings, "produce"):
            replayed = replay(
                paths.tables_dir / "audited_transactions",
                bootstrap_servers,
                kafka_settings.topics.transactions,
                progress=options.progress,
            )

        with timed(timings, "stream"):
            definitions.get_job_def("scoring_stream").execute_in_process(
                run_config={"ops": {"run_scoring_stream": {"config": {"bounded": True}}}},
                resources=resources,
                instance=instance,
            )

        with timed(timings, "reconcile"):
            summary = reconcile_run(resources, project, kafka_settings)
        summary["transactions_produced"] = replayed.sent
        summary["producer_rate_tps"] = round(replayed.rate_tps)

    summary["stage_seconds"] = timings
    summary["wall_seconds"] = round(time.monotonic() - started, 2)
    summary["state_dir"] = str(options.state_dir)
    summary["success"] = bool(
        summary["exact"]
        and summary["kpis_exact"]
        and summary["transactions_scored"] == summary["transactions_produced"]
    )
    return summary


def reconcile_run(
    resources: dict[str, Any], project: ProjectResource, kafka: KafkaSettings
) -> dict[str, Any]:
    """Read both sinks back and compare them with batch scoring of the same rows."""
    session = resources["spark"].session()
    registry = project.registry
    promotion = registry.require_promoted()
    audited = read_table(
        session, project.table("audited_transactions"), AUDITED_TRANSACTIONS_SCHEMA
    )
    expected = expected_alert_ids(registry.load(promotion.version), audited, promotion)
    stream_paths = project.stream_paths
    records = read_topic(kafka, kafka.topics.alerts)
    result = reconcile_alerts(
        expected,
        parquet_alert_ids(session, stream_paths.alerts_table),
        kafka_alert_ids([r.value for r in records], [r.key for r in records]),
    )
    kpis = reconcile_kpis(
        session.read.schema(KPI_SCHEMA).parquet(str(stream_paths.kpi_table)),
        batch_kpis(session, stream_paths),
        max_event_time(committed_events(session, stream_paths)),
        KpiSettings().watermark_delay,
    )
    totals = batch_log_totals(stream_paths.batch_log_dir)
    true_frauds = [r[0] for r in audited.where("Class = 1").select("transaction_id").collect()]
    return {
        "transactions_scored": totals.get("scored", 0),
        "transactions_rejected": totals.get("invalid", 0),
        "micro_batches": totals.get("batches", 0),
        **result.as_dict(),
        **kpis.as_dict(),
        "model_version": promotion.version,
        "threshold": promotion.threshold,
        "threshold_policy": promotion.policy,
        "pr_auc": promotion.pr_auc,
        "true_frauds_alerted": len(expected & set(true_frauds)),
        "true_frauds": len(true_frauds),
    }


def _print_summary(summary: dict[str, Any], path: Path) -> None:
    ok = "OK" if summary["success"] else "MISMATCH"
    print(f"\nfraud_assets demo: {ok}  (summary: {path})")
    print(
        f"  model {summary['model_version']}  PR-AUC {summary['pr_auc']:.3f}  "
        f"threshold {summary['threshold']} ({summary['threshold_policy']})"
    )
    print(
        f"  transactions produced {summary['transactions_produced']:,}  "
        f"scored {summary['transactions_scored']:,}  in {summary['micro_batches']} micro-batches"
    )
    print(
        f"  alerts expected {summary['alerts_expected']:,}  parquet {summary['alerts_parquet']:,}  "
        f"kafka {summary['alerts_kafka']:,} ({summary['alerts_kafka_distinct']:,} distinct)"
    )
    print(
        f"  missing {summary['missing_alerts']}  unexpected {summary['unexpected_alerts']}  "
        f"parquet duplicates {summary['duplicate_alerts_parquet']}"
    )
    print(
        f"  KPI windows {summary['kpi_windows_streamed']:,} streamed = "
        f"{summary['kpi_windows_closed']:,} closed in batch "
        f"({summary['kpi_windows_open']} still open), mismatched "
        f"{summary['kpi_windows_mismatched']}, missing {summary['kpi_windows_missing']}"
    )
    stages = "  ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items())
    print(f"  wall {summary['wall_seconds']:.1f}s: {stages}")


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(args: argparse.Namespace) -> int:
    """CLI handler: the full-dataset demo with its own broker."""
    from fraud_assets.cli import OperatorError

    # `kill PID` must clean up like Ctrl-C: stop the stream and the broker we started.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    home = Path(args.home).resolve()
    demo_dir = home / "var" / "demo"
    state_dir = demo_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    options = EndToEndOptions(
        home=home,
        state_dir=state_dir,
        broker_port=args.port,
        progress=not args.no_progress,
        stop_spark_at_end=True,
    )
    instance = dg.DagsterInstance.get() if args.dagster_home else dg.DagsterInstance.ephemeral()
    try:
        summary = run_end_to_end(options, instance)
    except (DatasetError, SparkSetupError, BrokerStartError) as error:
        raise OperatorError(str(error)) from error
    path = demo_dir / "summary.json"
    write_json_atomic(path, summary)
    write_json_atomic(state_dir / "summary.json", summary)
    _print_summary(summary, path)
    return 0 if summary["success"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the CLI."""
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on the real dataset with an embedded Kafka broker"
    )
    parser.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-dagster-home",
        dest="dagster_home",
        action="store_false",
        help="use a throwaway Dagster instance instead of $DAGSTER_HOME",
    )
    parser.set_defaults(handler=run_demo)
