"""Session fixtures: one real local Spark session and one real Kafka broker per test run."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fraud_assets.core.paths import ProjectPaths
from fraud_assets.core.settings import SparkSettings
from fraud_assets.core.spark import get_spark
from fraud_assets_tests.kafka_fixtures import (  # noqa: F401  (pytest fixtures)
    kafka_broker,
    kafka_settings,
    unique_topics,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cli_startup_s() -> float:
    """Seconds ``fraud-assets --help`` takes here: the CLI's start-up with nothing to do.

    Building the parser imports every sub-command (Dagster, PySpark's Python side), so this
    is what any CLI run pays before its own work. Fail-fast bounds of CLI subprocess tests
    start from it, so a slow machine raises the bound with the start-up it slows.
    """
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "fraud_assets", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
        timeout=600,
    )
    return time.monotonic() - started


@pytest.fixture(scope="session")
def repo_paths() -> ProjectPaths:
    return ProjectPaths.at(REPO_ROOT)


@pytest.fixture(scope="session")
def spark(repo_paths: ProjectPaths) -> SparkSession:
    """Real local Spark (2 cores), with the Kafka connector, shared by every test."""
    session = get_spark(
        SparkSettings(
            master="local[2]",
            driver_memory="3g",
            shuffle_partitions=2,
            connector_jars_dir=repo_paths.spark_jars_dir,
        )
    )
    yield session
    session.stop()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-examples",
        type=int,
        default=1,
        help=(
            "Hypothesis examples of the stream fuzz test (integration/test_fuzz.py): 1, the "
            "default, is CI's one seeded run; more explore from a random seed (make fuzz)"
        ),
    )
