"""Fault injection on a real-data subset: kill -9 of the stream and a broker outage lose and
duplicate nothing (the CI variant of `fraud-assets chaos`)."""

import json
import os
from pathlib import Path

import pytest

from fraud_assets.chaos.harness import ChaosOptions, run_chaos
from fraud_assets.core.reconcile import duplicate_payload_mismatches
from fraud_assets_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def test_payload_mismatch_counts_keys_repeated_with_other_bytes():
    keys = [b"1", b"1", b"2", b"2", b"3"]
    values = [b"a", b"a", b"b", b"c", b"d"]
    assert duplicate_payload_mismatches(keys, values) == 1


# About 3 minutes each on an idle 2-core machine; far longer when CPUs are shared.
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("delivery", ["microbatch", "realtime"])
def test_kills_and_broker_outage_lose_and_duplicate_nothing(spark, tmp_path, delivery):
    report = run_chaos(
        ChaosOptions(
            home=REPO_ROOT,
            state_dir=tmp_path / "chaos",
            rows=20_000,
            kills=3,
            outage_seconds=10,
            seed=7,
            alert_delivery=delivery,
        )
    )
    assert report == json.loads((tmp_path / "chaos" / "report.json").read_text())
    # What the harness did.
    assert report["kills"] == 3 and report["alert_delivery"] == delivery
    # Exit codes as the OS reported them: each kill met a running stream (-9, not a stream
    # that had already exited), and every stream process started was seen to exit.
    codes = report["stream_exit_codes"]
    assert codes.count(-9) == report["kills"]
    assert len(codes) == report["restarts"] + 2  # the first start and the bounded run
    assert report["kills_mid_batch"] >= 1
    assert report["broker_outage_seconds"] >= 10
    assert report["spark_jvms_after_kill"] == 0  # PySpark's gateway exits with its driver
    # The final unbounded stream stopped on SIGTERM, the bounded run completed.
    assert report["stream_exit_codes"][-2:] == [130, 0]
    # What the pipeline kept: every transaction once, every expected alert once in Parquet,
    # at least once in Kafka with byte-identical duplicates, KPIs equal to batch.
    assert report["transactions_scored"] == report["transactions_produced"] > 20_000
    assert report["expected"] > 0
    assert report["lost"] == 0, report["missing_ids"]
    assert report["unexpected"] == 0
    assert report["parquet_duplicates"] == 0
    assert report["parquet"] == report["kafka_distinct"] == report["expected"]
    # Every record the broker holds was read back (not a reader that stopped early).
    assert report["kafka"] == report["kafka_end_offsets"]
    assert report["duplicate_payload_mismatches"] == 0
    assert report["dlq_count"] == 0
    assert report["kpis_exact"] is True
    assert report["success"] is True
    # Nothing the harness started is still running: no broker of this state folder, no
    # stream (nor its Spark JVM, which inherits the stream's environment).
    assert started_from(tmp_path / "chaos") == []


def started_from(state_dir: Path) -> list[int]:
    """Live processes whose command line or environment names ``state_dir``."""
    marker = str(state_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in text:
            found.append(int(entry.name))
    return found
