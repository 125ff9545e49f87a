"""The benchmark's event-log profile: jobs of one query, per micro-batch, per application."""

import json

from fraud_assets.bench.timeline import batch_profiles, event_log_files

QUERY = "q-1"


def _write(folder, events):
    folder.mkdir(parents=True)
    path = folder / "events_1_app"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")


def _job(job_id, stage, submitted, completed, query=QUERY, batch=0):
    props = {"sql.streaming.queryId": query, "streaming.sql.batchId": str(batch)}
    return [
        {
            "Event": "SparkListenerJobStart",
            "Job ID": job_id,
            "Submission Time": submitted,
            "Stage IDs": [stage],
            "Properties": props,
        },
        {
            "Event": "SparkListenerTaskEnd",
            "Stage ID": stage,
            "Task Info": {"Launch Time": submitted + 10},
            "Task Metrics": {"Executor Run Time": 80, "Executor CPU Time": 50_000_000},
        },
        {"Event": "SparkListenerJobEnd", "Job ID": job_id, "Completion Time": completed},
    ]


def _progress(batch, timestamp="2026-12-02T06:00:00.000Z", trigger=500):
    return {
        "Event": "org.apache.spark.sql.streaming.StreamingQueryListener$QueryProgressEvent",
        "progress": {
            "id": QUERY,
            "batchId": batch,
            "timestamp": timestamp,
            "durationMs": {"triggerExecution": trigger, "addBatch": 400},
            "sources": [{"numInputRows": 7}],
        },
    }


def test_job_ids_of_a_later_application_do_not_touch_the_first_ones(tmp_path):
    events = tmp_path / "spark-events"
    # The query's job 0 ran 100 ms; a later application reuses job id 0 and stage id 0 for
    # another query's job, which ends ten minutes later.
    _write(events / "eventlog_v2_local-1", [*_job(0, 0, 1_000, 1_100), _progress(0)])
    _write(events / "eventlog_v2_local-2", _job(0, 0, 600_000, 601_000, query="other"))

    [profile] = batch_profiles(event_log_files(events), QUERY)

    assert profile.jobs == 1
    assert profile.jobs_wall_ms == profile.jobs_busy_ms == 100
    assert profile.task_run_ms == 80 and profile.task_cpu_ms == 50
    assert profile.scheduling_ms == 10
    assert profile.driver_ms == 400  # trigger 500 - jobs 100
    assert profile.rows == 7
