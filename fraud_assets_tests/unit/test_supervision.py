"""The stream supervisor's decisions, tick by tick (pure logic, no Dagster)."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraud_assets.core.supervision import (
    Action,
    BackoffPolicy,
    RunInfo,
    RunPhase,
    SupervisorState,
    decide,
)

NOW = 1_000_000.0
POLICY = BackoffPolicy(initial_seconds=30, max_seconds=600, healthy_after_seconds=600)


def run(run_id: str, phase: RunPhase, version: str | None = "v1", **times: float) -> RunInfo:
    return RunInfo(run_id=run_id, phase=phase, model_version=version, **times)


def test_no_promoted_model_skips_even_without_runs():
    decision = decide(None, [], NOW, SupervisorState(), POLICY)
    assert decision.action is Action.SKIP
    assert "no promoted model" in decision.reason


def test_nothing_ever_ran_launches_the_promoted_version():
    decision = decide("v1", [], NOW, SupervisorState(), POLICY)
    assert decision.action is Action.LAUNCH
    assert decision.model_version == "v1"


@pytest.mark.parametrize("phase", [RunPhase.PENDING, RunPhase.RUNNING, RunPhase.STOPPING])
def test_an_alive_run_on_the_promoted_version_is_left_alone(phase):
    decision = decide("v1", [run("r1", phase)], NOW, SupervisorState(), POLICY)
    assert decision.action is Action.SKIP
    assert "r1" in decision.reason


@pytest.mark.parametrize("phase", [RunPhase.PENDING, RunPhase.RUNNING])
def test_a_newer_promotion_leaves_a_healthy_run_alone(phase):
    # The running stream re-reads the promotion every micro-batch: no restart needed.
    runs = [run("r2", phase, "v1", started_at=NOW - 100)]
    decision = decide("v2", runs, NOW, SupervisorState(), POLICY)
    assert decision.action is Action.SKIP
    assert "r2" in decision.reason
    assert "launched with v1, applying v2" in decision.reason


def test_a_newer_promotion_after_the_run_stopped_launches_the_promoted_version():
    stopped = [run("r2", RunPhase.CANCELED, "v1", ended_at=NOW - 8)]
    relaunch = decide("v2", stopped, NOW, SupervisorState(), POLICY)
    assert relaunch.action is Action.LAUNCH
    assert relaunch.model_version == "v2"


def test_untagged_runs_are_waited_for():
    decision = decide("v2", [run("manual", RunPhase.RUNNING, None)], NOW, SupervisorState())
    assert decision.action is Action.SKIP
    assert "untagged" in decision.reason


def test_failure_backs_off_then_relaunches():
    failed = [run("f1", RunPhase.FAILED, ended_at=NOW)]
    first = decide("v1", failed, NOW + 10, SupervisorState(), POLICY)
    assert first.action is Action.BACKOFF
    assert first.until == NOW + 30
    assert first.state.failures == 1
    assert first.state.last_failed_run_id == "f1"

    # The same failure is counted once, however many ticks see it.
    again = decide("v1", failed, NOW + 20, first.state, POLICY)
    assert again.action is Action.BACKOFF
    assert again.state.failures == 1

    after = decide("v1", failed, NOW + 31, again.state, POLICY)
    assert after.action is Action.LAUNCH
    assert after.state.failures == 1


def test_consecutive_failures_double_the_wait_up_to_the_cap():
    state = SupervisorState()
    waits = []
    now = NOW
    for index in range(8):
        runs = [run(f"f{index}", RunPhase.FAILED, ended_at=now)]
        decision = decide("v1", runs, now, state, POLICY)
        assert decision.action is Action.BACKOFF
        waits.append(decision.until - now)
        now = decision.until
        launched = decide("v1", runs, now, decision.state, POLICY)
        assert launched.action is Action.LAUNCH
        state = launched.state
    assert waits == [30, 60, 120, 240, 480, 600, 600, 600]


def test_a_healthy_run_resets_the_failure_count():
    state = SupervisorState(failures=4, next_launch_at=NOW - 1, last_failed_run_id="f")
    young = [run("r", RunPhase.RUNNING, started_at=NOW - 60)]
    assert decide("v1", young, NOW, state, POLICY).state.failures == 4
    healthy = [run("r", RunPhase.RUNNING, started_at=NOW - 601)]
    assert decide("v1", healthy, NOW, state, POLICY).state.failures == 0


def test_a_cancelled_run_is_relaunched_without_backoff():
    runs = [run("c", RunPhase.CANCELED, ended_at=NOW - 1)]
    assert decide("v1", runs, NOW, SupervisorState(), POLICY).action is Action.LAUNCH


def test_state_survives_the_cursor_round_trip_and_bad_cursors_start_afresh():
    state = SupervisorState(failures=3, next_launch_at=12.5, last_failed_run_id="x")
    assert SupervisorState.from_json(state.to_json()) == state
    assert SupervisorState.from_json(None) == SupervisorState()
    assert SupervisorState.from_json("not json") == SupervisorState()
    assert SupervisorState.from_json('["a list"]') == SupervisorState()


phases = st.sampled_from(list(RunPhase))
versions = st.sampled_from(["v1", "v2", None])


@given(
    st.lists(st.tuples(phases, versions), max_size=6),
    st.sampled_from(["v1", "v2"]),
    st.integers(min_value=0, max_value=10),
)
def test_never_launches_while_a_run_is_alive(run_specs, promoted, failures):
    runs = [
        run(f"r{i}", phase, version, started_at=NOW - 1, ended_at=NOW - 1)
        for i, (phase, version) in enumerate(run_specs)
    ]
    state = replace(SupervisorState(), failures=failures)
    decision = decide(promoted, runs, NOW, state, POLICY)
    if any(r.phase.is_alive for r in runs):
        # Whatever version a live run was launched with: it is never replaced or doubled.
        assert decision.action is Action.SKIP
    else:
        assert decision.action in (Action.LAUNCH, Action.BACKOFF)
        assert decision.model_version == promoted
