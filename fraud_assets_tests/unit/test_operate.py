"""Operator entry points: the ``fraud-assets model`` commands and the Dagster operator jobs."""

import json

import dagster as dg
import pytest

from fraud_assets.cli import main
from fraud_assets.core.contracts import FEATURE_COLUMNS
from fraud_assets.core.registry import ModelRegistry, write_json_atomic
from fraud_assets.defs.operate import (
    OperatorResource,
    name_challenger,
    promote_challenger,
    promote_model_version,
    set_alert_threshold,
)
from fraud_assets.defs.resources import ProjectResource
from fraud_assets_tests.conftest import REPO_ROOT

V1 = "lr-20260101T000000Z"
V2 = "rf-20260102T000000Z"


@pytest.fixture
def state(tmp_path):
    """A state folder whose registry knows V1 (promoted at 0.8) and V2 (metadata only)."""
    registry = ModelRegistry(tmp_path / "models")
    for version in (V1, V2):
        write_json_atomic(
            registry.version_dir(version) / "metadata.json",
            {
                "version": version,
                "features": list(FEATURE_COLUMNS),
                "metrics": {"pr_auc": 0.8},
                "threshold": 0.4,
                "policy": "max_f1",
            },
        )
    registry.promote(V1, 0.8, "max_f1", 0.8, changed_by="selection")
    return tmp_path


def cli(state, *args: str) -> int:
    return main(["--home", str(REPO_ROOT), "model", "--state-dir", str(state), *args])


# --- CLI -------------------------------------------------------------------------------------


def test_cli_set_threshold_promote_and_history(state, capsys):
    assert cli(state, "set-threshold", "0.97", "--reason", "too many alerts", "--by", "ann") == 0
    assert "threshold 0.8 -> 0.97" in capsys.readouterr().out
    assert cli(state, "promote", V2, "--threshold", "0.6", "--reason", "better AP") == 0
    assert f"promoted {V2} at threshold 0.6" in capsys.readouterr().out

    registry = ModelRegistry(state / "models")
    promotion = registry.promoted()
    assert (promotion.version, promotion.threshold, promotion.pr_auc) == (V2, 0.6, 0.8)

    assert cli(state, "history", "--json") == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["action"], e["changed_by"], e["new_threshold"]) for e in entries[1:]] == [
        ("set_threshold", "ann", 0.97),
        ("promote", entries[2]["changed_by"], 0.6),
    ]
    assert entries[2]["changed_by"]  # the OS user when --by is not given
    assert entries[1]["reason"] == "too many alerts"
    assert cli(state, "history") == 0
    assert "too many alerts" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["set-threshold", "1.5", "--reason", "x"], "threshold must be in (0, 1)"),
        (["promote", "lr-19990101T000000Z", "--threshold", "0.5", "--reason", "x"], "not found"),
    ],
)
def test_cli_refusals_are_one_line_and_change_nothing(state, capsys, args, message):
    assert cli(state, *args) == 2
    assert message in capsys.readouterr().err
    assert len(ModelRegistry(state / "models").change_log()) == 1


def test_cli_names_clears_and_refuses_to_promote_a_challenger_without_evidence(state, capsys):
    assert cli(state, "challenger", V2, "--reason", "try the forest", "--by", "ann") == 0
    assert f"challenger {V2} at threshold 0.4" in capsys.readouterr().out
    registry = ModelRegistry(state / "models")
    assert registry.challenger().version == V2
    # No shadow row yet: promotion is refused and nothing changes.
    assert cli(state, "promote-challenger", "--reason", "now") == 2
    assert "0 labelled rows with 0 frauds" in capsys.readouterr().err
    assert registry.promoted().version == V1
    assert cli(state, "clear-challenger", "--reason", "done") == 0
    assert registry.challenger() is None
    assert cli(state, "clear-challenger", "--reason", "again") == 2
    assert "no challenger is named" in capsys.readouterr().err
    assert cli(state, "challenger", V1, "--reason", "x") == 2
    assert "is the promoted model" in capsys.readouterr().err
    actions = list(registry.change_log()["action"])
    assert actions == ["promote", "name_challenger", "clear_challenger"]


def test_cli_set_threshold_needs_a_reason(state):
    with pytest.raises(SystemExit):
        cli(state, "set-threshold", "0.9")


# --- Dagster jobs ----------------------------------------------------------------------------


def resources(state) -> dict:
    return {
        "project": ProjectResource(home=str(REPO_ROOT), state_dir=str(state)),
        "operator": OperatorResource(os_user="os-user"),
    }


def test_set_threshold_job_uses_the_run_user_tag_and_reports_the_change_log(state):
    result = set_alert_threshold.execute_in_process(
        run_config={
            "ops": {"set_alert_threshold_op": {"config": {"threshold": 0.95, "reason": "r1"}}}
        },
        resources=resources(state),
        tags={"dagster/user": "carol@example.com"},
    )
    assert result.success
    assert result.output_for_node("set_alert_threshold_op")["threshold"] == 0.95
    log = ModelRegistry(state / "models").change_log()
    assert log.iloc[-1]["changed_by"] == "carol@example.com"
    [output] = [
        e for e in result.all_node_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT
    ]
    metadata = output.event_specific_data.metadata
    assert metadata["changes"].value == 2
    newest = metadata["change_log"].records[0].data
    assert (newest["new_threshold"], newest["reason"]) == (0.95, "r1")
    [materialization] = result.asset_materializations_for_node("set_alert_threshold_op")
    assert materialization.asset_key == dg.AssetKey("promoted_model")


def test_promote_job_falls_back_to_the_os_user_and_fails_clearly(state):
    config = {"version": V2, "threshold": 0.7, "reason": "switch"}
    result = promote_model_version.execute_in_process(
        run_config={"ops": {"promote_model_version_op": {"config": config}}},
        resources=resources(state),
    )
    assert result.success
    registry = ModelRegistry(state / "models")
    assert registry.promoted().version == V2
    assert registry.change_log().iloc[-1]["changed_by"] == "os-user"

    unknown = {**config, "version": "lr-19990101T000000Z"}
    failed = promote_model_version.execute_in_process(
        run_config={"ops": {"promote_model_version_op": {"config": unknown}}},
        resources=resources(state),
        raise_on_error=False,
    )
    assert not failed.success
    assert registry.promoted().version == V2
    assert len(registry.change_log()) == 2


def test_challenger_jobs_name_it_and_refuse_promotion_without_evidence(state):
    config = {"version": V2, "reason": "shadow it"}
    result = name_challenger.execute_in_process(
        run_config={"ops": {"name_challenger_op": {"config": config}}},
        resources=resources(state),
        tags={"dagster/user": "carol@example.com"},
    )
    assert result.success
    registry = ModelRegistry(state / "models")
    assert (registry.challenger().version, registry.challenger().threshold) == (V2, 0.4)
    assert registry.change_log().iloc[-1]["changed_by"] == "carol@example.com"

    refused = promote_challenger.execute_in_process(
        run_config={"ops": {"promote_challenger_op": {"config": {"reason": "early"}}}},
        resources=resources(state),
        raise_on_error=False,
    )
    assert not refused.success
    assert registry.promoted().version == V1
    assert registry.challenger().version == V2
