"""The stream under the real daemon: the supervisor launches it, an operator stops it, the
supervisor brings it back.

Everything is real: ``dagster dev`` (webserver, daemon, code server) on a temporary Dagster
home, the ``stream_supervisor`` sensor, the queued run coordinator, a run worker with its
own Spark JVM, the session's Kafka broker, and the real-data subset. The batch assets are
materialized in the test process first, so that a promoted model exists when the daemon
starts.
"""

import json
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient
from pyspark.sql import SparkSession

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA
from fraud_assets.core.reconcile import expected_alert_ids, parquet_alert_ids
from fraud_assets.core.registry import Promotion
from fraud_assets.core.tables import read_table
from fraud_assets.definitions import load_definitions
from fraud_assets.defs.resources import KafkaResource, ProjectResource, build_resources
from fraud_assets.defs.stream import scoring_stream
from fraud_assets.defs.supervise import MODEL_VERSION_TAG
from fraud_assets.end_to_end import BATCH_STAGES
from fraud_assets.kafka.producer import replay
from fraud_assets_tests.dagster_dev import (
    REPO_ROOT,
    DagsterDev,
    processes_referencing,
    running_dagster_dev,
    wait_for_code_location,
    wait_until,
)
from fraud_assets_tests.real_data import distinct_transactions, write_real_subset

pytestmark = [
    pytest.mark.integration,
    # dagster_graphql's client calls gql the old way; not ours to fix.
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

RUN_STARTED_TIMEOUT_S = 120.0
ALERTS_TIMEOUT_S = 180.0
CANCEL_TIMEOUT_S = 90.0
RELAUNCH_TIMEOUT_S = 120.0
"""The supervisor ticks every 5 s; a relaunch waits out the 30 s backoff, then one tick
plus the queue."""
REPORT_PATH = REPO_ROOT / "var" / "tests" / "supervised_stream_timings.json"
SCORING_STARTED = "scoring with "
"""The op's log line once its Spark session and model are loaded and the queries start."""
TERMINATION_ERROR = "DagsterExecutionInterruptedError"
"""The one error a terminated run may log: Dagster interrupting the op."""


def materialize_batch_assets(project: ProjectResource, bootstrap_servers: str) -> Promotion:
    """Audit, train, select and promote on the subset, as ``fraud-assets demo`` does."""
    definitions = load_definitions()
    assets = [*definitions.assets, *definitions.asset_checks]
    resources = {
        **build_resources(),
        "project": project,
        "kafka": KafkaResource(bootstrap_servers=bootstrap_servers),
    }
    instance = dg.DagsterInstance.ephemeral()
    for stage, keys in BATCH_STAGES:
        result = dg.materialize(
            assets,
            selection=dg.AssetSelection.assets(*keys) | dg.AssetSelection.checks_for_assets(*keys),
            resources=resources,
            instance=instance,
            tags={"fraud_assets/test": stage},
        )
        assert result.success, f"stage {stage} failed"
    return project.registry.require_promoted()


def stream_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """Runs of the scoring stream job, newest first."""
    return list(instance.get_run_records(filters=dg.RunsFilter(job_name=scoring_stream.name)))


def run_worker_pids(run_id: str) -> set[int]:
    """The run's worker process (its command line names the run) and all its descendants."""
    workers = set(processes_referencing(run_id))
    family = set(workers)
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parent = int(stat[stat.rfind(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    frontier = list(workers)
    while frontier:
        pid = frontier.pop()
        for child in children.get(pid, []):
            if child not in family:
                family.add(child)
                frontier.append(child)
    return family


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if stat[stat.rfind(")") + 2] != "Z":
            living.add(pid)
    return living


def run_errors(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's last log messages and every error it logged, with stack traces."""
    entries = instance.all_logs(run_id)
    lines = [entry.message for entry in entries[-15:]]
    for entry in entries:
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event is not None else None
        if error is not None:
            lines.append(f"{event.event_type_value}: {error.to_string()[-3000:]}")
    return lines


def is_termination(error) -> bool:
    """Dagster's own report of a terminated step: the interrupt, with nothing behind it."""
    return error.cls_name == TERMINATION_ERROR and error.cause is None and error.context is None


def event_log_problems(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Errors in a terminated run's event log other than Dagster's termination report.

    Dagster reports an interrupted step as a STEP_FAILURE whose error is
    ``DagsterExecutionInterruptedError`` (error source INTERRUPT), whatever the op does; any
    other step failure, and any other error or logged Python traceback, is a problem.
    """
    problems = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        kind = event.event_type_value if event is not None else "log"
        error = getattr(event.event_specific_data, "error", None) if event is not None else None
        if error is not None and not is_termination(error):
            problems.append(f"{kind} ({entry.message}):\n{error.to_string()}")
        elif event is not None and event.event_type == dg.DagsterEventType.STEP_FAILURE:
            if error is None:
                problems.append(f"{kind} without an error: {entry.message}")
        if "Traceback" in (entry.user_message or ""):
            problems.append(f"{kind} logged a traceback:\n{entry.user_message}")
    return problems


def test_supervisor_launches_the_stream_and_relaunches_it_after_termination(
    kafka_broker, unique_topics, spark, repo_paths, tmp_path
):
    started = time.monotonic()
    state_dir = tmp_path / "state"
    subset_csv = tmp_path / "subset.csv"
    subset = write_real_subset(repo_paths.dataset_csv, subset_csv, first_rows=2000)
    project = ProjectResource(
        home=str(REPO_ROOT),
        state_dir=str(state_dir),
        dataset_csv=str(subset_csv),
        dataset_sha256="",
        # Every fraud of the dataset in a few thousand rows: ~19% frauds.
        fraud_rate_max=0.5,
    )
    bootstrap = kafka_broker.bootstrap_servers
    promotion = materialize_batch_assets(project, bootstrap)
    batch_seconds = time.monotonic() - started

    audited_dir = project.table("audited_transactions")
    audited = read_table(spark, audited_dir, AUDITED_TRANSACTIONS_SCHEMA)
    expected = expected_alert_ids(project.registry.load(promotion.version), audited, promotion)
    assert audited.count() == len(distinct_transactions(subset))
    assert expected, "the promoted model alerts on nothing: the reconciliation would be empty"

    topics = {
        "FRAUD_TOPIC_TRANSACTIONS": unique_topics(partitions=2, prefix="transactions"),
        "FRAUD_TOPIC_ALERTS": unique_topics(partitions=2, prefix="fraud_alerts"),
        "FRAUD_TOPIC_DEAD_LETTER": unique_topics(partitions=2, prefix="transactions_dlq"),
        "FRAUD_TOPIC_KPIS": unique_topics(partitions=2, prefix="fraud_kpis"),
    }
    env = {
        "FRAUD_HOME": str(REPO_ROOT),
        "FRAUD_STATE_DIR": str(state_dir),
        "FRAUD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        # The run's Spark shares 2 cores with the test's own session and the broker.
        "FRAUD_SPARK_MASTER": "local[2]",
        "FRAUD_SPARK_DRIVER_MEMORY": "1g",
        "FRAUD_SPARK_SHUFFLE_PARTITIONS": "2",
        **topics,
    }
    dagster_home = tmp_path / "dagster_home"
    timings: dict[str, object] = {"batch_assets": round(batch_seconds, 1)}

    with running_dagster_dev(dagster_home, env) as dev:
        wait_for_code_location(dev)
        # The test's view of the same instance, built from its folder: no DAGSTER_HOME is
        # set in this process, so no other test sees this instance.
        instance = dg.DagsterInstance.from_config(str(dev.dagster_home))
        try:
            relaunched_run_id = _supervised_stream_scenario(
                dev, instance, spark, bootstrap, project, promotion, expected, topics, timings
            )
        finally:
            instance.dispose()

    # dagster dev is stopped (the context manager fails the test if anything of it needed
    # SIGKILL): nothing of this Dagster home survives, no run worker and no Spark JVM.
    assert processes_referencing(str(dagster_home)) == {}
    after = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        timings["relaunched_run_status_after_stop"] = after.get_run_by_id(
            relaunched_run_id
        ).status.value
    finally:
        after.dispose()
    timings["total"] = round(time.monotonic() - started, 1)
    # The timings (notably canceled -> relaunch) are worth keeping beside the test output.
    report = json.dumps(timings, indent=2)
    (tmp_path / "timings.json").write_text(report)
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(report)
    print(f"\nsupervised stream timings (s): {timings}")


def _supervised_stream_scenario(
    dev: DagsterDev,
    instance: dg.DagsterInstance,
    spark: SparkSession,
    bootstrap: str,
    project: ProjectResource,
    promotion: Promotion,
    expected: set[str],
    topics: dict[str, str],
    timings: dict[str, object],
) -> str:
    """Launch (by the supervisor), score, terminate (as the UI does), relaunch.

    Returns:
        The id of the relaunched run, running when this returns.
    """
    t0 = time.monotonic()

    def started_run() -> dg.RunRecord | None:
        for record in stream_runs(instance):
            run = record.dagster_run
            if run.status == dg.DagsterRunStatus.STARTED:
                return record
            if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                raise AssertionError(
                    f"stream run {run.run_id} ended {run.status} before the test stopped it:\n"
                    + "\n\n".join(run_errors(instance, run.run_id))
                )
        return None

    first = wait_until(
        started_run,
        RUN_STARTED_TIMEOUT_S,
        "the supervisor's scoring_stream run to start",
        details=dev.log_tail,
    ).dagster_run
    timings["run_started_after_location_loaded"] = round(time.monotonic() - t0, 1)
    assert first.tags.get(MODEL_VERSION_TAG) == promotion.version
    assert first.run_config == {"ops": {"run_scoring_stream": {"config": {"bounded": False}}}}
    assert len(stream_runs(instance)) == 1, "the supervisor launched more than one stream"

    replayed = replay(
        project.table("audited_transactions"),
        bootstrap,
        topics["FRAUD_TOPIC_TRANSACTIONS"],
        progress=False,
    )
    assert replayed.sent > len(expected)

    alerts_table = project.stream_paths.alerts_table
    seen: list[str] = []

    def alerts_complete() -> bool:
        nonlocal seen
        status = instance.get_run_by_id(first.run_id).status
        if status != dg.DagsterRunStatus.STARTED:
            raise AssertionError(
                f"stream run {first.run_id} is {status} while its alerts were awaited:\n"
                + "\n\n".join(run_errors(instance, first.run_id))
            )
        try:
            seen = parquet_alert_ids(spark, alerts_table)
        except Exception as error:  # noqa: BLE001  (a table being written may not list yet)
            seen = [f"unreadable: {error}"]
            return False
        if len(seen) > len(expected):
            raise AssertionError(
                f"the alerts table holds {len(seen)} rows, more than the {len(expected)} "
                f"expected (duplicates or unexpected ids: {sorted(set(seen) - expected)[:20]})"
            )
        return sorted(seen) == sorted(expected)

    t_produced = time.monotonic()
    wait_until(
        alerts_complete,
        ALERTS_TIMEOUT_S,
        f"the {len(expected)} expected alerts in {alerts_table}",
        poll_s=2.0,
        details=lambda: (
            f"seen {len(seen)}: missing {sorted(expected - set(seen))[:20]}, "
            f"unexpected {sorted(set(seen) - expected)[:20]}\n"
            + "\n".join(e.message for e in instance.all_logs(first.run_id)[-20:])
        ),
    )
    timings["alerts_complete_after_produce"] = round(time.monotonic() - t_produced, 1)
    assert len(seen) == len(set(seen)) == len(expected)

    # The run's processes, found before the stop so that "gone" means something.
    worker_family = run_worker_pids(first.run_id)
    assert worker_family, f"no process names run {first.run_id}"

    # Terminate through the webserver, as the UI's Terminate button does.
    t_terminate = time.monotonic()
    DagsterGraphQLClient(hostname="127.0.0.1", port_number=dev.port).terminate_run(first.run_id)

    def canceled() -> dg.RunRecord | None:
        record = instance.get_run_record_by_id(first.run_id)
        status = record.dagster_run.status
        if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS):
            raise AssertionError(f"run {first.run_id} ended {status} instead of CANCELED")
        return record if status == dg.DagsterRunStatus.CANCELED else None

    canceled_record = wait_until(
        canceled, CANCEL_TIMEOUT_S, f"run {first.run_id} to be CANCELED", details=dev.log_tail
    )
    canceled_at = time.monotonic()
    timings["terminate_to_canceled"] = round(canceled_at - t_terminate, 1)

    problems = event_log_problems(instance, first.run_id)
    assert not problems, "\n\n".join(problems)
    interrupted = [
        entry.dagster_event.event_type_value
        for entry in instance.all_logs(first.run_id)
        if entry.dagster_event is not None
        and getattr(entry.dagster_event.event_specific_data, "error", None) is not None
        and is_termination(entry.dagster_event.event_specific_data.error)
    ]
    assert "STEP_FAILURE" in interrupted, "the op was not interrupted the Dagster way"
    wait_until(
        lambda: not alive(worker_family),
        30.0,
        f"the processes of run {first.run_id} to exit",
        details=lambda: str({pid: processes_referencing(str(pid)) for pid in alive(worker_family)}),
        poll_s=0.5,
    )

    # The supervisor relaunches a canceled stream without backoff, on its next tick.
    def relaunched() -> dg.RunRecord | None:
        newer = [r for r in stream_runs(instance) if r.dagster_run.run_id != first.run_id]
        return newer[0] if newer else None

    second = wait_until(
        relaunched,
        RELAUNCH_TIMEOUT_S,
        "the supervisor to relaunch the stream",
        details=dev.log_tail,
    )
    timings["canceled_to_relaunch_observed"] = round(time.monotonic() - canceled_at, 1)
    if canceled_record.end_time is not None:
        timings["canceled_to_relaunch_created"] = round(
            second.create_timestamp.timestamp() - canceled_record.end_time, 1
        )
    assert second.dagster_run.tags.get(MODEL_VERSION_TAG) == promotion.version
    assert len(stream_runs(instance)) == 2

    # Let the relaunched run reach its Spark queries, so that stopping dagster dev below has
    # a live run worker and Spark JVM to take down.
    def second_scoring() -> bool:
        run_id = second.dagster_run.run_id
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            raise AssertionError(
                f"relaunched run {run_id} ended {run.status}:\n"
                + "\n\n".join(run_errors(instance, run_id))
            )
        return any(
            entry.user_message.startswith(SCORING_STARTED) for entry in instance.all_logs(run_id)
        )

    wait_until(
        second_scoring,
        RUN_STARTED_TIMEOUT_S,
        "the relaunched run to start scoring",
        details=dev.log_tail,
    )
    return second.dagster_run.run_id
