"""The training and selection assets: the promotion gate's rules, and one real run on LR."""

import dagster as dg
import pytest

from fraud_assets.defs.resources import ProjectResource, SparkResource
from fraud_assets.defs.selection import (
    PromotionGateConfig,
    gate_verdict,
    model_quality_gate,
    model_selection,
    promoted_model,
)
from fraud_assets.defs.train import fraud_model
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.factories import audited_df, separable_transactions


def summary(ap: float, champion_ap: float | None, recall: float = 0.8, threshold=True) -> dict:
    return {
        "average_precision": ap,
        "recommended": {"threshold": 0.9, "policy": "max_f1", "recall": recall}
        if threshold
        else None,
        "champion": None if champion_ap is None else {"average_precision": champion_ap},
    }


@pytest.mark.parametrize(
    ("case", "passed"),
    [
        (summary(0.80, None), True),  # first model: floor only
        (summary(0.40, None), False),  # below the floor
        (summary(0.79, 0.80), True),  # within the tolerance of the champion
        (summary(0.77, 0.80), False),  # worse than the champion beyond the tolerance
        (summary(0.90, 0.80, recall=0.0), False),  # catches nothing at its threshold
        (summary(0.90, None, threshold=False), False),  # the policy could not be met
    ],
)
def test_gate_needs_floor_champion_and_a_threshold(case, passed):
    verdict, figures = gate_verdict(case, PromotionGateConfig(champion_tolerance=0.02))
    assert verdict is passed
    assert figures["average_precision"] == case["average_precision"]


def test_train_select_gate_promote_on_a_small_table(spark, tmp_path):
    project = ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path), dataset_sha256="")
    audited_df(spark, separable_transactions(400)).write.parquet(
        str(project.table("audited_transactions"))
    )
    result = dg.materialize(
        [fraud_model, model_selection, model_quality_gate, promoted_model],
        resources={"project": project, "spark": SparkResource(home=str(REPO_ROOT))},
        run_config={
            "ops": {
                "fraud_model": {
                    "config": {
                        "algorithms": ["lr"],
                        "protocols": ["time_ordered", "random_80_20"],
                        "bootstrap_resamples": 50,
                        "reg_param": 0.05,
                    }
                }
            }
        },
    )
    assert result.success
    [gate] = result.get_asset_check_evaluations()
    assert gate.passed
    selection = result.asset_materializations_for_node("model_selection")[0].metadata
    assert selection["policy"].value == "max_f1"
    comparison = selection["comparison"].value.records
    assert {(r.data["model"], r.data["protocol"]) for r in comparison} == {
        ("lr", "time_ordered"),
        ("lr", "random_80_20"),
    }
    promotion = project.registry.require_promoted()
    assert promotion.version == selection["model_version"].value
    assert promotion.threshold == pytest.approx(selection["recommended_threshold"].value)
    metadata = project.registry.metadata(promotion.version)
    assert metadata["threshold"] == promotion.threshold and metadata["policy"] == "max_f1"
    assert set(metadata["metrics_by_protocol"]) == {"time_ordered", "random_80_20"}
    assert len(metadata["training_data_sha256"]) == 64
