"""Where a micro-batch's time goes, read from Spark's own event log (its event timeline).

The benchmark's Spark session writes Spark's event log (``spark.eventLog.enabled``), the
file the Spark history server draws its timelines from. Every job of a streaming query
carries the query id and the batch id in its properties, and every progress report of the
query is in the log too, so each micro-batch can be taken apart exactly:

- the trigger, from its progress report: ``latestOffset``, ``queryPlanning``, ``walCommit``,
  ``addBatch`` (our ``foreachBatch`` writer, for the scoring query), ``commitOffsets``;
- the Spark jobs inside it: how many, their wall time from submission to completion, the
  part of that spent before the first task started (scheduling), the tasks' run and CPU
  time;
- what is left: the driver's own time between and around the jobs (building and planning
  DataFrames, file renames, Python).

:func:`batch_profiles` gives one row per batch; :func:`summarize` the medians of small
batches (the fixed cost) and of each offered rate.
"""

import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

_PROGRESS = "org.apache.spark.sql.streaming.StreamingQueryListener$QueryProgressEvent"


@dataclass
class JobSpan:
    """One Spark job of a micro-batch, and its tasks."""

    job_id: int
    submitted_ms: int
    completed_ms: int = 0
    first_task_ms: int | None = None
    tasks: int = 0
    task_run_ms: int = 0
    task_cpu_ms: float = 0.0
    stages: list[int] = field(default_factory=list)

    @property
    def wall_ms(self) -> int:
        return max(0, self.completed_ms - self.submitted_ms)


@dataclass(frozen=True)
class BatchProfile:
    """One micro-batch of one query, from the event log."""

    query_id: str
    batch_id: int
    rows: int
    started_ms: int
    trigger_ms: int
    phases_ms: dict[str, int]
    jobs: int
    jobs_wall_ms: int
    """Sum of the jobs' wall times (jobs run at once count each)."""
    jobs_busy_ms: int
    """Wall time during which at least one job of the batch ran."""
    scheduling_ms: int
    """Sum over jobs of submission to first task start."""
    task_cpu_ms: int
    task_run_ms: int
    driver_ms: int
    """Trigger time outside every job: planning, building DataFrames, commits, Python."""

    def as_dict(self) -> dict:
        return asdict(self)


def _epoch_ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


def _busy(spans: list[tuple[int, int]]) -> int:
    """Length of the union of ``[start, end)`` spans."""
    total, current_end = 0, None
    for start, end in sorted(spans):
        if current_end is None or start > current_end:
            total += end - start
            current_end = end
        elif end > current_end:
            total += end - current_end
            current_end = end
    return total


def event_log_files(event_dir: Path) -> list[Path]:
    """The event log files under ``event_dir`` (Spark's rolling ``eventlog_v2_*`` folders)."""
    return sorted(p for p in event_dir.rglob("events_*") if p.is_file())


def _application(path: Path) -> str:
    """The Spark application an event-log file belongs to (rolling logs: its folder)."""
    return path.parent.name if path.parent.name.startswith("eventlog_v2_") else path.name


def batch_profiles(event_files: list[Path], query_id: str) -> list[BatchProfile]:
    """Every micro-batch of query ``query_id`` found in the event log, oldest first."""
    # Job and stage ids count from 0 in every Spark application (the benchmark runs two, one
    # after the other, into one event-log folder): they are keyed by application.
    jobs: dict[tuple[str, int], JobSpan] = {}
    job_batch: dict[tuple[str, int], int] = {}
    stage_job: dict[tuple[str, int], tuple[str, int]] = {}
    progress: dict[int, dict] = {}
    for path in event_files:
        app = _application(path)
        with path.open() as handle:
            for line in handle:
                event = json.loads(line)
                kind = event["Event"]
                if kind == "SparkListenerJobStart":
                    props = event.get("Properties") or {}
                    if props.get("sql.streaming.queryId") != query_id:
                        continue
                    job = (app, event["Job ID"])
                    jobs[job] = JobSpan(event["Job ID"], event["Submission Time"])
                    jobs[job].stages = list(event.get("Stage IDs", []))
                    job_batch[job] = int(props.get("streaming.sql.batchId", -1))
                    for stage in jobs[job].stages:
                        stage_job[(app, stage)] = job
                elif kind == "SparkListenerJobEnd" and (app, event["Job ID"]) in jobs:
                    jobs[(app, event["Job ID"])].completed_ms = event["Completion Time"]
                elif kind == "SparkListenerTaskEnd" and (app, event.get("Stage ID")) in stage_job:
                    span = jobs[stage_job[(app, event["Stage ID"])]]
                    info, metrics = event["Task Info"], event.get("Task Metrics") or {}
                    launch = info["Launch Time"]
                    span.first_task_ms = min(launch, span.first_task_ms or launch)
                    span.tasks += 1
                    span.task_run_ms += metrics.get("Executor Run Time", 0)
                    span.task_cpu_ms += metrics.get("Executor CPU Time", 0) / 1e6
                elif kind == _PROGRESS and event["progress"].get("id") == query_id:
                    report = event["progress"]
                    progress[int(report["batchId"])] = report
    by_batch: dict[int, list[JobSpan]] = defaultdict(list)
    for job_id, span in jobs.items():
        by_batch[job_batch[job_id]].append(span)
    profiles = []
    for batch_id, report in sorted(progress.items()):
        durations = report.get("durationMs") or {}
        trigger = int(durations.get("triggerExecution", 0))
        spans = [s for s in by_batch.get(batch_id, []) if s.completed_ms]
        busy = _busy([(s.submitted_ms, s.completed_ms) for s in spans])
        profiles.append(
            BatchProfile(
                query_id=query_id,
                batch_id=batch_id,
                rows=sum(int(x.get("numInputRows", 0)) for x in report.get("sources") or []),
                started_ms=_epoch_ms(report["timestamp"]),
                trigger_ms=trigger,
                phases_ms={k: int(v) for k, v in durations.items() if k != "triggerExecution"},
                jobs=len(spans),
                jobs_wall_ms=sum(s.wall_ms for s in spans),
                jobs_busy_ms=busy,
                scheduling_ms=sum(
                    max(0, (s.first_task_ms or s.submitted_ms) - s.submitted_ms) for s in spans
                ),
                task_cpu_ms=int(sum(s.task_cpu_ms for s in spans)),
                task_run_ms=sum(s.task_run_ms for s in spans),
                driver_ms=max(0, trigger - busy),
            )
        )
    return profiles


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def summarize(profiles: list[BatchProfile]) -> dict:
    """Medians of a set of batches: trigger, phases, jobs, scheduling, CPU, driver time."""
    if not profiles:
        return {"batches": 0}
    phases = sorted({name for p in profiles for name in p.phases_ms})
    return {
        "batches": len(profiles),
        "rows_median": _median([p.rows for p in profiles]),
        "trigger_ms": _median([p.trigger_ms for p in profiles]),
        "phases_ms": {n: _median([p.phases_ms.get(n, 0) for p in profiles]) for n in phases},
        "jobs": _median([p.jobs for p in profiles]),
        "jobs_busy_ms": _median([p.jobs_busy_ms for p in profiles]),
        "scheduling_ms": _median([p.scheduling_ms for p in profiles]),
        "task_cpu_ms": _median([p.task_cpu_ms for p in profiles]),
        "driver_ms": _median([p.driver_ms for p in profiles]),
    }


def small_batches(profiles: list[BatchProfile], max_rows: int = 10) -> list[BatchProfile]:
    """Batches of 1 to ``max_rows`` rows: what a micro-batch costs before its data."""
    return [p for p in profiles if 0 < p.rows <= max_rows]


def in_window(profiles: list[BatchProfile], start_ms: int, end_ms: int) -> list[BatchProfile]:
    """Batches that started in ``[start_ms, end_ms)`` (epoch milliseconds)."""
    return [p for p in profiles if start_ms <= p.started_ms < end_ms]
