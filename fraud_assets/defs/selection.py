"""Select: the best new model, its alert threshold, a quality gate, and promotion."""

import json

import dagster as dg
import pandas as pd

from fraud_assets.core import train
from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA
from fraud_assets.core.evaluate import average_precision, scored_slice
from fraud_assets.core.plots import precision_recall_png
from fraud_assets.core.registry import ModelRegistry, ModelRegistryError, write_json_atomic
from fraud_assets.core.tables import read_table
from fraud_assets.defs.metadata import png, table
from fraud_assets.defs.resources import ProjectResource, SparkResource
from fraud_assets.defs.retraining import promote_after_gate, with_training
from fraud_assets.defs.train import LATEST_TRAINING_FILE, fraud_model

SUMMARY_FILE = "model_selection_summary.json"


def _latest_versions(registry: ModelRegistry) -> list[str]:
    path = registry.models_dir / LATEST_TRAINING_FILE
    if not path.is_file():
        raise ModelRegistryError(f"{path} is missing: materialize fraud_model first")
    return json.loads(path.read_text())["versions"]


def champion_average_precision(
    project: ProjectResource, spark: SparkResource, candidate: dict
) -> dict | None:
    """The promoted model's holdout AP, comparable with ``candidate``'s; None if none.

    Stored metrics are comparable only when both models were trained on the same audited
    data with the same holdout; otherwise the champion is scored on the candidate's holdout.
    """
    registry = project.registry
    promotion = registry.promoted()
    if promotion is None or promotion.version == candidate["version"]:
        return None
    try:
        champion = registry.metadata(promotion.version)
    except ModelRegistryError:
        return {"version": promotion.version, "average_precision": None, "source": "missing"}
    same_data = champion.get("training_data_sha256") == candidate["training_data_sha256"]
    same_holdout = (
        champion.get("training", {}).get("holdout_fraction")
        == (candidate["training"]["holdout_fraction"])
    )
    stored = champion.get("metrics", {}).get("average_precision")
    if same_data and same_holdout and stored is not None:
        return {"version": promotion.version, "average_precision": stored, "source": "stored"}
    session = spark.session()
    audited = read_table(
        session, project.table("audited_transactions"), AUDITED_TRANSACTIONS_SCHEMA
    )
    _, holdout = train.time_ordered_split(audited, candidate["training"]["holdout_fraction"])
    scores = scored_slice(registry.load(promotion.version), holdout)
    return {
        "version": promotion.version,
        "average_precision": average_precision(scores.labels, scores.scores),
        "source": "rescored on the candidate's holdout",
    }


@dg.asset(
    group_name="select",
    kinds={"json"},
    deps=[fraud_model],
    automation_condition=with_training,
    description=(
        "The model of the last training run with the best time-ordered validation average "
        "precision, its recommended threshold (named by its policy, chosen on validation) "
        "and its holdout figures, with the model x protocol comparison and the current "
        "champion's AP; written to model_selection_summary.json."
    ),
)
def model_selection(project: ProjectResource, spark: SparkResource) -> dg.MaterializeResult:
    registry = project.registry
    candidates = [registry.metadata(v) for v in _latest_versions(registry)]
    best = max(candidates, key=lambda m: m["validation"]["average_precision"])
    report = best["report"]
    recommended = report["recommended"]
    champion = champion_average_precision(project, spark, best)
    summary = {
        "model_version": best["version"],
        "algorithm": best["algorithm"],
        "pr_auc": best["metrics"]["average_precision"],
        "average_precision": best["metrics"]["average_precision"],
        "ap_formula": report["holdout"]["ap_formula"],
        "ap_trapezoid": report["holdout"]["ap_trapezoid"],
        "ap_ci": [report["holdout"]["ap_ci_low"], report["holdout"]["ap_ci_high"]],
        "roc_auc": best["metrics"]["roc_auc"],
        "validation_average_precision": best["validation"]["average_precision"],
        "recommended": recommended,
        "recommended_error": report["recommended_error"],
        "policies": report["policies"],
        "comparison": [entry for m in candidates for entry in m["comparison"]],
        "champion": champion,
        "threshold_sweep": report["holdout_sweep"],
    }
    summary_path = project.paths.models_dir / SUMMARY_FILE
    write_json_atomic(summary_path, summary)
    sweep = pd.DataFrame(report["holdout_sweep"])
    metadata = {
        "model_version": best["version"],
        "algorithm": best["algorithm"],
        "average_precision": dg.MetadataValue.float(summary["average_precision"]),
        "ap_formula": summary["ap_formula"],
        "validation_average_precision": dg.MetadataValue.float(
            summary["validation_average_precision"]
        ),
        "comparison": table(pd.DataFrame(summary["comparison"]).drop(columns=["ap_formula"])),
        "policies": table(pd.DataFrame(report["policies"]).round(4)),
        "champion": dg.MetadataValue.json(champion or {}),
        "summary": dg.MetadataValue.path(str(summary_path)),
    }
    if recommended:
        metadata.update(
            recommended_threshold=dg.MetadataValue.float(recommended["threshold"]),
            policy=recommended["policy"],
            precision=dg.MetadataValue.float(recommended["precision"]),
            recall=dg.MetadataValue.float(recommended["recall"]),
            pr_curve=png(
                precision_recall_png(sweep, recommended["threshold"], best["version"]),
                "precision and recall by threshold (holdout)",
            ),
        )
    else:
        metadata["recommended_error"] = report["recommended_error"]
    return dg.MaterializeResult(metadata=metadata)


def read_summary(project: ProjectResource) -> dict:
    path = project.paths.models_dir / SUMMARY_FILE
    if not path.is_file():
        raise ModelRegistryError(f"{path} is missing: materialize model_selection first")
    return json.loads(path.read_text())


class PromotionGateConfig(dg.Config):
    """The promotion gate's bars."""

    min_average_precision: float = 0.5
    """Floor on the holdout average precision (step-wise)."""
    champion_tolerance: float = 0.02
    """How far below the current champion's holdout AP a candidate may be."""


def gate_verdict(summary: dict, config: PromotionGateConfig) -> tuple[bool, dict]:
    """Whether the selection may be promoted, and the figures that decided it."""
    recommended = summary["recommended"] or {}
    champion_ap = (summary.get("champion") or {}).get("average_precision")
    ap = summary["average_precision"]
    reasons = {
        "has_threshold": bool(recommended),
        "above_floor": ap >= config.min_average_precision,
        "catches_frauds": (recommended.get("recall") or 0.0) > 0,
        "not_worse_than_champion": champion_ap is None
        or ap >= champion_ap - config.champion_tolerance,
    }
    return all(reasons.values()), {
        **reasons,
        "average_precision": ap,
        "floor": config.min_average_precision,
        "champion_average_precision": champion_ap,
        "champion_tolerance": config.champion_tolerance,
        "recall_at_threshold": recommended.get("recall"),
    }


@dg.asset_check(
    asset=model_selection,
    blocking=True,
    description="Gate before promotion: a recommended threshold that catches frauds, holdout "
    "average precision above the floor, and no worse than the current champion beyond the "
    "tolerance.",
)
def model_quality_gate(
    config: PromotionGateConfig, project: ProjectResource
) -> dg.AssetCheckResult:
    passed, figures = gate_verdict(read_summary(project), config)
    return dg.AssetCheckResult(passed=passed, metadata=figures)


@dg.asset(
    group_name="select",
    kinds={"json"},
    deps=[model_selection],
    automation_condition=promote_after_gate,
    description="The model version and threshold the scoring stream uses (promoted.json).",
)
def promoted_model(project: ProjectResource) -> dg.MaterializeResult:
    summary = read_summary(project)
    recommended = summary["recommended"]
    if not recommended:
        raise ModelRegistryError(f"nothing to promote: {summary['recommended_error']}")
    promotion = project.registry.promote(
        summary["model_version"],
        threshold=recommended["threshold"],
        policy=recommended["policy"],
        pr_auc=summary["average_precision"],
        changed_by="dagster:promoted_model",
        reason="passed model_quality_gate",
    )
    return dg.MaterializeResult(
        metadata={
            "model_version": promotion.version,
            "threshold": dg.MetadataValue.float(promotion.threshold),
            "policy": promotion.policy,
            "promoted_at": promotion.promoted_at,
            "path": dg.MetadataValue.path(str(project.registry.promotion_path)),
        }
    )


training_job = dg.define_asset_job(
    "train_and_promote",
    selection=dg.AssetSelection.groups("audit", "train", "select"),
    description="Audit the dataset, train the models, select one and its threshold, promote.",
)
