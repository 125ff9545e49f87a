"""What `fraud-assets demo` prints: one line per stage and the summary, no library noise.

The real command in a subprocess (its own broker, Spark and Dagster) on a subset of the
real data, its terminal output captured whole.
"""

import subprocess
import sys

import pytest

from fraud_assets_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

NOISE = {
    "kafka-python's event-loop warning": "is blocking the event loop",
    "Dagster's BetaWarning": "BetaWarning",
    "Dagster's event lines": " - dagster - DEBUG - ",
    "py4j's INFO lines": "py4j.",
    "alembic's INFO lines": "alembic.",
    "matplotlib's font cache line": "matplotlib.font_manager",
    "Spark's task-size warning": "contains a task of very large size",
    "Spark's plan-truncation warning": "Truncated the string representation of a plan",
    "Spark's log4j banner": "Using Spark's default log4j profile",
    "Hadoop's native-library warning": "NativeCodeLoader",
}
"""Library lines seen in a demo's terminal before they were fixed or quieted."""

STAGE_LINES = (
    "kafka: starting an embedded broker",
    "Kafka broker ready at 127.0.0.1:",
    "audit: materializing raw_transactions, audited_transactions",
    "train: materializing fraud_model",
    "select: materializing model_selection, promoted_model",
    "replay: the audited transactions into transactions",
    "Replayed ",
    "stream: the scoring_stream job, bounded",
    "reconcile: both alert sinks and the KPI table against batch scoring",
    "fraud_assets demo: OK",
)


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> str:
    """The terminal of one demo run on 3,000 rows (+ every fraud) of the real data."""
    home = tmp_path_factory.mktemp("home")
    (home / "data").mkdir()
    (home / "data" / "creditcard.csv").symlink_to(REPO_ROOT / "data" / "creditcard.csv")
    (home / "var").mkdir()
    (home / "var" / "jars").symlink_to(REPO_ROOT / "var" / "jars")
    result = subprocess.run(
        [sys.executable, "-m", "fraud_assets", "--home", str(home), "demo", "--rows", "3000"]
        + ["--no-dagster-home", "--no-progress"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    return result.stdout


@pytest.mark.timeout(1500)
def test_the_demo_prints_its_stages_and_no_library_noise(demo_output):
    missing = [line for line in STAGE_LINES if line not in demo_output]
    assert missing == [], demo_output
    noisy = {name: pattern for name, pattern in NOISE.items() if pattern in demo_output}
    assert noisy == {}, demo_output
    # About one line per stage, a few per micro-batch, and the summary: not a flood.
    assert len(demo_output.splitlines()) < 40, demo_output
