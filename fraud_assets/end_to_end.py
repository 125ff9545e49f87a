"""The end-to-end steps, in the order of the flow: one function each, shared by every runner.

1. :func:`preflight`: the dataset and the Spark Kafka connector are there (seconds, before
   anything starts);
2. :func:`kafka_broker`: an embedded Kafka broker for the run, or the one given, and
   :func:`create_topics`;
3. :func:`materialize_batch_stages`: the Dagster assets of :data:`BATCH_STAGES`, audit ->
   train -> select, each with its blocking checks;
4. :func:`replay_transactions`: every audited transaction into the ``transactions`` topic;
5. :func:`run_stream_bounded`: the ``scoring_stream`` job until the backlog is processed
   (alerts to Kafka and Parquet, dead letters, KPI windows);
6. :func:`reconcile_run`: both alert sinks and the KPI table against batch scoring of the
   same rows, as sets of transaction ids and window by window.

:func:`run_end_to_end` runs them all once (``fraud-assets demo`` and the end-to-end test).
The chaos run (:mod:`fraud_assets.chaos.harness`) uses the same preflight, batch stages and
reconciliation around a stream it kills and restarts. Runners add their own command line,
report and printing; nothing here prints.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pyspark.sql import SparkSession

from fraud_assets.console import dagster_run_config
from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, KPI_SCHEMA
from fraud_assets.core.kpis import KpiSettings, batch_kpis, committed_events
from fraud_assets.core.reconcile import (
    batch_log_totals,
    duplicate_payload_mismatches,
    expected_alert_ids,
    kafka_alert_ids,
    max_event_time,
    parquet_alert_ids,
    reconcile_alerts,
    reconcile_kpis,
)
from fraud_assets.core.replay import bulk_replay
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.spark import (
    SparkSetupError,
    close_cached_kafka_producers,
    require_connector_jars,
    stop_spark,
)
from fraud_assets.core.stream_run import MICROBATCH, REALTIME
from fraud_assets.core.tables import read_table
from fraud_assets.definitions import load_definitions
from fraud_assets.defs.resources import KafkaResource, ProjectResource, build_resources
from fraud_assets.kafka.admin import ensure_topics, project_topics
from fraud_assets.kafka.broker import BrokerSettings, BrokerStartError, EmbeddedKafka, free_port
from fraud_assets.kafka.io import read_topic
from fraud_assets.kafka.producer import ReplayResult
from fraud_assets.setup.dataset import DatasetError, check_header, verify_dataset

log = logging.getLogger(__name__)

BATCH_STAGES: tuple[tuple[str, list[str]], ...] = (
    ("audit", ["raw_transactions", "audited_transactions"]),
    ("train", ["fraud_model"]),
    ("select", ["model_selection", "promoted_model"]),
)
"""The batch stages in order, each with the assets it materializes (and their checks)."""

SETUP_ERRORS: tuple[type[Exception], ...] = (DatasetError, SparkSetupError, BrokerStartError)
"""What the steps raise when the machine is not set up (no dataset, no connector jars, a
broker that cannot start): runners report these as operator errors, one line each."""

SUBSET_FRAUD_RATE_MAX = 0.5
"""The audit's fraud-rate ceiling on a subset: keeping every fraud of the dataset in a few
thousand rows puts far more than the production band's 1% of frauds in it."""


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
    verbose: bool = False
    """Dagster's console shows every run event (quiet: warnings and errors only)."""
    alert_delivery: str = MICROBATCH
    """``microbatch`` or ``realtime`` (alerts through Spark's real-time mode, see
    ``docs/operations.md``); the Parquet tables, dead letters and KPIs are the same."""
    transactions_partitions: int | None = None
    """Partitions of the transactions topic; None: the project's default. Real-time mode
    holds a task slot per partition (a shared test session of local[2] runs one)."""


# --- the run's resources ------------------------------------------------------------------


def project_resource(options: EndToEndOptions) -> ProjectResource:
    """The run's :class:`ProjectResource`: its home, state folder and dataset."""
    return ProjectResource(
        home=str(options.home),
        state_dir=str(options.state_dir),
        dataset_csv=str(options.dataset_csv or ""),
        **({} if options.dataset_sha256 is None else {"dataset_sha256": options.dataset_sha256}),
        **dict(options.project_overrides),
    )


def kafka_resource(
    bootstrap_servers: str, topics: Topics, transactions_partitions: int | None = None
) -> KafkaResource:
    """The run's :class:`KafkaResource`, with its topic names."""
    partitions = (
        {}
        if transactions_partitions is None
        else {"transactions_partitions": transactions_partitions}
    )
    return KafkaResource(
        bootstrap_servers=bootstrap_servers,
        **partitions,
        transactions_topic=topics.transactions,
        alerts_topic=topics.alerts,
        dead_letter_topic=topics.dead_letter,
        kpis_topic=topics.kpis,
        kpi_partials_topic=topics.kpi_partials,
    )


def subset_of_real_data(home: Path, state_dir: Path, rows: int) -> dict[str, Any]:
    """Write a subset of the real data into ``state_dir``; the options that select it.

    The subset is the first ``rows`` rows plus every fraud (see :func:`write_subset`); the
    returned fields (``dataset_csv``, ``dataset_sha256``, ``project_overrides``) go into
    :class:`EndToEndOptions`.
    """
    dataset_csv = state_dir / "subset.csv"
    write_subset(ProjectResource(home=str(home)).paths.dataset_csv, dataset_csv, rows)
    return {
        "dataset_csv": dataset_csv,
        "dataset_sha256": "",
        "project_overrides": (("fraud_rate_max", SUBSET_FRAUD_RATE_MAX),),
    }


def write_subset(source: Path, target: Path, first_rows: int) -> int:
    """Copy the header, the first ``first_rows`` data rows and every fraud row of the CSV.

    Keeping every fraud gives a subset enough positives to train and to alert on.
    Returns the number of data rows written.
    """
    check_header(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = 0
    with source.open() as reader, target.open("w") as writer:
        writer.write(reader.readline())
        for index, line in enumerate(reader):
            if index < first_rows or line.rstrip().endswith('"1"'):
                writer.write(line)
                kept += 1
    return kept


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record the seconds the block took as ``timings[stage]`` (also when it fails)."""
    started = time.monotonic()
    try:
        yield
    finally:
        timings[stage] = round(time.monotonic() - started, 2)


# --- 1. preflight ---------------------------------------------------------------------------


def preflight(project: ProjectResource) -> None:
    """Fail in seconds, before any broker or Spark starts, on what the operator must fix."""
    paths = project.paths
    verify_dataset(paths.dataset_csv, expected_sha256=project.dataset_sha256 or None)
    require_connector_jars(paths.spark_jars_dir)


# --- 2. Kafka -------------------------------------------------------------------------------


@contextmanager
def kafka_broker(options: EndToEndOptions, kafka_dir: Path, jars_dir: Path) -> Iterator[str]:
    """The bootstrap servers to use: the given broker, or an embedded one stopped on exit."""
    if options.bootstrap_servers:
        log.info("kafka: using the broker at %s", options.bootstrap_servers)
        yield options.bootstrap_servers
        return
    log.info("kafka: starting an embedded broker")
    settings = BrokerSettings(
        state_dir=kafka_dir, jars_dir=jars_dir, port=options.broker_port or free_port()
    )
    with EmbeddedKafka(settings) as broker:
        yield broker.bootstrap_servers


def create_topics(kafka: KafkaSettings) -> list[str]:
    """Create the project's topics that do not exist yet; the names created."""
    return ensure_topics(kafka, project_topics(kafka))


# --- 3. batch stages: audit -> train -> select ----------------------------------------------


QUICK_TRAINING = {"fraud_model": {"protocols": ["time_ordered"]}}
"""How the demo and the chaos run train: the default models on the time-ordered protocol,
without the rolling-origin folds (four more fits per model: ~100 s more on the full data on
2 cores). They test the pipeline, not the choice of model; selection then falls back to the
best validation AP. ``fraud_model`` in the UI and ``make models`` run the folds."""


def materialize_batch_stages(
    definitions: dg.Definitions,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    timings: dict[str, float],
    tag: str = "fraud_assets/demo",
    verbose: bool = False,
    op_config: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Materialize audit -> train -> select (with their checks), one stage at a time.

    ``op_config`` is the config of some of those assets by name, e.g.
    ``{"fraud_model": {"algorithms": ["lr"]}}``; the others keep their defaults.
    """
    assets = [*definitions.assets, *definitions.asset_checks]
    for stage, keys in BATCH_STAGES:
        ops = {key: {"config": config} for key, config in (op_config or {}).items() if key in keys}
        with timed(timings, stage):
            log.info("%s: materializing %s and their checks", stage, ", ".join(keys))
            dg.materialize(
                assets,
                selection=dg.AssetSelection.assets(*keys)
                | dg.AssetSelection.checks_for_assets(*keys),
                resources=resources,
                instance=instance,
                tags={tag: stage},
                run_config={**dagster_run_config(verbose), **({"ops": ops} if ops else {})},
            )


# --- 4. replay --------------------------------------------------------------------------------


def replay_transactions(
    resources: dict[str, Any], project: ProjectResource, kafka: KafkaSettings, progress: bool = True
) -> ReplayResult:
    """Every audited transaction into the ``transactions`` topic, in ``row_index`` order.

    Spark's Kafka writer sends them (:func:`fraud_assets.core.replay.bulk_replay`, the
    producer's messages at ~10x its rate); a paced replay is
    :func:`fraud_assets.kafka.producer.replay`.
    """
    log.info("replay: the audited transactions into %s", kafka.topics.transactions)
    return bulk_replay(
        resources["spark"].session(),
        project.table("audited_transactions"),
        kafka,
        progress=progress,
    )


# --- 5. stream --------------------------------------------------------------------------------


def run_stream_bounded(
    definitions: dg.Definitions,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    verbose: bool = False,
) -> None:
    """The ``scoring_stream`` job in this process, until every available message is scored."""
    log.info("stream: the scoring_stream job, bounded (until the backlog is scored)")
    definitions.get_job_def("scoring_stream").execute_in_process(
        run_config={
            "ops": {"run_scoring_stream": {"config": {"bounded": True}}},
            **dagster_run_config(verbose),
        },
        resources=resources,
        instance=instance,
    )


# --- 6. reconcile -----------------------------------------------------------------------------


def reconcile_run(
    resources: dict[str, Any], project: ProjectResource, kafka: KafkaSettings
) -> dict[str, Any]:
    """Read both sinks back and compare them with batch scoring of the same rows."""
    log.info("reconcile: both alert sinks and the KPI table against batch scoring")
    session = resources["spark"].session()
    registry = project.registry
    promotion = registry.require_promoted()
    audited = read_table(
        session, project.table("audited_transactions"), AUDITED_TRANSACTIONS_SCHEMA
    )
    expected = expected_alert_ids(registry.load(promotion.version), audited, promotion)
    stream_paths = project.stream_paths
    records = read_topic(kafka, kafka.topics.alerts)
    mismatches = duplicate_payload_mismatches([r.key for r in records], [r.value for r in records])
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
        "alerts_kafka_payload_mismatches": mismatches,
        **kpis.as_dict(),
        "model_version": promotion.version,
        "threshold": promotion.threshold,
        "threshold_policy": promotion.policy,
        "pr_auc": promotion.pr_auc,
        "true_frauds_alerted": len(expected & set(true_frauds)),
        "true_frauds": len(true_frauds),
    }


# --- every step once ------------------------------------------------------------------------


def _close_spark_kafka_producers() -> None:
    session = SparkSession.getActiveSession()
    if session is not None:
        close_cached_kafka_producers(session)


def run_end_to_end(options: EndToEndOptions, instance: dg.DagsterInstance) -> dict[str, Any]:
    """Run every step once and return the reconciliation summary (see the module doc)."""
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
                kafka_broker(options, paths.kafka_dir, paths.kafka_jars_dir)
            )
        if options.stop_spark_at_end:
            cleanup.callback(stop_spark)  # and its JVM: the demo leaves no process
        # Runs before the broker stops (the callbacks run last in, first out).
        cleanup.callback(_close_spark_kafka_producers)
        kafka = kafka_resource(bootstrap_servers, options.topics, options.transactions_partitions)
        kafka_settings: KafkaSettings = kafka.settings
        create_topics(kafka_settings)
        resources = {**resources, "project": project, "kafka": kafka}
        if options.alert_delivery == REALTIME:
            resources["stream"] = resources["stream"].model_copy(
                update={"alert_delivery": REALTIME}
            )
            # The run's one session, created now, holds the real-time task slots (the
            # batch stages reuse it; a session that exists already is checked, not resized).
            resources["spark"].session(reserved_task_slots=kafka_settings.transactions_partitions)
        materialize_batch_stages(
            definitions,
            resources,
            instance,
            timings,
            verbose=options.verbose,
            op_config=QUICK_TRAINING,
        )

        with timed(timings, "replay"):
            replayed = replay_transactions(
                resources, project, kafka_settings, progress=options.progress
            )

        with timed(timings, "stream"):
            run_stream_bounded(definitions, resources, instance, verbose=options.verbose)

        with timed(timings, "reconcile"):
            summary = reconcile_run(resources, project, kafka_settings)
        summary["transactions_produced"] = replayed.sent
        summary["replay_rate_tps"] = round(replayed.rate_tps)

    summary["stage_seconds"] = timings
    summary["wall_seconds"] = round(time.monotonic() - started, 2)
    summary["state_dir"] = str(options.state_dir)
    summary["alert_delivery"] = options.alert_delivery
    summary["success"] = bool(
        summary["exact"]
        and summary["alerts_kafka_payload_mismatches"] == 0
        and summary["kpis_exact"]
        and summary["transactions_scored"] == summary["transactions_produced"]
    )
    return summary
