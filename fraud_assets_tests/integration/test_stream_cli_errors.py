"""`fraud-assets stream` refuses what an operator must fix: exit 2, one clear line, no
traceback, and nothing written to the tables (the real CLI in a subprocess)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraud_assets.core.contracts import FEATURE_COLUMNS
from fraud_assets.core.registry import ModelRegistry
from fraud_assets.kafka.admin import REACHABILITY_TIMEOUT_S
from fraud_assets.kafka.broker import free_port
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.factories import separable_model

pytestmark = pytest.mark.integration

VERSION = "lr-20260101T000000Z"


def run_stream_cli(state_dir: Path, bootstrap_servers: str, timeout_s: float = 180.0):
    """Run `fraud-assets stream --bounded` on ``state_dir``; stop it by PID whatever happens."""
    env = {
        **os.environ,
        "FRAUD_HOME": str(REPO_ROOT),
        "FRAUD_STATE_DIR": str(state_dir),
        "FRAUD_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    env.pop("DAGSTER_HOME", None)
    command = [sys.executable, "-m", "fraud_assets", "stream", "--bounded", "--no-dagster-home"]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=state_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # Returned, not raised: the caller's checks then show how long it ran, and its output.
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return process.returncode, stdout, stderr, time.monotonic() - started


def assert_operator_error(result, message: str, state_dir: Path) -> str:
    code, stdout, stderr, _ = result
    assert code == 2, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.startswith("fraud-assets stream: error")]
    assert len(lines) == 1, stderr
    assert message in lines[0]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert not (state_dir / "tables").exists() or not any((state_dir / "tables").iterdir())
    return lines[0]


@pytest.fixture(scope="module")
def model(spark):
    return separable_model(spark)


def promote(state_dir: Path, model, metadata: dict) -> ModelRegistry:
    registry = ModelRegistry(state_dir / "models")
    registry.save(VERSION, model, metadata)
    registry.promote(VERSION, 0.5, "fixed", None)
    return registry


def test_no_promoted_model(kafka_broker, tmp_path):
    result = run_stream_cli(tmp_path, kafka_broker.bootstrap_servers)
    assert_operator_error(result, "no promoted model", tmp_path)


def test_model_trained_on_other_features(kafka_broker, model, tmp_path):
    promote(tmp_path, model, {"features": ["V1", "Amount"]})
    result = run_stream_cli(tmp_path, kafka_broker.bootstrap_servers)
    line = assert_operator_error(result, "is incompatible", tmp_path)
    assert "train a new version and promote it" in line


def test_corrupt_model_folder(kafka_broker, model, tmp_path):
    registry = promote(tmp_path, model, {"features": list(FEATURE_COLUMNS)})
    pipeline = registry.version_dir(VERSION) / "pipeline"
    shutil.rmtree(pipeline / "stages")
    (pipeline / "metadata" / "part-00000").write_text("{not json")
    result = run_stream_cli(tmp_path, kafka_broker.bootstrap_servers)
    line = assert_operator_error(result, "cannot be loaded", tmp_path)
    assert "retrain it" in line


STREAM_CLI_MARGIN_S = 15.0
"""What `fraud-assets stream` refused for an unreachable broker may take past the CLI's bare
start-up (``cli_startup_s``) and the reachability timeout: the Dagster run of the stream job
up to its first step (about 3 s here) and the load of a shared 2-core machine changing between
the runs. Kept below kafka-python's own 30 s waits, so a check that does not pass its timeout
on (or a Spark session started first) still fails, and so does a hang."""


def test_unreachable_broker_fails_fast(tmp_path, cli_startup_s):
    bound = cli_startup_s + REACHABILITY_TIMEOUT_S + STREAM_CLI_MARGIN_S
    result = run_stream_cli(tmp_path, f"127.0.0.1:{free_port()}", timeout_s=bound)
    # Refused before Spark starts, not after kafka-python's 30 s waits.
    assert result[3] < bound, f"took {result[3]:.1f} s, start-up alone {cli_startup_s:.1f} s"
    line = assert_operator_error(result, "Kafka is not reachable", tmp_path)
    assert "fraud-assets kafka start" in line


def test_checkpoint_of_another_query_is_refused_and_kept(kafka_broker, model, tmp_path):
    promote(tmp_path, model, {"features": list(FEATURE_COLUMNS)})
    checkpoint = tmp_path / "checkpoints" / "scoring"
    checkpoint.mkdir(parents=True)
    identity = {"query_name": "fraud_scoring", "source_topic": "someone-elses-topic"}
    (checkpoint / "fraud_assets_query.json").write_text(json.dumps(identity))
    (checkpoint / "offsets").mkdir()
    before = sorted(p.name for p in checkpoint.rglob("*"))

    result = run_stream_cli(tmp_path, kafka_broker.bootstrap_servers)
    line = assert_operator_error(result, "never deletes checkpoints", tmp_path)
    assert "someone-elses-topic" in line
    assert sorted(p.name for p in checkpoint.rglob("*")) == before
