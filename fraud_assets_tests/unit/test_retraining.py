"""Retraining on a rhythm: the model assets' automation conditions, ticked in a test instance.

The conditions are the code location's own; the instance records real Dagster events (a
materialization of the audited data, runs of a stand-in drift audit whose check passes or
fails) and ``dg.evaluate_automation_conditions`` ticks at chosen times, as the daemon's
automation sensor would.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

# The daemon's own grouping of one tick's requests into runs (no public equivalent).
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

from fraud_assets.definitions import load_definitions
from fraud_assets.defs.drift import DRIFT_CHECK
from fraud_assets.defs.resources import ProjectResource, SparkResource
from fraud_assets.defs.retraining import DRIFT_ASSET, MODEL_ASSETS, RETRAIN_CRON
from fraud_assets.defs.selection import model_quality_gate, model_selection, promoted_model
from fraud_assets.defs.train import fraud_model
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.factories import audited_df, separable_transactions

MODEL_KEYS = {dg.AssetKey(name) for name in MODEL_ASSETS}
WEDNESDAY = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NEXT_MONDAY_3AM = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return dg.Definitions.merge(load_definitions())


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        # The training's input exists (otherwise retraining waits for it).
        test_instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="audited_transactions")
        )
        yield test_instance


def record_drift_audit(instance: dg.DagsterInstance, passed: bool) -> None:
    """A run of the drift audit: its materialization and its check's evaluation."""

    @dg.asset(
        key=DRIFT_ASSET,
        check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset=DRIFT_ASSET)],
    )
    def stand_in():
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(
            check_name=DRIFT_CHECK, passed=passed, severity=dg.AssetCheckSeverity.WARN
        )

    assert dg.materialize([stand_in], instance=instance).success


class Ticks:
    """Successive evaluations of the model assets' conditions, each from the last cursor."""

    def __init__(self, definitions: dg.Definitions, instance: dg.DagsterInstance):
        self.definitions, self.instance, self.cursor = definitions, instance, None
        self.last = None

    def at(self, when: datetime) -> set[dg.AssetKey]:
        """The model assets requested on a tick at ``when``."""
        self.last = dg.evaluate_automation_conditions(
            defs=self.definitions,
            instance=self.instance,
            asset_selection=dg.AssetSelection.assets(*MODEL_ASSETS),
            evaluation_time=when,
            cursor=self.cursor,
        )
        self.cursor = self.last.cursor
        return {key for key in MODEL_KEYS if self.last.get_num_requested(key)}


def test_nothing_is_requested_without_a_weekly_tick_or_a_drift_failure(definitions, instance):
    ticks = Ticks(definitions, instance)
    assert ticks.at(WEDNESDAY) == set()
    assert ticks.at(WEDNESDAY + timedelta(hours=1)) == set()
    record_drift_audit(instance, passed=True)
    assert ticks.at(WEDNESDAY + timedelta(hours=2)) == set()
    # A training run started by hand is not followed by an automatic selection or promotion.
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="fraud_model"))
    assert ticks.at(WEDNESDAY + timedelta(hours=3)) == set()
    assert ticks.at(NEXT_MONDAY_3AM - timedelta(minutes=1)) == set()


def test_a_failed_drift_check_retrains_selects_and_promotes_once(definitions, instance):
    ticks = Ticks(definitions, instance)
    ticks.at(WEDNESDAY)
    record_drift_audit(instance, passed=True)
    assert ticks.at(WEDNESDAY + timedelta(minutes=1)) == set()

    record_drift_audit(instance, passed=False)
    assert ticks.at(WEDNESDAY + timedelta(minutes=2)) == MODEL_KEYS

    # Requested once per failure: the check still failing (or failing again at the next
    # audit) does not retrain on every tick.
    assert ticks.at(WEDNESDAY + timedelta(minutes=3)) == set()
    record_drift_audit(instance, passed=False)
    assert ticks.at(WEDNESDAY + timedelta(minutes=4)) == set()

    # Recovered, then drifted again: a new failure retrains again.
    record_drift_audit(instance, passed=True)
    assert ticks.at(WEDNESDAY + timedelta(minutes=5)) == set()
    record_drift_audit(instance, passed=False)
    assert ticks.at(WEDNESDAY + timedelta(minutes=6)) == MODEL_KEYS


def test_the_weekly_tick_retrains_selects_and_promotes_once(definitions, instance):
    ticks = Ticks(definitions, instance)
    assert ticks.at(NEXT_MONDAY_3AM - timedelta(minutes=5)) == set()
    assert ticks.at(NEXT_MONDAY_3AM + timedelta(seconds=30)) == MODEL_KEYS
    assert ticks.at(NEXT_MONDAY_3AM + timedelta(minutes=1)) == set()
    assert ticks.at(NEXT_MONDAY_3AM + timedelta(days=1)) == set()
    assert ticks.at(NEXT_MONDAY_3AM + timedelta(days=7, seconds=30)) == MODEL_KEYS
    assert RETRAIN_CRON == "0 3 * * 1"


def test_retraining_waits_for_the_audited_data(definitions):
    with dg.instance_for_test() as empty:
        ticks = Ticks(definitions, empty)
        ticks.at(NEXT_MONDAY_3AM - timedelta(minutes=5))
        assert ticks.at(NEXT_MONDAY_3AM + timedelta(seconds=30)) == set()


def test_one_tick_makes_one_run_that_holds_the_promotion_gate(definitions, instance):
    """Train, select and promote in one run: the blocking gate then guards the promotion."""
    ticks = Ticks(definitions, instance)
    ticks.at(WEDNESDAY)
    record_drift_audit(instance, passed=False)
    assert ticks.at(WEDNESDAY + timedelta(minutes=1)) == MODEL_KEYS
    graph = definitions.resolve_asset_graph()
    [run] = build_run_requests(
        ticks.last._requested_subsets,  # noqa: SLF001  (what the daemon builds runs from)
        graph,
        run_tags=None,
        emit_backfills=False,
    )
    assert set(run.asset_selection) == MODEL_KEYS
    gate = dg.AssetCheckKey(dg.AssetKey("model_selection"), "model_quality_gate")
    # None: the run executes every check of its assets, the blocking gate included.
    assert run.asset_check_keys is None or gate in run.asset_check_keys
    assert graph.get(gate).blocking


def test_the_automated_run_stops_before_promotion_when_the_gate_fails(
    definitions, instance, spark, tmp_path
):
    """The run the tick asks for, executed with real Spark: a failed gate promotes nothing."""
    ticks = Ticks(definitions, instance)
    ticks.at(WEDNESDAY)
    record_drift_audit(instance, passed=False)
    assert ticks.at(WEDNESDAY + timedelta(minutes=1)) == MODEL_KEYS
    [run] = build_run_requests(
        ticks.last._requested_subsets,  # noqa: SLF001
        definitions.resolve_asset_graph(),
        run_tags=None,
        emit_backfills=False,
    )
    project = ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path), dataset_sha256="")
    audited_df(spark, separable_transactions(400)).write.parquet(
        str(project.table("audited_transactions"))
    )
    result = dg.materialize(
        [fraud_model, model_selection, model_quality_gate, promoted_model],
        selection=run.asset_selection,
        instance=instance,
        resources={"project": project, "spark": SparkResource(home=str(REPO_ROOT))},
        run_config={
            "ops": {
                "fraud_model": {"config": {"algorithms": ["lr"], "bootstrap_resamples": 20}},
                # No model reaches an average precision above 1: the gate must fail.
                "model_selection_model_quality_gate": {"config": {"min_average_precision": 1.01}},
            }
        },
        raise_on_error=False,
    )
    [gate] = result.get_asset_check_evaluations()
    assert gate.check_name == "model_quality_gate" and not gate.passed
    assert result.asset_materializations_for_node("model_selection")
    assert not result.asset_materializations_for_node("promoted_model")
    assert project.registry.promoted() is None
    # The request was handled: the next tick asks for nothing more.
    assert ticks.at(WEDNESDAY + timedelta(minutes=2)) == set()
