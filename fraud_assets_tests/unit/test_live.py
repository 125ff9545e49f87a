"""The live runner's pieces: replay laps, orphaned runs, the lock, the workspace it writes."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fraud_assets.defs.stream import scoring_stream
from fraud_assets.errors import OperatorError
from fraud_assets.kafka.producer import read_audited_rows, transaction_message
from fraud_assets.live.processes import SESSION_ENV, processes_with_env
from fraud_assets.live.replay import LAP_GAP, lap_position, lap_transform, table_shape
from fraud_assets.live.system import (
    CODE_LOCATION,
    cancel_orphaned_runs,
    take_lock,
    workspace_yaml,
)

BASE = datetime(2013, 9, 1, tzinfo=UTC)


def write_audited(folder, rows: int) -> None:
    folder.mkdir(parents=True)
    columns = {
        "row_index": list(range(rows)),
        "transaction_id": [str(i) for i in range(rows)],
        "event_time": pa.array(
            [BASE + timedelta(seconds=10 * i) for i in range(rows)], pa.timestamp("us", tz="UTC")
        ),
        "Time": [10.0 * i for i in range(rows)],
        **{f"V{k}": [0.5] * rows for k in range(1, 29)},
        "Amount": [1.0 + i for i in range(rows)],
        "Class": [i % 2 for i in range(rows)],
    }
    pq.write_table(pa.table(columns), folder / "part-0.parquet")


def test_positions_map_to_laps_and_rows():
    assert lap_position(0, 5) == (0, 0)
    assert lap_position(4, 5) == (0, 4)
    assert lap_position(5, 5) == (1, 0)
    assert lap_position(12, 5) == (2, 2)
    with pytest.raises(ValueError):
        lap_position(3, 0)


def test_later_laps_get_fresh_ids_and_later_event_times(tmp_path):
    audited = tmp_path / "audited"
    write_audited(audited, 4)
    rows, period = table_shape(audited)
    assert rows == 4
    assert period == timedelta(seconds=30) + LAP_GAP

    _, lap0 = read_audited_rows(audited)
    first = [transaction_message(lap_transform(0, period)(row)) for row in lap0]
    _, lap2 = read_audited_rows(audited, offset=1)
    later = [transaction_message(lap_transform(2, period)(row)) for row in lap2]

    assert [m["transaction_id"] for m in first] == ["0", "1", "2", "3"]
    assert [m["transaction_id"] for m in later] == ["1.2", "2.2", "3.2"]
    # Two periods later, so event time only moves forward across laps.
    assert later[0]["event_time"] == "2013-09-01T00:03:10Z"
    assert later[0]["Amount"] == first[1]["Amount"] and later[0]["Class"] == first[1]["Class"]


def test_offset_and_limit_select_a_slice(tmp_path):
    audited = tmp_path / "audited"
    write_audited(audited, 6)
    count, rows = read_audited_rows(audited, offset=2, limit=3)
    assert count == 3
    assert [row["transaction_id"] for row in rows] == ["2", "3", "4"]


def test_workspace_names_the_shared_code_server():
    workspace = yaml.safe_load(workspace_yaml(4321))
    [entry] = workspace["load_from"]
    assert entry["grpc_server"] == {
        "host": "127.0.0.1",
        "port": 4321,
        "location_name": CODE_LOCATION,
    }


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance


def started_run(instance) -> dg.DagsterRun:
    run = instance.create_run_for_job(job_def=scoring_stream)
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value="PIPELINE_START", job_name=run.job_name),
        run_id=run.run_id,
    )
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    return run


def test_runs_without_a_live_worker_are_canceled_and_live_ones_kept(instance):
    orphan, alive = started_run(instance), started_run(instance)
    # A process whose command line names the run, as a run worker's does.
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", alive.run_id])
    try:
        assert cancel_orphaned_runs(instance) == [orphan.run_id]
        assert instance.get_run_by_id(orphan.run_id).status == dg.DagsterRunStatus.CANCELED
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    finally:
        worker.kill()
        worker.wait()


def test_a_second_live_session_on_the_same_state_is_refused(tmp_path):
    live_dir = tmp_path / "live"
    lock = take_lock(live_dir)
    assert lock.read_text().strip().isdigit()
    # Another process holding the lock whose command line says `live`.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "live"])
    try:
        lock.write_text(f"{other.pid}\n")
        with pytest.raises(OperatorError, match=f"pid {other.pid}"):
            take_lock(live_dir)
    finally:
        other.kill()
        other.wait()
    # A stale lock (its process is gone) is taken over.
    assert take_lock(live_dir) == lock


def test_session_processes_are_found_by_their_marker():
    env = {"PATH": "/usr/bin:/bin", SESSION_ENV: "abc123"}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        assert child.pid in processes_with_env(SESSION_ENV, "abc123")
        assert child.pid not in processes_with_env(SESSION_ENV, "abc12")
    finally:
        child.kill()
        child.wait()
    assert child.pid not in processes_with_env(SESSION_ENV, "abc123")


STOP_HANDLERS_AFTER_DAGSTER = """
import signal, sys
import dagster as dg
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job
from fraud_assets.interrupts import stop_on_signals
if sys.argv[1] == "installed":
    stop_on_signals()
@dg.asset
def one() -> int:
    return 1
assert dg.materialize([one]).success  # in process, as the live system's first training
print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
"""


@pytest.mark.parametrize(("mode", "ignored"), [("installed", "False"), ("inherited", "True")])
def test_sigterm_still_stops_after_an_in_process_dagster_run(mode, ignored, tmp_path):
    # "inherited" shows the cause: Dagster maps SIGTERM to SIGINT's (ignored) handler.
    result = subprocess.run(
        [sys.executable, "-c", STOP_HANDLERS_AFTER_DAGSTER, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == ignored


def test_children_can_be_stopped_even_when_the_parent_ignores_sigterm():
    # Every long-lived child (broker, Dagster processes) starts with this preexec_fn.
    script = (
        "import signal, subprocess, sys\n"
        "from fraud_assets.kafka.broker import parent_death_signal_setter\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=parent_death_signal_setter())\n"
        "status = open(f'/proc/{child.pid}/status').read()\n"
        "ignored = int(status.split('SigIgn:')[1].split()[0], 16)\n"
        "child.terminate()\n"
        "print(ignored & (1 << (signal.SIGTERM - 1)), ignored & (1 << (signal.SIGINT - 1)),"
        " child.wait(timeout=10))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0", str(-15)]  # not ignored; SIGTERM ended it
