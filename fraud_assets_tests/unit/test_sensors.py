"""The stream supervisor and the alert-digest sensor, against a real Dagster instance.

The instance uses this repository's dagster.yaml run coordinator (queued, one stream run at
a time); runs are created from the real ``scoring_stream`` job and moved through their
statuses with the same run events the executor records.
"""

import time
from collections.abc import Iterator

import dagster as dg
import pytest
import yaml

from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.supervision import SupervisorState
from fraud_assets.definitions import load_definitions
from fraud_assets.defs.resources import ProjectResource
from fraud_assets.defs.stream import STREAM_TAG, alerts_table, scoring_stream
from fraud_assets.defs.supervise import (
    BACKOFF,
    MODEL_VERSION_TAG,
    UNBOUNDED_RUN_CONFIG,
    alert_digest_sensor,
    stream_supervisor,
)
from fraud_assets_tests.conftest import REPO_ROOT

CLOCK_RESOLUTION_S = 1e-3
"""Tolerance on an instant the supervisor computes from a recorded one: the run store keeps
end times as floats and the cursor as JSON, either of which may round below a millisecond."""


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    settings = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(
        temp_dir=str(home),
        overrides={"run_coordinator": settings["run_coordinator"]},
    ) as test_instance:
        yield test_instance


@pytest.fixture
def project(tmp_path) -> ProjectResource:
    return ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path / "state"))


def promote(project: ProjectResource, version: str) -> None:
    registry = project.registry
    # The supervisor reads only the promotion pointer; a metadata file makes the version known.
    write_json_atomic(registry.version_dir(version) / "metadata.json", {"version": version})
    registry.promote(version, threshold=0.5, policy="max_f1", pr_auc=0.8)


def add_stream_run(instance: dg.DagsterInstance, version: str | None) -> dg.DagsterRun:
    tags = {MODEL_VERSION_TAG: version} if version else {}
    return instance.create_run_for_job(
        job_def=scoring_stream, run_config=UNBOUNDED_RUN_CONFIG, tags=tags
    )


def record(instance: dg.DagsterInstance, run: dg.DagsterRun, event: dg.DagsterEventType) -> None:
    """Record a run event, as the run queue or the executor would (it moves the status)."""
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=event.value, job_name=run.job_name), run_id=run.run_id
    )


def start(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    record(instance, run, dg.DagsterEventType.RUN_START)


def status(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run.run_id).status


def tick(instance, project, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, resources={"project": project}, cursor=cursor
    )
    return stream_supervisor.evaluate_tick(context)


def test_no_promoted_model_skips(instance, project):
    result = tick(instance, project)
    assert result.run_requests == []
    assert "no promoted model" in result.skip_message


def test_nothing_running_launches_one_unbounded_run_with_the_model_tag(instance, project):
    promote(project, "lr-1")
    result = tick(instance, project)
    assert result.skip_message is None
    [request] = result.run_requests
    assert request.run_config == UNBOUNDED_RUN_CONFIG
    assert request.tags[MODEL_VERSION_TAG] == "lr-1"
    assert request.tags[STREAM_TAG] == "scoring"
    assert request.run_key == "lr-1/after/none"


@pytest.mark.parametrize("started", [False, True])
def test_a_live_run_on_the_promoted_version_is_left_alone(instance, project, started):
    promote(project, "lr-1")
    run = add_stream_run(instance, "lr-1")
    if started:
        start(instance, run)
    result = tick(instance, project)
    assert result.run_requests == []
    assert run.run_id in result.skip_message
    assert status(instance, run) != dg.DagsterRunStatus.CANCELING


def test_failed_run_is_relaunched_after_the_backoff(instance, project):
    promote(project, "lr-1")
    run = add_stream_run(instance, "lr-1")
    start(instance, run)
    before_failure = time.time()
    instance.report_run_failed(instance.get_run_by_id(run.run_id))
    failed_at = instance.get_run_record_by_id(run.run_id).end_time
    assert before_failure <= failed_at <= time.time()

    first = tick(instance, project)
    assert first.run_requests == []
    state = SupervisorState.from_json(first.cursor)
    assert state.failures == 1
    assert state.last_failed_run_id == run.run_id
    # The wait runs from the recorded failure, not from whenever the tick happens to run, so
    # the expected instant is exact: no bound that a slow machine could miss.
    assert state.next_launch_at == pytest.approx(
        failed_at + BACKOFF.initial_seconds, abs=CLOCK_RESOLUTION_S
    )
    assert "relaunching in" in first.skip_message

    # The cursor is honoured: the same failure is not counted twice, the wait still holds.
    second = tick(instance, project, cursor=first.cursor)
    assert second.run_requests == []
    assert SupervisorState.from_json(second.cursor).failures == 1

    # Once the wait is over (as recorded in the cursor), one run is launched.
    elapsed = SupervisorState(
        failures=1, next_launch_at=time.time() - 1, last_failed_run_id=run.run_id
    )
    third = tick(instance, project, cursor=elapsed.to_json())
    [request] = third.run_requests
    assert request.tags[MODEL_VERSION_TAG] == "lr-1"
    assert SupervisorState.from_json(third.cursor).failures == 1


def test_promotion_keeps_the_running_stream_which_applies_it_itself(instance, project):
    promote(project, "lr-1")
    old = add_stream_run(instance, "lr-1")
    start(instance, old)
    promote(project, "gbt-2")

    result = tick(instance, project)
    assert result.run_requests == []
    assert "gbt-2" in result.skip_message and old.run_id in result.skip_message
    assert status(instance, old) == dg.DagsterRunStatus.STARTED

    # Once that run has stopped (an operator terminated it), the next one is launched
    # with the promoted version.
    instance.report_run_canceled(instance.get_run_by_id(old.run_id))
    relaunched = tick(instance, project, cursor=result.cursor)
    [request] = relaunched.run_requests
    assert request.tags[MODEL_VERSION_TAG] == "gbt-2"
    assert request.run_config == UNBOUNDED_RUN_CONFIG
    assert request.run_key == f"gbt-2/after/{old.run_id}"


def test_untagged_run_is_waited_for_not_terminated(instance, project):
    promote(project, "lr-2")
    manual = add_stream_run(instance, None)
    start(instance, manual)
    result = tick(instance, project)
    assert result.run_requests == []
    assert status(instance, manual) == dg.DagsterRunStatus.STARTED


def test_alert_materialization_requests_one_digest_refresh(instance):
    context = dg.build_sensor_context(instance=instance)
    quiet = alert_digest_sensor.evaluate_tick(context)
    assert quiet.run_requests == []

    instance.report_runless_asset_event(dg.AssetMaterialization(alerts_table.key))
    instance.report_runless_asset_event(dg.AssetMaterialization(alerts_table.key))
    result = alert_digest_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    [request] = result.run_requests
    assert request.asset_selection == [dg.AssetKey("alert_digest")]
    assert result.cursor

    # Nothing new since the cursor: no second refresh.
    after = alert_digest_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=result.cursor)
    )
    assert after.run_requests == []

    instance.report_runless_asset_event(dg.AssetMaterialization(alerts_table.key))
    newer = alert_digest_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=result.cursor)
    )
    assert len(newer.run_requests) == 1
    assert newer.run_requests[0].run_key != request.run_key


def test_no_digest_refresh_while_one_is_in_progress(instance):
    instance.report_runless_asset_event(dg.AssetMaterialization(alerts_table.key))
    first = alert_digest_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    [request] = first.run_requests
    job = load_definitions().get_job_def("refresh_alert_digest")
    running = instance.create_run_for_job(job_def=job)
    start(instance, running)

    instance.report_runless_asset_event(dg.AssetMaterialization(alerts_table.key))
    busy = alert_digest_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=first.cursor)
    )
    assert busy.run_requests == []
    assert running.run_id in busy.skip_message

    record(instance, running, dg.DagsterEventType.RUN_SUCCESS)
    instance.report_runless_asset_event(dg.AssetMaterialization(alerts_table.key))
    free = alert_digest_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=busy.cursor or first.cursor)
    )
    assert len(free.run_requests) == 1
