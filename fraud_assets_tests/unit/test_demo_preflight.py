"""`fraud-assets demo` fails fast, with a message that says what to do, on bad input."""

import subprocess
import sys
import time

from fraud_assets_tests.conftest import REPO_ROOT


def run_demo(home):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "fraud_assets", "--home", str(home), "demo", "--no-dagster-home"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, time.monotonic() - started


def test_missing_dataset_names_the_file_and_the_remedy(tmp_path):
    result, seconds = run_demo(tmp_path)
    assert result.returncode == 2
    assert str(tmp_path / "data" / "creditcard.csv") in result.stderr
    assert "make setup" in result.stderr
    assert "Traceback" not in result.stderr
    assert seconds < 60
    assert not (tmp_path / "var" / "demo" / "summary.json").exists()


def test_corrupt_dataset_is_refused_without_writing_a_summary(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "creditcard.csv").write_text('"Time","V1"\n0,1\n')
    result, _ = run_demo(tmp_path)
    assert result.returncode == 2
    assert "creditcard.csv" in result.stderr and "header" in result.stderr.lower()
    assert not (tmp_path / "var" / "demo" / "summary.json").exists()
