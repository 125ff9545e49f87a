"""Select: the best new model, its alert threshold, a quality gate, and promotion."""

import json
from dataclasses import asdict

import dagster as dg
import pandas as pd

from fraud_assets.core import model_choice, rolling, train
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


def _latest_training(registry: ModelRegistry) -> dict:
    path = registry.models_dir / LATEST_TRAINING_FILE
    if not path.is_file():
        raise ModelRegistryError(f"{path} is missing: materialize fraud_model first")
    return json.loads(path.read_text())


def _pooled(metadata: dict) -> dict:
    return (metadata.get("rolling_origin") or {}).get("pooled") or {}


def _candidate(metadata: dict) -> model_choice.Candidate:
    return model_choice.Candidate(
        version=metadata["version"],
        model=metadata["model"],
        validation_average_precision=metadata["validation"]["average_precision"],
        pooled_average_precision=_pooled(metadata).get("average_precision"),
        scoring_core_us_per_row=metadata.get("scoring_core_us_per_row"),
    )


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
        # The pooled rolling-origin AP compares too when both were evaluated on the same folds.
        pooled = _pooled(champion)
        same_folds = pooled.get("folds") == _pooled(candidate).get("folds")
        return {
            "version": promotion.version,
            "average_precision": stored,
            "pooled_average_precision": pooled.get("average_precision") if same_folds else None,
            "source": "stored",
        }
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


class SelectionConfig(dg.Config):
    """The cost-aware rule's setting (see fraud_assets.core.model_choice)."""

    ap_tolerance: float = model_choice.DEFAULT_AP_TOLERANCE
    """A cheaper model whose paired interval against the best pooled AP lies wholly above
    -ap_tolerance qualifies even when the interval excludes 0."""


@dg.asset(
    group_name="select",
    kinds={"json"},
    deps=[fraud_model],
    automation_condition=with_training,
    description=(
        "The model of the last training run chosen by the cost-aware rule (the cheapest to "
        "score whose pooled rolling-origin AP is not significantly worse than the best), its "
        "recommended threshold (named by its policy, chosen on validation) and its holdout "
        "figures, with the model x protocol comparison and the current champion's AP; "
        "written to model_selection_summary.json."
    ),
)
def model_selection(
    config: SelectionConfig, project: ProjectResource, spark: SparkResource
) -> dg.MaterializeResult:
    registry = project.registry
    latest = _latest_training(registry)
    candidates = [registry.metadata(v) for v in latest["versions"]]
    paired = {p["a_version"]: p for p in (latest.get("rolling_origin") or {}).get("paired", [])}
    choice = model_choice.choose_model(
        [_candidate(m) for m in candidates], paired, config.ap_tolerance
    )
    best = next(m for m in candidates if m["version"] == choice.version)
    report = best["report"]
    recommended = report["recommended"]
    champion = champion_average_precision(project, spark, best)
    pooled = _pooled(best)
    summary = {
        "model_version": best["version"],
        "algorithm": best["algorithm"],
        "pr_auc": best["metrics"]["average_precision"],
        "average_precision": best["metrics"]["average_precision"],
        "pooled_average_precision": pooled.get("average_precision"),
        "pooled_ap_ci": [pooled.get("ap_ci_low"), pooled.get("ap_ci_high")],
        "scoring_core_us_per_row": best.get("scoring_core_us_per_row"),
        "selection": choice.as_dict(),
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
        "selection_rule": choice.rule,
        "selection_reason": choice.reason,
        "candidates": table(pd.DataFrame([asdict(v) for v in choice.verdicts]).round(4)),
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
    if best.get("scoring_core_us_per_row") is not None:
        metadata["scoring_core_us_per_row"] = dg.MetadataValue.float(
            best["scoring_core_us_per_row"]
        )
    evidence = [m["rolling_origin"] for m in candidates if m.get("rolling_origin")]
    if pooled:
        metadata.update(
            pooled_average_precision=dg.MetadataValue.float(pooled["average_precision"]),
            pooled_ap_ci_low=dg.MetadataValue.float(pooled["ap_ci_low"]),
            pooled_ap_ci_high=dg.MetadataValue.float(pooled["ap_ci_high"]),
            rolling_origin_folds=table(rolling.folds_table(evidence).round(4)),
        )
    if paired:
        metadata["rolling_origin_paired"] = table(
            rolling.paired_table(list(paired.values())).round(4)
        )
    return dg.MaterializeResult(metadata=metadata)


def read_summary(project: ProjectResource) -> dict:
    path = project.paths.models_dir / SUMMARY_FILE
    if not path.is_file():
        raise ModelRegistryError(f"{path} is missing: materialize model_selection first")
    return json.loads(path.read_text())


class PromotionGateConfig(dg.Config):
    """The promotion gate's bars."""

    min_average_precision: float = 0.5
    """Floor on the average precision (step-wise): pooled rolling-origin when available."""
    champion_tolerance: float = 0.02
    """How far below the current champion's holdout AP a candidate may be."""


def gate_verdict(summary: dict, config: PromotionGateConfig) -> tuple[bool, dict]:
    """Whether the selection may be promoted, and the figures that decided it.

    The AP gated on is the pooled rolling-origin AP when the selection has one (it rests on
    every fraud after the first fold), else the time-ordered holdout AP. The champion is
    compared on the same kind of figure: pooled against pooled when the champion has a
    comparable one, otherwise holdout against holdout.
    """
    recommended = summary["recommended"] or {}
    champion = summary.get("champion") or {}
    pooled = summary.get("pooled_average_precision")
    ap = pooled if pooled is not None else summary["average_precision"]
    if pooled is not None and champion.get("pooled_average_precision") is not None:
        compared, champion_ap = pooled, champion["pooled_average_precision"]
    else:
        compared, champion_ap = summary["average_precision"], champion.get("average_precision")
    reasons = {
        "has_threshold": bool(recommended),
        "above_floor": ap >= config.min_average_precision,
        "catches_frauds": (recommended.get("recall") or 0.0) > 0,
        "not_worse_than_champion": champion_ap is None
        or compared >= champion_ap - config.champion_tolerance,
    }
    return all(reasons.values()), {
        **reasons,
        "average_precision": ap,
        "ap_source": "rolling_origin pooled" if pooled is not None else "time_ordered holdout",
        "holdout_average_precision": summary["average_precision"],
        "floor": config.min_average_precision,
        "champion_average_precision": champion_ap,
        "champion_tolerance": config.champion_tolerance,
        "recall_at_threshold": recommended.get("recall"),
    }


@dg.asset_check(
    asset=model_selection,
    blocking=True,
    description="Gate before promotion: a recommended threshold that catches frauds, average "
    "precision (pooled rolling-origin when available, else holdout) above the floor, and no "
    "worse than the current champion beyond the tolerance.",
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
