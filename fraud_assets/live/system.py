"""The live system: broker, Dagster (code server, webserver, daemon), model, paced replay.

:func:`run_live` starts, in order, and stops in reverse:

1. the embedded Kafka broker on the state's ``kafka/`` folder (its topics and offsets
   survive restarts; a broker of that folder that already runs is used and left running);
2. a Dagster code server for ``fraud_assets.definitions``, and the webserver and daemon
   that share it (``<state>/live/workspace.yaml``), on 127.0.0.1, with the instance in
   ``DAGSTER_HOME``; their output goes to ``<state>/live/logs/``, not to the terminal;
3. audit -> train -> select in this process (``end_to_end.materialize_batch_stages``,
   recorded in the same instance, so the UI shows those runs) when no model is promoted;
4. the paced replay (:class:`fraud_assets.live.replay.LiveReplay`).

The stream itself is not started here: the daemon's ``stream_supervisor`` sensor launches the
``scoring_stream`` run once a model is promoted, so the UI shows it like any supervised run,
and ``alert_digest_sensor`` refreshes the digest after new alerts. The runner watches the
instance and logs one line as each of these first shows in the UI.

Stopping (Ctrl-C, SIGTERM): the replay; the daemon (no sensor may relaunch what is being
stopped); every run still in progress, terminated through its code server as the UI's
Terminate button does (the stream stops its queries at a micro-batch boundary); the
webserver and code server; anything else carrying this session's marker; the broker last.
Runs a previous session left in progress without a live worker (the machine restarted, a
``kill -9``) are marked canceled on the next start, so the supervisor launches afresh.
"""

import logging
import os
import shutil
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from fraud_assets.end_to_end import (
    EndToEndOptions,
    create_topics,
    kafka_resource,
    materialize_batch_stages,
    preflight,
    project_resource,
)
from fraud_assets.errors import OperatorError
from fraud_assets.interrupts import ignore_stop_signals
from fraud_assets.kafka.broker import BrokerSettings, EmbeddedKafka, free_port
from fraud_assets.live.processes import (
    SESSION_ENV,
    Child,
    is_alive,
    processes_mentioning,
    processes_with_env,
    stop_pids,
)
from fraud_assets.live.replay import LiveReplay

log = logging.getLogger(__name__)

CODE_LOCATION = "fraud_assets"
"""The location name ``workspace.yaml`` gives the code: schedules' and sensors' state is
kept per location, so ``make dev`` and ``make live`` share it."""

STREAM_JOB = "scoring_stream"
LIVE_TAG = "fraud_assets/live"
STARTUP_TIMEOUT_S = 180.0
RUN_STOP_TIMEOUT_S = 60.0
"""How long a terminated run may take to stop its queries and exit."""
CHILD_GRACE_S = 20.0
LIVE_KPI_TRIGGER_INTERVAL = "2 seconds"
"""The KPI query's cadence in the live system (``FRAUD_KPI_TRIGGER_INTERVAL`` overrides it)."""
IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


@dataclass(frozen=True)
class LiveOptions:
    """Where the live system keeps its state, its ports and how fast it replays."""

    home: Path
    state_dir: Path
    dagster_home: Path
    port: int = 3000
    """The Dagster webserver's port."""
    kafka_port: int = 9092
    rate: float = 200.0
    """Transactions per second of the replay."""
    rows: int | None = None
    """Train and replay on the first ``rows`` rows plus every fraud (quick runs, tests)."""
    verbose: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def live_dir(self) -> Path:
        return self.state_dir / "live"


@dataclass
class Milestones:
    """When each part of the UI state first showed, seconds after the command started."""

    started: float = field(default_factory=time.time)
    seen: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> bool:
        """Record ``name`` now; whether it is new."""
        if name in self.seen:
            return False
        self.seen[name] = round(time.time() - self.started, 1)
        return True


def prepare_dagster_home(dagster_home: Path, home: Path) -> None:
    """Create ``DAGSTER_HOME`` with the repository's ``dagster.yaml`` (as ``make`` does)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    source, target = home / "dagster.yaml", dagster_home / "dagster.yaml"
    if source.is_file() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)


def workspace_yaml(code_server_port: int) -> str:
    """A workspace naming the shared code server (webserver and daemon load no code)."""
    return (
        "# Written by `fraud-assets live`: the webserver and daemon share its code server.\n"
        "load_from:\n"
        "  - grpc_server:\n"
        "      host: 127.0.0.1\n"
        f"      port: {code_server_port}\n"
        f"      location_name: {CODE_LOCATION}\n"
    )


def child_env(options: LiveOptions, bootstrap_servers: str) -> dict[str, str]:
    """The environment of the Dagster processes, and so of every run they launch."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(options.dagster_home),
        "FRAUD_HOME": str(options.home),
        "FRAUD_STATE_DIR": str(options.state_dir),
        "FRAUD_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
        # The replay compresses event time ~120x: the default 10 s would be 20 minutes.
        "FRAUD_KPI_TRIGGER_INTERVAL": os.environ.get(
            "FRAUD_KPI_TRIGGER_INTERVAL", LIVE_KPI_TRIGGER_INTERVAL
        ),
    }


def dagster_commands(options: LiveOptions, code_server_port: int) -> dict[str, list[str]]:
    """The command of each Dagster process, by name."""
    dagster = [sys.executable, "-m", "dagster"]
    workspace = str(options.live_dir / "workspace.yaml")
    return {
        "code server": [
            *dagster,
            "code-server",
            "start",
            "-h",
            "127.0.0.1",
            "-p",
            str(code_server_port),
            "-m",
            "fraud_assets.definitions",
            "-d",
            str(options.home),
            "--location-name",
            CODE_LOCATION,
        ],
        "webserver": [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-w",
            workspace,
            "-h",
            "127.0.0.1",
            "-p",
            str(options.port),
        ],
        "daemon": [sys.executable, "-m", "dagster._daemon", "run", "-w", workspace],
    }


# --- state left by an earlier session ---------------------------------------------------


def take_lock(live_dir: Path) -> Path:
    """Refuse a second live session on the same state; the lock file to remove at the end."""
    live_dir.mkdir(parents=True, exist_ok=True)
    lock = live_dir / "live.pid"
    if lock.exists():
        try:
            pid = int(lock.read_text().strip())
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and is_alive(pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"live" in cmdline:
                raise OperatorError(
                    f"a live system already runs on {live_dir.parent} (pid {pid}): open it, "
                    f"or stop it first (kill {pid})"
                )
    lock.write_text(f"{os.getpid()}\n")
    return lock


def cancel_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark canceled the runs left in progress whose worker process no longer exists."""
    orphaned = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(IN_PROGRESS))):
        run = record.dagster_run
        if processes_mentioning(run.run_id):
            continue
        instance.report_run_canceled(
            run, message="no process of this run is alive (left by an earlier session)"
        )
        orphaned.append(run.run_id)
    return orphaned


# --- watching the UI state ----------------------------------------------------------------


def _materialized_since(instance: dg.DagsterInstance, key: str, since: float) -> bool:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return event is not None and event.timestamp >= since


def watch(instance: dg.DagsterInstance, milestones: Milestones, url: str) -> None:
    """Log one line as each part of the UI state shows for the first time."""
    since = milestones.started
    if "stream_run" not in milestones.seen:
        records = instance.get_run_records(
            filters=dg.RunsFilter(job_name=STREAM_JOB, statuses=[dg.DagsterRunStatus.STARTED]),
            limit=1,
        )
        if records and milestones.mark("stream_run"):
            run_id = records[0].dagster_run.run_id
            log.info("stream: the supervisor launched run %s: %s/runs/%s", run_id[:8], url, run_id)
    for key in ("alerts", "kpis"):
        if key not in milestones.seen and _materialized_since(instance, key, since):
            milestones.mark(key)
            log.info("%s: materialized by the stream run: %s/assets/%s", key, url, key)
    if "alert_digest" not in milestones.seen and _materialized_since(
        instance, "alert_digest", since
    ):
        milestones.mark("alert_digest")
        log.info("alert_digest: refreshed by its sensor: %s/assets/alert_digest", url)


def ui_ready(milestones: Milestones) -> bool:
    """Whether the stream run, alerts, kpis and the refreshed digest have all shown."""
    return {"stream_run", "alerts", "kpis", "alert_digest"} <= milestones.seen.keys()


# --- the session ----------------------------------------------------------------------------


def _start_broker(options: LiveOptions, cleanup: ExitStack, project: Any) -> EmbeddedKafka:
    """The state's broker: started here (and stopped last), or the one already running."""
    paths = project.paths
    broker = EmbeddedKafka(
        BrokerSettings(
            state_dir=paths.kafka_dir, jars_dir=paths.kafka_jars_dir, port=options.kafka_port
        )
    )
    if broker.is_running():
        log.info("kafka: using the broker already running from %s", paths.kafka_dir)
        return broker
    log.info("kafka: starting the broker (state in %s)", paths.kafka_dir)
    broker.start()
    cleanup.callback(broker.stop)
    return broker


def _wait_for_webserver(url: str, children: list[Child], timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in children:
            if child.exited() is not None:
                raise OperatorError(
                    f"the Dagster {child.name} exited with code {child.exited()}; its log "
                    f"({child.log_path}) ends:\n{child.log_tail()}"
                )
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    raise OperatorError(f"the Dagster webserver did not answer on {url} within {timeout_s:.0f} s")


def _stop_runs(instance: dg.DagsterInstance) -> None:
    """Terminate every run in progress (through its code server), wait for them to end."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=list(IN_PROGRESS)))
    pending = []
    for record in records:
        run = record.dagster_run
        if run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
            instance.report_run_canceled(run, message="the live system stopped before it started")
            continue
        log.info("stop: terminating run %s (%s)", run.run_id[:8], run.job_name)
        try:
            instance.run_launcher.terminate(run.run_id)
        except Exception as error:  # the worker is stopped by its PID below
            log.warning("could not terminate run %s: %s", run.run_id[:8], error)
        pending.append(run.run_id)
    deadline = time.monotonic() + RUN_STOP_TIMEOUT_S
    while pending and time.monotonic() < deadline:
        time.sleep(1.0)
        pending = [
            run_id
            for run_id in pending
            if processes_mentioning(run_id)
            or (instance.get_run_by_id(run_id).status in IN_PROGRESS)
        ]
    for run_id in pending:
        pids = processes_mentioning(run_id)
        log.warning(
            "run %s did not stop in %.0f s: stopping pids %s", run_id[:8], RUN_STOP_TIMEOUT_S, pids
        )
        stop_pids(pids, 10.0)
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in IN_PROGRESS:
            instance.report_run_canceled(run, message="stopped with the live system")


def run_live(options: LiveOptions) -> None:
    """Start the live system, keep it running until interrupted (Ctrl-C, SIGTERM), stop it.

    Raises:
        OperatorError: Another live session runs on this state, or a part did not start.
    """
    milestones = Milestones()
    session_id = uuid.uuid4().hex
    # Everything started from here on inherits it: the broker, Spark, Dagster, run workers.
    os.environ[SESSION_ENV] = session_id
    e2e = EndToEndOptions(home=options.home, state_dir=options.state_dir)
    subset: dict[str, Any] = {}
    if options.rows is not None:
        from fraud_assets.end_to_end import subset_of_real_data

        subset = subset_of_real_data(options.home, options.state_dir, options.rows)
        e2e = EndToEndOptions(home=options.home, state_dir=options.state_dir, **subset)
    project = project_resource(e2e)
    preflight(project)
    prepare_dagster_home(options.dagster_home, options.home)
    os.environ["DAGSTER_HOME"] = str(options.dagster_home)
    lock = take_lock(options.live_dir)
    instance = dg.DagsterInstance.get()
    children: list[Child] = []
    replayer: LiveReplay | None = None
    with ExitStack() as cleanup:
        cleanup.callback(lock.unlink, missing_ok=True)
        broker = _start_broker(options, cleanup, project)
        bootstrap_servers = broker.bootstrap_servers
        kafka = kafka_resource(bootstrap_servers, e2e.topics)
        create_topics(kafka.settings)

        def stop_everything() -> None:
            # A second Ctrl-C must not cut the stop short (and leave a broker or a JVM).
            ignore_stop_signals()
            if replayer is not None:
                replayer.stop()
                log.info(
                    "stop: replay stopped (%s transactions sent this session)", f"{replayer.sent:,}"
                )
            for child in children:
                if child.name == "daemon":
                    child.stop(CHILD_GRACE_S)
            _stop_runs(instance)
            for child in reversed(children):
                child.stop(CHILD_GRACE_S)
            # The broker stops last, by the callback registered before this one.
            leftovers = processes_with_env(SESSION_ENV, session_id, exclude=[broker.pid() or 0])
            if leftovers:
                log.warning("stop: stopping leftover processes %s", leftovers)
                stop_pids(list(leftovers), 10.0)
            log.info("stop: Dagster stopped; the state stays in %s", options.state_dir)

        cleanup.callback(stop_everything)
        orphaned = cancel_orphaned_runs(instance)
        if orphaned:
            log.info("dagster: marked %d run(s) of an earlier session canceled", len(orphaned))
        code_server_port = free_port()
        options.live_dir.mkdir(parents=True, exist_ok=True)
        (options.live_dir / "workspace.yaml").write_text(workspace_yaml(code_server_port))
        env = child_env(options, bootstrap_servers)
        commands = dagster_commands(options, code_server_port)
        log.info(
            "dagster: starting the code server, webserver and daemon (logs in %s)",
            options.live_dir / "logs",
        )
        for name in ("code server", "webserver", "daemon"):
            log_path = options.live_dir / "logs" / f"{name.replace(' ', '-')}.log"
            children.append(Child.start(name, commands[name], env, options.home, log_path))

        registry = project.registry
        promotion = registry.promoted()
        if promotion is None:
            log.info("model: none promoted in %s: audit -> train -> select", options.state_dir)
            _train(project, kafka, instance, options, milestones)
            promotion = registry.require_promoted()
        else:
            log.info(
                "model: %s is promoted (threshold %s): no training",
                promotion.version,
                promotion.threshold,
            )

        _wait_for_webserver(options.url, children, STARTUP_TIMEOUT_S)
        milestones.mark("webserver")
        log.info(
            "dagster: UI at %s; open first %s/runs (the scoring_stream run), then "
            "%s/assets/kpis and %s/assets/alert_digest",
            options.url,
            options.url,
            options.url,
            options.url,
        )

        audited = project.table("audited_transactions")
        replayer = LiveReplay(audited, kafka.settings, options.rate)
        log.info(
            "replay: %s tx/s from position %s (event time compressed about %.0fx)",
            f"{options.rate:g}",
            f"{replayer.start_position:,}",
            options.rate * replayer.period.total_seconds() / max(replayer.rows, 1),
        )
        replayer.start()

        ready_logged = False
        while True:
            watch(instance, milestones, options.url)
            if ui_ready(milestones) and not ready_logged:
                ready_logged = True
                milestones.mark("ui_ready")
                log.info(
                    "live: the UI shows the stream at work (%.0f s after the start); "
                    "Ctrl-C stops everything, the state stays for the next start",
                    milestones.seen["ui_ready"],
                )
                _write_status(options, milestones, promotion.version)
            for child in children:
                if child.exited() is not None:
                    raise OperatorError(
                        f"the Dagster {child.name} exited with code {child.exited()}; its "
                        f"log ({child.log_path}) ends:\n{child.log_tail()}"
                    )
            time.sleep(2.0)


FIRST_TRAINING = {
    "fraud_model": {"algorithms": ["lr"], "protocols": ["time_ordered"], "refit": False}
}
"""What the live system trains when no model is promoted: the logistic regression alone
(the model real-time delivery runs, and the quickest to fit), without the rolling-origin
folds (one model has nothing to be compared with), and not refitted on its validation slice
(the saved model is the one its threshold was chosen on; one fit of two, ~15 s less).
Materializing ``fraud_model`` from the UI trains the full set and the cost-aware selection
promotes one."""


def _train(project, kafka, instance, options: LiveOptions, milestones: Milestones) -> None:
    from fraud_assets.core.spark import stop_spark
    from fraud_assets.definitions import load_definitions
    from fraud_assets.defs.resources import build_resources

    timings: dict[str, float] = {}
    resources = {**build_resources(), "project": project, "kafka": kafka}
    try:
        materialize_batch_stages(
            load_definitions(),
            resources,
            instance,
            timings,
            tag=LIVE_TAG,
            verbose=options.verbose,
            op_config=FIRST_TRAINING,
        )
    finally:
        # The stream and digest runs have their own Spark: this process keeps no JVM.
        stop_spark()
    milestones.mark("model_promoted")
    log.info("model: promoted (%s)", "  ".join(f"{k} {v:.0f}s" for k, v in timings.items()))


def _write_status(options: LiveOptions, milestones: Milestones, version: str) -> None:
    from fraud_assets.core.registry import write_json_atomic

    write_json_atomic(
        options.live_dir / "status.json",
        {
            "url": options.url,
            "model_version": version,
            "seconds_after_start": milestones.seen,
            "started_at": milestones.started,
        },
    )
