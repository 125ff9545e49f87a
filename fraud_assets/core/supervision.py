"""What the stream supervisor should do on one tick: pure decisions, no Dagster.

The supervisor keeps exactly one scoring-stream run alive while a model is promoted. On each
tick it is shown the promoted model version, the recent runs of the stream job (newest
first) and its own small state (the backoff after failures), and answers with one
:class:`Decision`:

- ``SKIP``: nothing to do (no promoted model, a healthy run exists, a run is stopping);
- ``LAUNCH``: no run is alive: start one with the promoted version;
- ``BACKOFF``: the last run failed: wait until ``until`` before launching again.

A promotion (or threshold change) never restarts a healthy run: the running stream re-reads
the promotion pointer at the start of every micro-batch and applies it from the next one
(``fraud_assets.core.stream.ScoringBatchWriter``). A run's model-version tag is only the
version it was launched with.
"""

import enum
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace


class RunPhase(enum.Enum):
    """Where a run of the stream job is in its life (a projection of Dagster run statuses)."""

    PENDING = "pending"
    """Created or queued, not yet running."""
    RUNNING = "running"
    STOPPING = "stopping"
    """Termination requested; the op stops its query at a micro-batch boundary."""
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"

    @property
    def is_alive(self) -> bool:
        """The run holds (or will hold) the stream's checkpoints."""
        return self in (RunPhase.PENDING, RunPhase.RUNNING, RunPhase.STOPPING)


@dataclass(frozen=True)
class RunInfo:
    """One run of the stream job as the supervisor sees it."""

    run_id: str
    phase: RunPhase
    model_version: str | None
    """The ``fraud_assets/model_version`` run tag; None for runs the supervisor did not launch."""
    started_at: float | None = None
    """Unix seconds when the run started, None while it has not."""
    ended_at: float | None = None
    """Unix seconds when the run finished, None while it has not."""


@dataclass(frozen=True)
class BackoffPolicy:
    """Bounded exponential backoff between relaunches after failures."""

    initial_seconds: float = 30.0
    max_seconds: float = 600.0
    healthy_after_seconds: float = 600.0
    """A run alive this long resets the failure count (the stream is healthy again)."""

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        if failures <= 0:
            return 0.0
        return min(self.initial_seconds * 2 ** (failures - 1), self.max_seconds)


@dataclass(frozen=True)
class SupervisorState:
    """What the supervisor remembers between ticks (kept in the sensor cursor as JSON)."""

    failures: int = 0
    """Consecutive failed runs since the stream was last healthy."""
    next_launch_at: float = 0.0
    """Unix seconds before which no new run is launched."""
    last_failed_run_id: str | None = None
    """The newest failed run already counted in ``failures``."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, cursor: str | None) -> "SupervisorState":
        """The state in ``cursor``; a missing or unreadable cursor starts afresh."""
        if not cursor:
            return cls()
        try:
            values = json.loads(cursor)
            return cls(
                failures=int(values.get("failures", 0)),
                next_launch_at=float(values.get("next_launch_at", 0.0)),
                last_failed_run_id=values.get("last_failed_run_id"),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()


class Action(enum.Enum):
    """What the supervisor does on a tick."""

    SKIP = "skip"
    LAUNCH = "launch"
    BACKOFF = "backoff"


@dataclass(frozen=True)
class Decision:
    """The outcome of one tick, and the state to remember for the next one."""

    action: Action
    reason: str
    state: SupervisorState
    model_version: str | None = None
    """The promoted version when launching (it tags the run)."""
    until: float | None = None
    """BACKOFF: Unix seconds after which a launch is allowed."""


def decide(
    promoted_version: str | None,
    runs: Sequence[RunInfo],
    now: float,
    state: SupervisorState,
    policy: BackoffPolicy = BackoffPolicy(),
) -> Decision:
    """Decide what the supervisor does now.

    Args:
        promoted_version: The promoted model version, or None when none is promoted.
        runs: Recent runs of the stream job, newest first (a few dozen is plenty).
        now: The current time, Unix seconds.
        state: The state remembered from the previous tick.
        policy: The backoff between relaunches after failures.

    Returns:
        The decision; launching is left to the caller, and so is terminating.
    """
    alive = [run for run in runs if run.phase.is_alive]
    if promoted_version is None:
        return Decision(Action.SKIP, "no promoted model: the stream is not started", state)

    if alive:
        newest = alive[0]
        if (
            newest.phase is RunPhase.RUNNING
            and newest.started_at is not None
            and now - newest.started_at >= policy.healthy_after_seconds
            and state.failures
        ):
            state = replace(state, failures=0, next_launch_at=0.0)
        verb = {
            RunPhase.PENDING: "is waiting to start",
            RunPhase.RUNNING: "is running",
            RunPhase.STOPPING: "is stopping",
        }[newest.phase]
        if newest.model_version in (None, promoted_version):
            detail = newest.model_version or "an untagged model version"
        else:
            # Not a reason to restart: the run applies the promotion from its next batch.
            detail = f"launched with {newest.model_version}, applying {promoted_version}"
        return Decision(Action.SKIP, f"run {newest.run_id} {verb} ({detail})", state)

    last = runs[0] if runs else None
    if last is not None and last.phase is RunPhase.FAILED:
        if last.run_id != state.last_failed_run_id:
            failures = state.failures + 1
            failed_at = last.ended_at if last.ended_at is not None else now
            state = replace(
                state,
                failures=failures,
                next_launch_at=failed_at + policy.delay(failures),
                last_failed_run_id=last.run_id,
            )
    elif last is not None and last.phase is RunPhase.SUCCEEDED:
        # A run that ended on its own (bounded) did not crash: no reason to wait.
        state = replace(state, failures=0, next_launch_at=0.0)

    if now < state.next_launch_at:
        return Decision(
            Action.BACKOFF,
            f"run {state.last_failed_run_id} failed ({state.failures} consecutive "
            f"failure(s)): relaunching in {state.next_launch_at - now:.0f} s",
            state,
            model_version=promoted_version,
            until=state.next_launch_at,
        )
    return Decision(
        Action.LAUNCH,
        f"no stream run is alive: launching one with model {promoted_version}",
        state,
        model_version=promoted_version,
    )
