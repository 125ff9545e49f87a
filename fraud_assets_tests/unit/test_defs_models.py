"""The training and selection assets: the promotion gate's rules, and one real run on LR."""

import dagster as dg
import pytest

from fraud_assets.defs.resources import ProjectResource, SparkResource
from fraud_assets.defs.selection import (
    PromotionGateConfig,
    champion_average_precision,
    gate_verdict,
    model_quality_gate,
    model_selection,
    promoted_model,
)
from fraud_assets.defs.train import fraud_model
from fraud_assets_tests.conftest import REPO_ROOT
from fraud_assets_tests.factories import audited_df, separable_model, separable_transactions


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
    assert figures["ap_source"] == "time_ordered holdout"


def test_gate_uses_the_pooled_figure_when_there_is_one():
    config = PromotionGateConfig(min_average_precision=0.7, champion_tolerance=0.02)
    # Holdout 0.80 would pass the floor; the pooled figure, resting on more frauds, does not.
    low_pooled = summary(0.80, None) | {"pooled_average_precision": 0.65}
    passed, figures = gate_verdict(low_pooled, config)
    assert not passed and not figures["above_floor"]
    assert figures["average_precision"] == 0.65 and figures["ap_source"] == "rolling_origin pooled"
    assert figures["holdout_average_precision"] == 0.80
    # Champion with a pooled figure: pooled against pooled (0.75 < 0.78 - 0.02).
    both = summary(0.90, 0.70) | {"pooled_average_precision": 0.75}
    both["champion"]["pooled_average_precision"] = 0.78
    assert gate_verdict(both, config)[0] is False
    # Champion without one: holdout against holdout (0.90 >= 0.70 - 0.02).
    passed, figures = gate_verdict(summary(0.90, 0.70) | {"pooled_average_precision": 0.75}, config)
    assert passed and figures["champion_average_precision"] == 0.70


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
                        "algorithms": ["lr", "rf"],
                        "protocols": ["time_ordered", "rolling_origin"],
                        "rolling_folds": 2,
                        "num_trees": 5,
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
        (model, protocol)
        for model in ("lr", "rf")
        for protocol in ("time_ordered", "rolling_origin")
    }
    # The cost-aware rule saw both models' pooled AP, paired difference and measured cost.
    assert selection["selection_rule"].value == "cheapest_not_worse"
    verdicts = {r.data["model"]: r.data for r in selection["candidates"].value.records}
    assert set(verdicts) == {"lr", "rf"}
    [chosen] = [v for v in verdicts.values() if v["chosen"]]
    assert chosen["version"] == selection["model_version"].value
    assert chosen["scoring_core_us_per_row"] == min(
        v["scoring_core_us_per_row"] for v in verdicts.values() if v["qualifies"]
    )
    folds = {
        (r.data["model"], r.data["fold"]) for r in selection["rolling_origin_folds"].value.records
    }
    assert folds == {(m, f) for m in ("lr", "rf") for f in ("1", "2", "pooled")}
    [pair] = selection["rolling_origin_paired"].value.records
    assert pair.data["ci_low"] <= pair.data["ap_difference"] <= pair.data["ci_high"]
    training = result.asset_materializations_for_node("fraud_model")[0].metadata
    assert {"lr_pooled_average_precision", "rf_scoring_core_us_per_row"} <= set(training)
    assert gate.metadata["ap_source"].value == "rolling_origin pooled"
    promotion = project.registry.require_promoted()
    assert promotion.version == selection["model_version"].value
    assert promotion.threshold == pytest.approx(selection["recommended_threshold"].value)
    metadata = project.registry.metadata(promotion.version)
    assert metadata["threshold"] == promotion.threshold and metadata["policy"] == "max_f1"
    assert set(metadata["metrics_by_protocol"]) == {"time_ordered"}
    assert metadata["scoring_core_us_per_row"] >= 0.0
    assert metadata["rolling_origin"]["pooled"]["folds"] == 2
    assert len(metadata["training_data_sha256"]) == 64


def test_the_champion_pooled_ap_is_compared_only_on_the_same_data_and_folds(spark, tmp_path):
    project = ProjectResource(home=str(REPO_ROOT), state_dir=str(tmp_path), dataset_sha256="")

    def metadata(folds: int) -> dict:
        return {
            "training_data_sha256": "a" * 64,
            "training": {"holdout_fraction": 0.2},
            "metrics": {"average_precision": 0.8},
            "rolling_origin": {"pooled": {"average_precision": 0.74, "folds": folds}},
        }

    project.registry.save("lr-20260101T000000Z", separable_model(spark), metadata(4))
    project.registry.promote("lr-20260101T000000Z", 0.9, "max_f1", 0.8)
    spark_resource = SparkResource(home=str(REPO_ROOT))
    candidate = {"version": "rf-20260102T000000Z", **metadata(4)}
    same = champion_average_precision(project, spark_resource, candidate)
    assert (same["average_precision"], same["pooled_average_precision"]) == (0.8, 0.74)
    other_folds = champion_average_precision(
        project, spark_resource, {"version": "rf-20260102T000000Z", **metadata(2)}
    )
    assert other_folds["pooled_average_precision"] is None
    assert other_folds["source"] == "stored"
