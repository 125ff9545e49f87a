"""``fraud-assets bench --smoke``: the benchmark harness runs end to end and stays correct.

It asserts the report's shape and the correctness of every pipeline's outputs, never a
timing: timings depend on the machine and on what else runs on it.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fraud_assets.bench.ladder import RUNGS

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET = REPO_ROOT / "data" / "creditcard.csv"
THROUGHPUT = (
    "production",
    "production_shadow",
    "plain_python_fast",
    "reference_style",
    "plain_python",
)
LATENCY = (
    "production",
    "bare_microbatch",
    "reference_style",
    "plain_python",
    "production_realtime",
    "bare_realtime",
)
MARKER = "FRAUD_BENCH_SMOKE_RUN"
"""An environment variable every process the benchmark starts inherits (broker, Spark JVM,
generator, plain-Python consumers): the way to find them all afterwards."""


def processes_with(marker: str) -> list[int]:
    """PIDs whose environment holds ``marker``; a process that exits mid-scan is skipped."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_bench_smoke_reports_every_pipeline_and_exact_alerts(tmp_path: Path) -> None:
    if not DATASET.is_file():
        pytest.fail(f"{DATASET} is missing: `make test` fetches it (make setup)")
    out = tmp_path / "bench"
    marker = f"{MARKER}={uuid.uuid4().hex}"
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        MARKER: marker.split("=", 1)[1],
    }
    command = [sys.executable, "-m", "fraud_assets", "--home", str(REPO_ROOT), "bench"]
    process = subprocess.Popen([*command, "--smoke", "--out", str(out)], env=env)
    try:
        returncode = process.wait(timeout=1140)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Nothing the benchmark started (broker, Spark JVM, generator) outlives it.
    assert processes_with(marker) == []

    report = json.loads((out / "report.json").read_text())
    assert returncode == 0, report.get("correctness")
    assert report["smoke"] is True

    # Correctness: every pipeline's alerts are exactly the batch-expected set.
    assert set(report["correctness"]) == set(THROUGHPUT)
    for name in THROUGHPUT:
        correctness = report["correctness"][name]
        assert correctness["exact"], (name, correctness)
        assert correctness["alerts_expected"] > 0
        assert correctness["missing_alerts"] == correctness["unexpected_alerts"] == 0
    # The production run and the fast peer drained the whole backlog (several copies of
    # the subset under fresh ids), the slow baselines its slice (one copy).
    slice_expected = report["correctness"]["reference_style"]["alerts_expected"]
    assert report["backlog_copies"] >= 2
    assert report["backlog_messages"] == report["backlog_copies"] * report["slice_messages"]
    assert report["correctness"]["production"]["alerts_expected"] == (
        report["backlog_copies"] * slice_expected
    )

    # Shape of the figures the issue asks for.
    tps = report["throughput_tps"]
    assert set(tps) == {*THROUGHPUT, "production_first_batch"}
    assert all(value > 0 for value in tps.values()), tps
    details = report["throughput_details"]["production"]
    assert details["batches"] >= 2 and details["first_batch_rows"] > 0
    for key in ("floor_ratio", "ratio_vs_reference_style", "ratio_vs_plain_python"):
        assert report[key] > 0, key
    assert report["ratio_vs_plain_python_fast"] > 0
    # The shadow run scored every message twice: its alerts are still the champion's, and
    # its shadow table holds every message once.
    shadow = report["throughput_details"]["production_shadow"]
    assert shadow["shadow_exact"] and shadow["shadow_rows"] == report["backlog_messages"]
    assert (
        report["correctness"]["production_shadow"]["alerts_expected"]
        == (report["correctness"]["production"]["alerts_expected"])
    )
    assert report["shadow_cost_ratio"] > 0
    assert report["generator_tps"] > 0
    for name in LATENCY:
        detail = report["latency_details"][name]
        assert "error" not in detail, (name, detail)
        point = detail["1000"]
        # 1k tx/s for a few seconds: every timed alert arrives within the drain wait on any
        # machine that runs the suite; a pipeline that drops or stalls shows up here.
        assert point["timed"] > 0 and point["missing"] == 0, (name, point)
        assert set(report["latency_ms"][name]) == {"1000"}  # the warm-up is not a rate
        assert detail["warm_up"]["timed"] > 0
        assert set(report["latency_ms"][name]["1000"]) == {"p50", "p95", "p99", "p999"}
        assert point["p50"] <= point["p95"] <= point["p99"] <= point["p999"] <= point["max"]
    # Real-time delivery runs with the micro-batch query beside it, whose lag is reported.
    assert report["latency_details"]["production_realtime"]["1000"]["microbatch_lag"]["samples"]
    fixed = report["microbatch_fixed_ms"]
    assert set(fixed) == {"production", "bare_microbatch", "bare_microbatch_tuned"}
    assert all(value > 0 for value in fixed.values()), fixed
    for name in THROUGHPUT:
        assert report["rss_mb"][name] > 0
        assert set(report["cpu"][name]) == {"cpu_seconds", "avg_cores"}
    assert {"cores", "spark", "kafka", "python", "realtime_master"} <= set(report["machine"])
    assert report["settings"]["stream"]["max_offsets_per_trigger"] > 0
    assert {goal["met"] for goal in report["goals"].values()} <= {True, False}

    # The profile from Spark's event log: the production micro-batches taken apart.
    profile = report["profile"]
    assert profile["fixed_cost"]["batches"] > 0 and profile["fixed_cost"]["jobs"] >= 1
    assert profile["throughput_warm"]["batches"] >= 1
    assert profile["bare_fixed_cost"]["batches"] > 0
    # A batch's jobs fit in the run (job ids of the later real-time session's application
    # once landed on these batches and made them tens of minutes long).
    for batch in (b for b in profile["throughput_batches"] if b["rows"]):
        assert 0 < batch["jobs_busy_ms"] <= batch["jobs_wall_ms"] < report["wall_seconds"] * 1000
        assert batch["task_cpu_ms"] > 0

    # The cost ladder: every rung read the whole slice, and every scoring rung alerted on
    # exactly the batch-expected ids (compared as sets by the harness).
    ladder = report["cost_ladder"]
    assert set(ladder) == set(RUNGS)
    for name, rung in ladder.items():
        assert rung["exact"], (name, rung)
        assert rung["rows"] == report["slice_messages"], (name, rung)
        assert rung["tps"] > 0 and rung["core_us_per_message"] > 0
        scoring = name.endswith("score") or name == "ledger_write"
        assert rung["alerts"] == (slice_expected if scoring else None), name
    assert report["cost_ladder_exact"] is True

    # One JSON parse per message in the production micro-batch and the real-time chain.
    counts = report["from_json_count"]
    assert counts["production_microbatch_parse"] == 1
    assert counts["uncached_scoring_chain"] == 1
    plan = (out / "plan.txt").read_text()
    assert "from_json" in plan and "Physical Plan" in plan
