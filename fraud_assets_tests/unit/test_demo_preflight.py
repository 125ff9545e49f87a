"""`fraud-assets demo` fails fast, with a message that says what to do, on bad input."""

import subprocess
import sys
import time

import pytest

from fraud_assets_tests.conftest import REPO_ROOT

PREFLIGHT_MARGIN_S = 30.0
"""What a demo refused by its preflight may take past the CLI's bare start-up
(``cli_startup_s``): the demo handler's own set-up and the preflight's file checks (well under
a second here), plus the load of a shared 2-core machine changing between the two runs. That
nothing (broker, tables) was started first is checked on the home folder, not on the clock;
the bound is there so that a hang fails."""

DEMO_RUN_TIMEOUT_S = 120.0
"""How long a demo run may take before it is stopped where the test makes no timing claim
(the corrupt-dataset case)."""


def run_demo(home, timeout_s: float = DEMO_RUN_TIMEOUT_S):
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fraud_assets", "--home", str(home)]
            + ["demo", "--no-dagster-home"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"fraud-assets demo still running after {timeout_s:.0f} s")
    return result, time.monotonic() - started


def test_missing_dataset_names_the_file_and_the_remedy(tmp_path, cli_startup_s):
    bound = cli_startup_s + PREFLIGHT_MARGIN_S
    result, seconds = run_demo(tmp_path, timeout_s=bound)
    assert result.returncode == 2
    assert str(tmp_path / "data" / "creditcard.csv") in result.stderr
    assert "make setup" in result.stderr
    assert "Traceback" not in result.stderr
    assert seconds < bound, f"took {seconds:.1f} s, start-up alone {cli_startup_s:.1f} s"
    # Refused before anything started: no broker state, tables or summary in the home.
    assert not (tmp_path / "var").exists()


def test_corrupt_dataset_is_refused_without_writing_a_summary(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "creditcard.csv").write_text('"Time","V1"\n0,1\n')
    result, _ = run_demo(tmp_path)
    assert result.returncode == 2
    assert "creditcard.csv" in result.stderr and "header" in result.stderr.lower()
    assert not (tmp_path / "var" / "demo" / "summary.json").exists()
