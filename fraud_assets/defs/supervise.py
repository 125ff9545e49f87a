"""Supervise: keep one scoring stream alive, and digest new alerts as they arrive.

The sensors only decide and launch; a tick never runs the stream (ticks time out
after 60 s). The decision logic lives in ``fraud_assets.core.supervision``.
"""

import time

import dagster as dg

from fraud_assets.core.supervision import (
    Action,
    BackoffPolicy,
    RunInfo,
    RunPhase,
    SupervisorState,
    decide,
)
from fraud_assets.defs.audits import alert_digest, alert_digest_job
from fraud_assets.defs.resources import ProjectResource
from fraud_assets.defs.stream import STREAM_TAG, alerts_table, scoring_stream

MODEL_VERSION_TAG = "fraud_assets/model_version"
"""Run tag: the model version a supervised stream run was launched with."""

RECENT_RUNS = 25
"""Runs of the stream job the supervisor looks at (newest first)."""

BACKOFF = BackoffPolicy(initial_seconds=30.0, max_seconds=600.0, healthy_after_seconds=600.0)

UNBOUNDED_RUN_CONFIG = {"ops": {"run_scoring_stream": {"config": {"bounded": False}}}}

_PHASES = {
    dg.DagsterRunStatus.QUEUED: RunPhase.PENDING,
    dg.DagsterRunStatus.NOT_STARTED: RunPhase.PENDING,
    dg.DagsterRunStatus.MANAGED: RunPhase.PENDING,
    dg.DagsterRunStatus.STARTING: RunPhase.PENDING,
    dg.DagsterRunStatus.STARTED: RunPhase.RUNNING,
    dg.DagsterRunStatus.CANCELING: RunPhase.STOPPING,
    dg.DagsterRunStatus.FAILURE: RunPhase.FAILED,
    dg.DagsterRunStatus.SUCCESS: RunPhase.SUCCEEDED,
    dg.DagsterRunStatus.CANCELED: RunPhase.CANCELED,
}


def stream_runs(instance: dg.DagsterInstance, limit: int = RECENT_RUNS) -> list[RunInfo]:
    """The newest runs of the stream job, as the supervisor's decision logic sees them."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=scoring_stream.name), limit=limit
    )
    runs = []
    for record in records:
        run = record.dagster_run
        # A suspended run holds no worker: for the stream that is as good as stopped.
        phase = _PHASES.get(run.status, RunPhase.CANCELED)
        runs.append(
            RunInfo(
                run_id=run.run_id,
                phase=phase,
                model_version=run.tags.get(MODEL_VERSION_TAG),
                started_at=record.start_time,
                ended_at=record.end_time,
            )
        )
    return runs


SUPERVISOR_INTERVAL_S = 5
"""How often the supervisor looks (a tick reads the promotion pointer and the newest runs:
milliseconds). It bounds how long a dead stream or a first promotion waits for a launch;
relaunches after a failure still wait out :data:`BACKOFF`, which counts seconds, not ticks."""


@dg.sensor(
    job=scoring_stream,
    minimum_interval_seconds=SUPERVISOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps exactly one scoring stream alive while a model is promoted: launches "
    "it and relaunches it after a failure (backoff 30 s .. 10 min). A promotion or threshold "
    "change does not restart it: the running stream applies it from its next micro-batch.",
)
def stream_supervisor(context: dg.SensorEvaluationContext, project: ProjectResource):
    promotion = project.registry.promoted()
    state = SupervisorState.from_json(context.cursor)
    runs = stream_runs(context.instance)
    decision = decide(
        promotion.version if promotion else None,
        runs,
        now=time.time(),
        state=state,
        policy=BACKOFF,
    )
    context.update_cursor(decision.state.to_json())
    if decision.action is Action.LAUNCH:
        context.log.info(decision.reason)
        return dg.RunRequest(
            # "The launch that follows the newest run": a tick replayed after a daemon restart
            # (same runs, same key) launches nothing twice, and the key survives a cursor reset.
            run_key=f"{decision.model_version}/after/{runs[0].run_id if runs else 'none'}",
            run_config=UNBOUNDED_RUN_CONFIG,
            tags={STREAM_TAG: "scoring", MODEL_VERSION_TAG: decision.model_version},
        )
    return dg.SkipReason(decision.reason)


DIGEST_INTERVAL_S = 5
"""How often the digest sensor looks for new alert materializations (a tick is one event-log
query); the refresh run it launches takes longer than that to load the code."""

DIGEST_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.asset_sensor(
    asset_key=alerts_table.key,
    job=alert_digest_job,
    minimum_interval_seconds=DIGEST_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes alert_digest after new alerts are recorded (at most one run per "
    "tick, however many alert materializations arrived meanwhile, and none while a refresh "
    "is still in progress: the stream records alerts every 30 s, the next tick catches up).",
)
def alert_digest_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    # A refresh is a run of its own (a process loading the code, seconds on a busy machine):
    # one launched per alert materialization would pile up behind each other.
    busy = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=alert_digest_job.name, statuses=DIGEST_IN_PROGRESS),
        limit=1,
    )
    if busy:
        return dg.SkipReason(f"run {busy[0].dagster_run.run_id} is still refreshing the digest")
    return dg.RunRequest(
        run_key=f"alerts@{asset_event.run_id}:{asset_event.timestamp}",
        asset_selection=[alert_digest.key],
    )
