"""Select: the alert threshold of the newest model, a quality gate, and promotion."""

import json
from dataclasses import asdict

import dagster as dg

from fraud_assets.core import selection, train
from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA
from fraud_assets.core.plots import precision_recall_png
from fraud_assets.core.registry import ModelRegistryError, write_json_atomic
from fraud_assets.core.tables import read_table
from fraud_assets.defs.metadata import png, table
from fraud_assets.defs.resources import ProjectResource, SparkResource
from fraud_assets.defs.train import fraud_model

MIN_PR_AUC = 0.5
"""Promotion floor on holdout PR-AUC (the reference logistic regression reached 0.70)."""

SUMMARY_FILE = "model_selection_summary.json"


@dg.asset(
    group_name="select",
    kinds={"spark", "json"},
    deps=[fraud_model],
    description=(
        "The newest model's threshold sweep on the holdout (precision, recall, F1 per "
        "threshold) and the recommended threshold; written to model_selection_summary.json."
    ),
)
def model_selection(project: ProjectResource, spark: SparkResource) -> dg.MaterializeResult:
    registry = project.registry
    versions = registry.versions()
    if not versions:
        raise ModelRegistryError("no trained model: materialize fraud_model first")
    version = versions[-1]
    metadata = registry.metadata(version)
    session = spark.session()
    audited = read_table(
        session, project.table("audited_transactions"), AUDITED_TRANSACTIONS_SCHEMA
    )
    _, holdout = train.time_ordered_split(audited, metadata["training"]["holdout_fraction"])
    scored = train.with_fraud_prob(registry.load(version), holdout)
    sweep = selection.threshold_sweep(session, scored)
    choice = selection.recommend_max_f1(sweep)
    summary = {
        "model_version": version,
        "pr_auc": metadata["metrics"]["pr_auc"],
        "roc_auc": metadata["metrics"]["roc_auc"],
        "recommended": asdict(choice),
        "threshold_sweep": json.loads(sweep.to_json(orient="records")),
    }
    summary_path = project.paths.models_dir / SUMMARY_FILE
    write_json_atomic(summary_path, summary)
    image = precision_recall_png(sweep, choice.threshold, f"{version} (holdout)")
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "recommended_threshold": dg.MetadataValue.float(choice.threshold),
            "policy": choice.policy,
            "precision": dg.MetadataValue.float(choice.precision),
            "recall": dg.MetadataValue.float(choice.recall),
            "f1": dg.MetadataValue.float(choice.f1),
            "pr_auc": dg.MetadataValue.float(summary["pr_auc"]),
            "threshold_sweep": table(sweep.round(4)),
            "pr_curve": png(image, "precision and recall by threshold"),
            "summary": dg.MetadataValue.path(str(summary_path)),
        }
    )


def read_summary(project: ProjectResource) -> dict:
    path = project.paths.models_dir / SUMMARY_FILE
    if not path.is_file():
        raise ModelRegistryError(f"{path} is missing: materialize model_selection first")
    return json.loads(path.read_text())


@dg.asset_check(
    asset=model_selection,
    blocking=True,
    description=f"Quality gate before promotion: holdout PR-AUC >= {MIN_PR_AUC} and the "
    "recommended threshold catches frauds.",
)
def model_quality_gate(project: ProjectResource) -> dg.AssetCheckResult:
    summary = read_summary(project)
    recommended = summary["recommended"]
    passed = summary["pr_auc"] >= MIN_PR_AUC and recommended["recall"] > 0
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "pr_auc": summary["pr_auc"],
            "floor": MIN_PR_AUC,
            "recall_at_threshold": recommended["recall"],
        },
    )


@dg.asset(
    group_name="select",
    kinds={"json"},
    deps=[model_selection],
    description="The model version and threshold the scoring stream uses (promoted.json).",
)
def promoted_model(project: ProjectResource) -> dg.MaterializeResult:
    summary = read_summary(project)
    recommended = summary["recommended"]
    promotion = project.registry.promote(
        summary["model_version"],
        threshold=recommended["threshold"],
        policy=recommended["policy"],
        pr_auc=summary["pr_auc"],
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
    description="Audit the dataset, train a model, select its threshold and promote it.",
)
