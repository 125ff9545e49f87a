"""Fault injection on the real dataset: crash the stream and stop Kafka, then reconcile.

One run (its own state folder, its own broker):

1. start an embedded broker and materialize audit -> train -> select in Dagster (the batch
   stages of :mod:`fraud_assets.end_to_end`);
2. start ``fraud-assets stream`` (unbounded) as a subprocess and replay the audited
   transactions into Kafka in two halves; during each half, ``kill -9`` the stream at random
   moments (seeded) and restart it on the same checkpoints;
3. between the halves, while the stream runs, stop the broker for ``outage_seconds`` and
   start it again on the same data folder and port; a stream that dies meanwhile is
   restarted (every restart is counted);
4. once the replay is done and the stream has caught up, stop it with SIGTERM, run it once
   more bounded (it closes the KPI windows the final watermark allows), and reconcile both
   alert sinks and the KPI table against batch scoring
   (:func:`fraud_assets.end_to_end.reconcile_run`).

Every process the harness starts is stopped by its PID on the way out, also on Ctrl-C.
"""

import logging
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from fraud_assets.core.reconcile import duplicate_payload_mismatches
from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.settings import Topics
from fraud_assets.core.stream_run import MICROBATCH
from fraud_assets.definitions import load_definitions
from fraud_assets.defs.resources import ProjectResource, SparkResource, build_resources
from fraud_assets.end_to_end import (
    QUICK_TRAINING,
    EndToEndOptions,
    create_topics,
    kafka_resource,
    materialize_batch_stages,
    preflight,
    project_resource,
    reconcile_run,
    subset_of_real_data,
    timed,
)
from fraud_assets.kafka.admin import wait_for_broker
from fraud_assets.kafka.broker import (
    BrokerSettings,
    EmbeddedKafka,
    _parent_death_signal_setter,
    free_port,
    is_port_free,
    process_cmdline,
)
from fraud_assets.kafka.io import read_topic, total_messages
from fraud_assets.kafka.producer import replay

log = logging.getLogger(__name__)

STREAM_READY_TIMEOUT_S = 300.0
"""A (re)started stream that has not begun a micro-batch by then is killed anyway (Spark
starts in 10-15 s on an idle 2-core machine, but takes minutes on a loaded one)."""
JVM_EXIT_GRACE_S = 20.0
"""How long the Spark JVM of a killed stream may take to notice (stdin EOF) and exit."""
MAX_CRASH_RESTARTS = 10
"""A stream that keeps dying by itself (not killed by the harness) ends the run."""
RESTART_CYCLE_S = 40.0
"""Rough length of one kill cycle (restart + time to the kill): paces the replay so that
the kills happen while transactions are still arriving."""


@dataclass(frozen=True)
class ChaosOptions:
    """One fault-injection run."""

    home: Path
    state_dir: Path
    rows: int | None = None
    """Replay only the first ``rows`` rows of the real data (plus every fraud); None: all."""
    kills: int = 5
    outage_seconds: float = 30.0
    seed: int = 0
    kill_after: tuple[float, float] = (8.0, 20.0)
    """A kill comes this many seconds (uniform) after the stream began a micro-batch."""
    drain_timeout_s: float = 1800.0
    topics: Topics = Topics()
    progress: bool = False
    alert_delivery: str = MICROBATCH
    """``realtime``: the stream delivers alerts through Spark's real-time mode (its kills
    then also test the real-time query's replay from its checkpoint)."""


@dataclass
class ChaosCounters:
    """What the harness did to the stream and the broker."""

    kills: int = 0
    kills_mid_batch: int = 0
    kills_during_replay: int = 0
    restarts: int = 0
    crash_restarts: int = 0
    stream_exit_codes: list[int] = field(default_factory=list)
    spark_jvms_after_kill: int = 0
    """Spark JVMs still alive ``JVM_EXIT_GRACE_S`` after their driver was killed (then
    killed by PID): 0 means PySpark's gateway always exited on its own."""
    broker_outage_seconds: float = 0.0


# --- processes ----------------------------------------------------------------------------


def _parent_pids() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    children = defaultdict(list)
    for child, parent in _parent_pids().items():
        children[parent].append(child)
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _alive(pid: int) -> bool:
    return process_cmdline(pid) is not None


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class StreamProcess:
    """``fraud-assets stream`` in a subprocess, with its log in ``logs_dir``."""

    def __init__(self, env: dict[str, str], logs_dir: Path, cwd: Path):
        self.env = env
        self.logs_dir = logs_dir
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *extra_args: str) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log_path = self.logs_dir / f"stream-{self.starts:02d}.log"
        command = [sys.executable, "-m", "fraud_assets", "stream", "--no-dagster-home"]
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [*command, *extra_args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal reaches the harness only, which
                # then stops the stream itself. If the harness dies, the stream gets SIGTERM.
                start_new_session=True,
                preexec_fn=_parent_death_signal_setter(),
            )
        log.info("stream started (pid %s, log %s)", self.process.pid, log_path)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill9(self) -> int:
        """SIGKILL the stream; returns how many of its Spark processes outlived it.

        PySpark's gateway JVM exits when its driver's stdin closes; survivors are killed.
        """
        assert self.process is not None
        below = descendants(self.process.pid)
        self.process.kill()
        self.process.wait()
        survivors = _wait_gone(below, JVM_EXIT_GRACE_S)
        _kill_pids(survivors)
        return len(survivors)

    def stop(self, timeout_s: float = 120.0) -> int | None:
        """SIGTERM (queries stop at a micro-batch boundary), SIGKILL after ``timeout_s``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            below = descendants(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("stream (pid %s) ignored SIGTERM: SIGKILL", self.process.pid)
                self.process.kill()
                self.process.wait()
            _kill_pids(_wait_gone(below, JVM_EXIT_GRACE_S))
        return self.process.returncode

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)


# --- checkpoint progress ------------------------------------------------------------------


def _latest_batch(folder: Path) -> int:
    if not folder.is_dir():
        return -1
    ids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    return max(ids, default=-1)


def planned_and_committed(checkpoint_dir: Path) -> tuple[int, int]:
    """The latest micro-batch Spark planned (offsets log) and the latest it committed."""
    return _latest_batch(checkpoint_dir / "offsets"), _latest_batch(checkpoint_dir / "commits")


# --- data ---------------------------------------------------------------------------------


def split_ids(audited_parquet: Path) -> tuple[set[str], set[str]]:
    """The audited transaction ids, split in two halves by ``row_index`` (replay order)."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(audited_parquet), format="parquet").to_table(
        columns=["transaction_id", "row_index"]
    )
    pairs = sorted(
        zip(table["row_index"].to_pylist(), table["transaction_id"].to_pylist(), strict=True)
    )
    half = len(pairs) // 2
    return {i for _, i in pairs[:half]}, {i for _, i in pairs[half:]}


# --- the run ------------------------------------------------------------------------------


class _Replay(threading.Thread):
    """One half of the replay, in the background, so the harness can kill meanwhile."""

    def __init__(self, run: Callable[[], Any]):
        super().__init__(name="chaos-replay", daemon=True)
        self._run = run
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._run()
        except BaseException as error:  # handed to the main thread
            self.error = error


class ChaosRun:
    """The state of one run; :func:`run_chaos` drives it."""

    def __init__(self, options: ChaosOptions):
        self.options = options
        self.rng = random.Random(options.seed)
        self.counters = ChaosCounters()
        self.timings: dict[str, float] = {}
        self.broker: EmbeddedKafka | None = None
        self.stream: StreamProcess | None = None

    # -- broker ---------------------------------------------------------------------------

    def start_broker(self, kafka_dir: Path, jars_dir: Path) -> EmbeddedKafka:
        port = free_port()
        controller_port = free_port()
        while controller_port == port or not is_port_free("127.0.0.1", controller_port):
            controller_port = free_port()
        settings = BrokerSettings(
            state_dir=kafka_dir, jars_dir=jars_dir, port=port, controller_port=controller_port
        )
        self.broker = EmbeddedKafka(settings).start(timeout_s=120)
        return self.broker

    def broker_outage(self) -> None:
        """Stop the broker for ``outage_seconds``, then start it on the same folder and ports."""
        assert self.broker is not None
        log.info("broker outage: stopping Kafka for %.0f s", self.options.outage_seconds)
        down = time.monotonic()
        self.broker.stop()
        self._supervise_for(self.options.outage_seconds, restart=False)
        self.broker.start(timeout_s=120)
        self.counters.broker_outage_seconds = round(time.monotonic() - down, 1)
        log.info("broker back after %.1f s", self.counters.broker_outage_seconds)

    # -- stream ---------------------------------------------------------------------------

    def _restart_if_dead(self) -> None:
        assert self.stream is not None
        code = self.stream.exit_code()
        if code is None:
            return
        self.counters.stream_exit_codes.append(code)
        if self.counters.crash_restarts >= MAX_CRASH_RESTARTS:
            raise RuntimeError(
                f"the stream exited by itself {MAX_CRASH_RESTARTS + 1} times (last code {code}); "
                f"see its logs in {self.stream.logs_dir}"
            )
        log.warning("stream exited by itself (code %s): restarting it", code)
        wait_for_broker(self.broker.bootstrap_servers, timeout_s=120)
        self.stream.start()
        self.counters.crash_restarts += 1
        self.counters.restarts += 1

    def _supervise_for(self, seconds: float, restart: bool = True) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if restart:
                self._restart_if_dead()
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def wait_until_working(
        self, checkpoint_dir: Path, timeout_s: float = STREAM_READY_TIMEOUT_S
    ) -> bool:
        """Supervise until the stream plans a new micro-batch (at most ``timeout_s``)."""
        planned_at_start, _ = planned_and_committed(checkpoint_dir)
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            self._restart_if_dead()
            if planned_and_committed(checkpoint_dir)[0] > planned_at_start:
                return True
            time.sleep(0.5)
        return False

    def kill_cycle(self, checkpoint_dir: Path, replay: _Replay | None) -> None:
        """Wait until the stream works on a micro-batch, wait a random while, ``kill -9``."""
        assert self.stream is not None
        self.wait_until_working(checkpoint_dir)
        self._supervise_for(self.rng.uniform(*self.options.kill_after))
        planned, committed = planned_and_committed(checkpoint_dir)
        pid = self.stream.pid
        self.counters.spark_jvms_after_kill += self.stream.kill9()
        # -9 when the kill met a running stream; its own code if it had exited already.
        self.counters.stream_exit_codes.append(self.stream.exit_code())
        self.counters.kills += 1
        self.counters.kills_mid_batch += int(planned > committed)
        self.counters.kills_during_replay += int(replay is not None and replay.is_alive())
        log.info(
            "kill -9 #%d of pid %s (planned batch %d, committed %d)",
            self.counters.kills,
            pid,
            planned,
            committed,
        )
        self.stream.start()
        self.counters.restarts += 1

    def replay_half(
        self, send: Callable[[float], Any], kills: int, checkpoint_dir: Path, rows: int
    ) -> Any:
        """Replay ``rows`` transactions paced to last about ``kills`` kill cycles; kill."""
        rate = rows / (kills * RESTART_CYCLE_S) if kills else 0.0
        replay_thread = _Replay(lambda: send(rate))
        replay_thread.start()
        for _ in range(kills):
            self.kill_cycle(checkpoint_dir, replay_thread)
        while replay_thread.is_alive():
            self._supervise_for(1.0)
        if replay_thread.error is not None:
            raise replay_thread.error
        return replay_thread.result

    def wait_until_caught_up(self, batch_log_dir: Path, produced: int) -> None:
        """Supervise until the committed batches account for every produced message."""
        from fraud_assets.core.reconcile import batch_log_totals

        deadline = time.monotonic() + self.options.drain_timeout_s
        while time.monotonic() < deadline:
            if batch_log_totals(batch_log_dir).get("input_rows", 0) >= produced:
                return
            self._supervise_for(2.0)
        raise TimeoutError(f"the stream did not catch up in {self.options.drain_timeout_s} s")

    def stop_everything(self) -> None:
        """Stop the stream and the broker by PID (idempotent; used in ``finally``)."""
        if self.stream is not None:
            self.stream.stop()
        if self.broker is not None:
            self.broker.stop()


def stream_env(
    options: ChaosOptions, project: ProjectResource, bootstrap_servers: str
) -> dict[str, str]:
    """The environment of the stream subprocess: the run's home, state, broker and topics."""
    topics = options.topics
    env = {
        **os.environ,
        "FRAUD_HOME": str(options.home),
        "FRAUD_STATE_DIR": str(project.paths.state_dir),
        "FRAUD_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "FRAUD_TOPIC_TRANSACTIONS": topics.transactions,
        "FRAUD_TOPIC_ALERTS": topics.alerts,
        "FRAUD_TOPIC_DEAD_LETTER": topics.dead_letter,
        "FRAUD_TOPIC_KPIS": topics.kpis,
        "FRAUD_TOPIC_KPI_PARTIALS": topics.kpi_partials,
        "FRAUD_ALERT_DELIVERY": options.alert_delivery,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    env.pop("DAGSTER_HOME", None)
    return env


def run_chaos(options: ChaosOptions) -> dict[str, Any]:
    """Run the scenario of the module docstring; return the report (``success`` = all OK)."""
    started = time.monotonic()
    state_dir = options.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    subset = (
        {} if options.rows is None else subset_of_real_data(options.home, state_dir, options.rows)
    )
    project = project_resource(EndToEndOptions(home=options.home, state_dir=state_dir, **subset))
    preflight(project)
    paths = project.paths
    stream_paths = project.stream_paths
    run = ChaosRun(options)
    timings = run.timings
    instance = dg.DagsterInstance.ephemeral()
    try:
        with timed(timings, "broker_start"):
            broker = run.start_broker(paths.kafka_dir, paths.kafka_jars_dir)
        kafka = kafka_resource(broker.bootstrap_servers, options.topics)
        kafka_settings = kafka.settings
        create_topics(kafka_settings)
        resources = {
            **build_resources(),
            "project": project,
            "kafka": kafka,
            "spark": SparkResource(home=str(options.home)),
        }
        materialize_batch_stages(
            load_definitions(),
            resources,
            instance,
            timings,
            tag="fraud_assets/chaos",
            op_config=QUICK_TRAINING,
        )
        first, second = split_ids(paths.tables_dir / "audited_transactions")

        def sender(ids: set[str]) -> Callable[[float], Any]:
            def send(rate: float) -> Any:
                return replay(
                    paths.tables_dir / "audited_transactions",
                    broker.bootstrap_servers,
                    kafka_settings.topics.transactions,
                    transaction_ids=ids,
                    rate=rate,
                    progress=options.progress,
                )

            return send

        run.stream = StreamProcess(
            stream_env(options, project, broker.bootstrap_servers), state_dir / "logs", state_dir
        )
        kills_first = math.ceil(options.kills / 2)
        checkpoint = stream_paths.checkpoint_dir
        with timed(timings, "chaos"):
            run.stream.start()
            sent_first = run.replay_half(sender(first), kills_first, checkpoint, len(first))
            # Mid-stream: the outage starts once the restarted stream is at work again.
            run.wait_until_working(checkpoint, timeout_s=120.0)
            run.broker_outage()
            sent_second = run.replay_half(
                sender(second), options.kills - kills_first, checkpoint, len(second)
            )
            produced = sent_first.sent + sent_second.sent
        with timed(timings, "drain"):
            run.wait_until_caught_up(stream_paths.batch_log_dir, produced)
            final_code = run.stream.stop()
            run.counters.stream_exit_codes.append(final_code)
            # Once more, bounded: whatever is left, and every KPI window the watermark closes.
            run.stream.start("--bounded")
            bounded_code = run.stream.wait(options.drain_timeout_s)
            run.counters.stream_exit_codes.append(bounded_code)
        with timed(timings, "reconcile"):
            summary = reconcile_run(resources, project, kafka_settings)
            records = read_topic(broker.bootstrap_servers, kafka_settings.topics.alerts)
            mismatches = duplicate_payload_mismatches(
                [r.key for r in records], [r.value for r in records]
            )
            dlq_count = total_messages(broker.bootstrap_servers, kafka_settings.topics.dead_letter)
            alerts_end_offsets = total_messages(
                broker.bootstrap_servers, kafka_settings.topics.alerts
            )
    finally:
        run.stop_everything()

    counters = run.counters
    report = {
        "kills": counters.kills,
        "kills_mid_batch": counters.kills_mid_batch,
        "kills_during_replay": counters.kills_during_replay,
        "restarts": counters.restarts,
        "crash_restarts": counters.crash_restarts,
        "stream_exit_codes": counters.stream_exit_codes,
        "spark_jvms_after_kill": counters.spark_jvms_after_kill,
        "broker_outage_seconds": counters.broker_outage_seconds,
        "transactions_produced": produced,
        "transactions_scored": summary["transactions_scored"],
        "transactions_rejected": summary["transactions_rejected"],
        "micro_batches": summary["micro_batches"],
        "expected": summary["alerts_expected"],
        "parquet": summary["alerts_parquet"],
        "kafka": summary["alerts_kafka"],
        "kafka_distinct": summary["alerts_kafka_distinct"],
        "kafka_end_offsets": alerts_end_offsets,
        "kafka_duplicates": summary["alerts_kafka"] - summary["alerts_kafka_distinct"],
        "duplicate_payload_mismatches": mismatches,
        "lost": summary["missing_alerts"],
        "unexpected": summary["unexpected_alerts"],
        "missing_ids": summary["missing_ids"],
        "parquet_duplicates": summary["duplicate_alerts_parquet"],
        "dlq_count": dlq_count,
        "kpis_exact": summary["kpis_exact"],
        "kpi_windows_streamed": summary["kpi_windows_streamed"],
        "kpi_windows_closed": summary["kpi_windows_closed"],
        "kpi_windows_mismatched": summary["kpi_windows_mismatched"],
        "mismatched_windows": summary["mismatched_windows"],
        "model_version": summary["model_version"],
        "threshold": summary["threshold"],
        "seed": options.seed,
        "alert_delivery": options.alert_delivery,
        "rows": options.rows,
        "stage_seconds": timings,
        "wall_seconds": round(time.monotonic() - started, 1),
        "state_dir": str(state_dir),
    }
    report["success"] = bool(
        report["lost"] == 0
        and report["unexpected"] == 0
        and report["parquet_duplicates"] == 0
        and report["parquet"] == report["kafka_distinct"] == report["expected"]
        and report["duplicate_payload_mismatches"] == 0
        and report["kpis_exact"]
        and report["transactions_scored"] == produced
        and report["kills"] >= options.kills
        and bounded_code == 0
    )
    write_json_atomic(state_dir / "report.json", report)
    return report
