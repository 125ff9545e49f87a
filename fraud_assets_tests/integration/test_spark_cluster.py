"""The scoring job on a Spark standalone cluster gets exactly the alerts of local mode.

A master and a worker are started from the PySpark installation on 127.0.0.1; the job runs
in its own process (``dagster job execute``, one SparkContext per process), configured only
through the environment: ``FRAUD_SPARK_MASTER=spark://...`` and the executor settings. The
expected alert ids come from batch scoring in this process's local Spark.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest

from fraud_assets.kafka.broker import free_port, process_cmdline
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.integration.scale_out import prepare_run, stream_verdict

pytestmark = pytest.mark.integration

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
DAGSTER = Path(sys.executable).parent / "dagster"
WORKER_CORES = 2
WORKER_MEMORY = "1g"
EXECUTOR_MEMORY = "512m"
JOB_TIMEOUT_S = 600


@dataclass(frozen=True)
class StandaloneCluster:
    master_url: str
    master_ui: str
    work_dir: Path

    def state(self) -> dict:
        """The master's JSON status (workers, active and completed applications)."""
        with urllib.request.urlopen(f"{self.master_ui}/json/", timeout=5) as response:
            return json.load(response)


def _spark_env(log_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_DAEMON_MEMORY": "256m",
        "SPARK_LOG_DIR": str(log_dir),
        "PYSPARK_PYTHON": sys.executable,
    }


def _start(command: list[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen:
    with log_file.open("wb") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM by PID, then SIGKILL: the worker's shutdown also kills its executors."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _executor_pids(work_dir: Path) -> list[int]:
    """Live executor JVMs of this test's worker (their command line names its work dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = process_cmdline(int(entry.name)) or []
        if any("CoarseGrainedExecutorBackend" in part for part in argv) and any(
            str(work_dir) in part for part in argv
        ):
            pids.append(int(entry.name))
    return pids


def _wait_for(condition, timeout_s: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if condition():
                return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n" + p.read_text(errors="replace")[-3000:] for p in logs)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s\n{tails}")


@pytest.fixture
def spark_cluster(tmp_path) -> Iterator[StandaloneCluster]:
    """A Spark standalone master and one worker (2 cores, 1g) on loopback."""
    folder = tmp_path / "spark-cluster"
    work_dir = folder / "work"
    work_dir.mkdir(parents=True)
    env = _spark_env(folder)
    port, ui_port, worker_ui_port = free_port(), free_port(), free_port()
    cluster = StandaloneCluster(
        f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}", work_dir
    )
    master_log, worker_log = folder / "master.log", folder / "worker.log"
    processes: list[subprocess.Popen] = []
    try:
        processes.append(
            _start(
                [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host",
                 "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)],
                master_log,
                env,
            )
        )  # fmt: skip
        _wait_for(lambda: cluster.state()["status"] == "ALIVE", 90, "master", [master_log])
        processes.append(
            _start(
                [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", "--host",
                 "127.0.0.1", "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY,
                 "--webui-port", str(worker_ui_port), "--work-dir", str(work_dir),
                 cluster.master_url],
                worker_log,
                env,
            )
        )  # fmt: skip
        _wait_for(
            lambda: [w for w in cluster.state()["workers"] if w["state"] == "ALIVE"],
            90,
            "worker registration",
            [master_log, worker_log],
        )
        yield cluster
    finally:
        for process in reversed(processes):  # worker first: it stops its executors
            _stop(process)
        for pid in _executor_pids(work_dir):  # an executor that outlived its worker
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert _executor_pids(work_dir) == []


def test_scoring_job_on_a_standalone_cluster_gets_the_local_alerts(
    spark, kafka_broker, repo_paths, tmp_path, spark_cluster
):
    started = time.monotonic()
    bootstrap = kafka_broker.bootstrap_servers
    run = prepare_run(spark, repo_paths.dataset_csv, tmp_path, bootstrap, transactions_partitions=3)
    topics = run.kafka.settings.topics
    prepared = time.monotonic()

    config = tmp_path / "scoring_stream.yaml"
    config.write_text(
        json.dumps({"ops": {"run_scoring_stream": {"config": {"bounded": True}}}}),
        encoding="utf-8",
    )
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "FRAUD_HOME": str(REPO_ROOT),
        "FRAUD_STATE_DIR": run.project.state_dir,
        "FRAUD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FRAUD_KAFKA_TRANSACTIONS_PARTITIONS": "3",
        "FRAUD_TOPIC_TRANSACTIONS": topics.transactions,
        "FRAUD_TOPIC_ALERTS": topics.alerts,
        "FRAUD_TOPIC_DEAD_LETTER": topics.dead_letter,
        "FRAUD_TOPIC_KPIS": topics.kpis,
        "FRAUD_SPARK_MASTER": spark_cluster.master_url,
        "FRAUD_SPARK_DRIVER_MEMORY": "1g",
        "FRAUD_SPARK_EXECUTOR_MEMORY": EXECUTOR_MEMORY,
        "FRAUD_SPARK_EXECUTOR_CORES": "1",
        "FRAUD_SPARK_CORES_MAX": str(WORKER_CORES),
        "FRAUD_SPARK_SHUFFLE_PARTITIONS": "2",
    }
    job_log = tmp_path / "dagster_job.log"
    with job_log.open("wb") as log:
        job = subprocess.Popen(
            [str(DAGSTER), "job", "execute", "-m", "fraud_assets.definitions",
             "-j", "scoring_stream", "-c", str(config)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        code = job.wait(timeout=JOB_TIMEOUT_S)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait(timeout=10)
    streamed = time.monotonic()
    output = job_log.read_text(errors="replace")
    assert code == 0, output[-5000:]
    assert "RUN_SUCCESS" in output, output[-5000:]

    # The work ran on the cluster: the master lists the application with the cores it was
    # given, and the worker launched executors for it.
    state = spark_cluster.state()
    apps = [a for a in state["completedapps"] + state["activeapps"] if a["name"] == "fraud_assets"]
    assert len(apps) == 1, state
    executors = list(spark_cluster.work_dir.glob(f"{apps[0]['id']}/*/stderr"))
    # FRAUD_SPARK_EXECUTOR_CORES=1 with 2 cores allowed: two 1-core executors, not one.
    assert len(executors) >= 2, executors
    assert any("CoarseGrainedExecutorBackend" in p.read_text(errors="replace") for p in executors)

    verdict, totals = stream_verdict(spark, run, bootstrap)
    assert totals["scored"] == run.produced
    assert totals["invalid"] == 0
    assert verdict.missing_ids == [] and verdict.missing_alerts == 0
    assert verdict.unexpected_ids == [] and verdict.unexpected_alerts == 0
    assert verdict.duplicate_alerts_parquet == 0
    assert verdict.alerts_parquet == verdict.alerts_kafka_distinct == len(run.expected_ids)
    assert verdict.exact
    print(
        f"\nspark cluster test: prepare {prepared - started:.1f}s, job on the cluster "
        f"{streamed - prepared:.1f}s, {totals['batches']} batches, "
        f"{len(run.expected_ids)} alerts, {len(executors)} executor(s)"
    )
