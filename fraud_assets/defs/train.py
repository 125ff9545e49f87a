"""Train: fraud models fitted on the earliest 80% of audited transactions, one per algorithm."""

import dagster as dg
import pandas as pd
import pyspark
from pydantic import Field

from fraud_assets.core import rolling, train
from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA, FEATURE_COLUMNS
from fraud_assets.core.registry import new_version, write_json_atomic
from fraud_assets.core.selection import POLICIES, PolicySettings
from fraud_assets.core.tables import read_table
from fraud_assets.defs.audit import audited_transactions
from fraud_assets.defs.metadata import png, table
from fraud_assets.defs.resources import ProjectResource, SparkResource
from fraud_assets.defs.retraining import retrain
from fraud_assets.modeling.plots import pr_curves_png

LATEST_TRAINING_FILE = "latest_training.json"
"""The versions the last ``fraud_model`` materialization saved (what model_selection ranks)."""


class TrainingRunConfig(dg.Config):
    """What one training run fits: algorithms, protocols, sizes and threshold policy.

    The defaults are what the demo trains on the full data; tests restrict them, e.g.
    ``algorithms: ["lr"]`` or ``num_trees: 20``.
    """

    algorithms: list[str] = Field(default=["lr", "rf"], description="subset of lr, rf, gbt, xgb")
    protocols: list[str] = Field(
        default=["time_ordered", rolling.PROTOCOL],
        description="time_ordered (always; its model is the one saved), rolling_origin (the "
        "evidence model_selection weighs against scoring cost) and random_80_20 for comparison",
    )
    rolling_folds: int = Field(
        default=rolling.DEFAULT_FOLDS,
        description="rolling-origin folds: the rows are cut by Time into folds + 1 blocks",
    )
    search: bool = Field(
        default=False, description="run the bounded search of train.SEARCH_SPACE (slower)"
    )
    refit: bool = Field(
        default=True,
        description="refit the chosen configuration on the whole training part; false saves "
        "the model fitted without the validation slice (one fit less: the live system's "
        "first model)",
    )
    holdout_fraction: float = 0.2
    max_iter: int = 100
    reg_param: float = 0.0
    elastic_net_param: float = 0.0
    num_trees: int = 60
    rf_max_depth: int = 10
    gbt_max_iter: int = 40
    gbt_max_depth: int = 5
    xgb_n_estimators: int = train.TrainingConfig.xgb_n_estimators
    xgb_max_depth: int = train.TrainingConfig.xgb_max_depth
    xgb_scale_pos_weight: float = train.TrainingConfig.xgb_scale_pos_weight
    tree_negative_fraction: float = Field(
        default=0.25,
        description="share of legitimate rows Spark ML's trees are fitted on (all frauds); "
        "lr and xgb use every row",
    )
    policy: str = Field(default="max_f1", description=f"recommended policy, one of {POLICIES}")
    min_precision: float = PolicySettings.min_precision
    alerts_per_day: float = PolicySettings.alerts_per_day
    review_cost: float = PolicySettings.review_cost
    bootstrap_resamples: int = 1000

    def training_config(self, algorithm: str) -> train.TrainingConfig:
        return train.TrainingConfig(
            algorithm=algorithm,
            holdout_fraction=self.holdout_fraction,
            max_iter=self.max_iter,
            reg_param=self.reg_param,
            elastic_net_param=self.elastic_net_param,
            num_trees=self.num_trees,
            rf_max_depth=self.rf_max_depth,
            gbt_max_iter=self.gbt_max_iter,
            gbt_max_depth=self.gbt_max_depth,
            xgb_n_estimators=self.xgb_n_estimators,
            xgb_max_depth=self.xgb_max_depth,
            xgb_scale_pos_weight=self.xgb_scale_pos_weight,
            negative_fraction=(1.0 if algorithm in ("lr", "xgb") else self.tree_negative_fraction),
        )

    @property
    def policy_settings(self) -> PolicySettings:
        return PolicySettings(self.min_precision, self.alerts_per_day, self.review_cost)


def _validate(config: TrainingRunConfig) -> None:
    unknown = set(config.algorithms) - set(train.ALGORITHMS)
    if not config.algorithms or unknown:
        raise ValueError(f"algorithms must be a non-empty subset of {list(train.ALGORITHMS)}")
    known = (*train.PROTOCOLS, rolling.PROTOCOL)
    if "time_ordered" not in config.protocols or set(config.protocols) - set(known):
        raise ValueError(f"protocols must include time_ordered and be among {known}")
    if config.policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {config.policy!r}")


@dg.asset(
    group_name="train",
    kinds={"spark", "sparkml"},
    deps=[audited_transactions],
    automation_condition=retrain,
    description=(
        "Versioned Spark ML PipelineModels (VectorAssembler -> StandardScaler -> logistic "
        "regression, random forest, gradient-boosted trees or XGBoost), one per configured "
        "algorithm, trained on the earliest 80% of transactions; thresholds chosen on a validation "
        "slice, metrics measured once on the last 20%."
    ),
)
def fraud_model(
    config: TrainingRunConfig, project: ProjectResource, spark: SparkResource
) -> dg.MaterializeResult:
    _validate(config)
    session = spark.session()
    audited = read_table(
        session, project.table("audited_transactions"), AUDITED_TRANSACTIONS_SCHEMA
    ).cache()
    fingerprint = train.folder_fingerprint(project.table("audited_transactions"))
    registry = project.registry
    versions, comparison, curves, metadata = [], [], {}, {}
    rolling_runs, rolling_reports, rolling_errors = {}, [], {}
    for algorithm in config.algorithms:
        base = config.training_config(algorithm)
        candidates = train.search_candidates(base) if config.search else [base]
        reports = {}
        for protocol in (p for p in config.protocols if p != rolling.PROTOCOL):
            run = train.train_protocol(audited, protocol, candidates, refit=config.refit)
            reports[protocol] = train.run_report(
                run, config.policy_settings, config.policy, config.bootstrap_resamples
            )
            comparison.append(train.comparison_entry(reports[protocol]))
            if protocol == "time_ordered":
                deployable = run
        # What the stream pays per transaction for this model (the expression or UDF it
        # evaluates), measured on the audited rows net of reading them.
        cost = train.scoring_cost_us_per_row(deployable.model, audited)
        evidence = None
        if rolling.PROTOCOL in config.protocols:
            try:
                rolling_run = rolling.rolling_origin(
                    audited, deployable.config, config.rolling_folds
                )
            except ValueError as error:  # a fold's past without fraud: no evidence, no failure
                rolling_errors[algorithm] = str(error)
            else:
                evidence = rolling.rolling_report(rolling_run, config.bootstrap_resamples)
                evidence["scoring_core_us_per_row"] = cost
                rolling_runs[algorithm] = rolling_run
                rolling_reports.append(evidence)
                comparison.append(rolling.comparison_entry(evidence))
        report = reports["time_ordered"]
        recommended = report["recommended"] or {}
        version = new_version(algorithm)
        registry.save(
            version,
            deployable.model,
            {
                "algorithm": train.ALGORITHMS[algorithm],
                "model": algorithm,
                "features": list(FEATURE_COLUMNS),
                "params": report["params"],
                "training": report["config"],
                "protocol": "time_ordered",
                "holdout": {
                    "rows": report["holdout"]["rows"],
                    "frauds": report["holdout"]["frauds"],
                },
                "metrics": {
                    "pr_auc": report["holdout"]["average_precision"],
                    "average_precision": report["holdout"]["average_precision"],
                    "roc_auc": report["holdout"]["roc_auc"],
                },
                "metrics_by_protocol": {p: r["holdout"] for p, r in reports.items()},
                "validation": report["validation"],
                "threshold": recommended.get("threshold"),
                "policy": recommended.get("policy"),
                "report": report,
                "comparison": [
                    *(train.comparison_entry(r) for r in reports.values()),
                    *([rolling.comparison_entry(evidence)] if evidence else []),
                ],
                "scoring_core_us_per_row": cost,
                "rolling_origin": evidence,
                "training_data_sha256": fingerprint,
                "spark_version": pyspark.__version__,
            },
        )
        versions.append(version)
        curves[algorithm] = pd.DataFrame(report["holdout_sweep"])
        metadata[f"{algorithm}_version"] = version
        metadata[f"{algorithm}_average_precision"] = dg.MetadataValue.float(
            report["holdout"]["average_precision"]
        )
        metadata[f"{algorithm}_scoring_core_us_per_row"] = dg.MetadataValue.float(cost)
        if evidence:
            metadata[f"{algorithm}_pooled_average_precision"] = dg.MetadataValue.float(
                evidence["pooled"]["average_precision"]
            )
        metadata[f"{algorithm}_policies"] = table(pd.DataFrame(report["policies"]).round(4))
    audited.unpersist()
    version_of = dict(zip(config.algorithms, versions, strict=True))
    paired = [
        {**pair, "a_version": version_of[pair["a"]], "b_version": version_of[pair["b"]]}
        for pair in rolling.paired_comparisons(
            list(rolling_runs.values()), config.bootstrap_resamples
        )
    ]
    write_json_atomic(
        project.paths.models_dir / LATEST_TRAINING_FILE,
        {"versions": versions, "rolling_origin": {"folds": config.rolling_folds, "paired": paired}},
    )
    if rolling_reports:
        metadata["rolling_origin_folds"] = table(rolling.folds_table(rolling_reports).round(4))
    if paired:
        metadata["rolling_origin_paired"] = table(rolling.paired_table(paired).round(4))
    if rolling_errors:
        metadata["rolling_origin_errors"] = dg.MetadataValue.json(rolling_errors)
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "versions": dg.MetadataValue.json(versions),
            "comparison": table(pd.DataFrame(comparison).drop(columns=["ap_formula"]).round(4)),
            "ap_formula": train.comparison_entry(report)["ap_formula"],
            "pr_curves": png(pr_curves_png(curves, "holdout (time-ordered)"), "PR curves"),
            "protocol": "time-ordered 80/20 (earliest 80% by Time trains)",
            "training_data_sha256": fingerprint,
        }
    )
