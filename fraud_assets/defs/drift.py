"""Drift: live traffic against the training data of the promoted model (PSI per feature)."""

import math

import dagster as dg
from pyspark.ml import PipelineModel

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA
from fraud_assets.core.drift import (
    DRIFT_COLUMNS,
    SCORE_COLUMN,
    ReferenceProfile,
    load_profile,
    measure_drift,
    recent_transactions,
    reference_profile,
    save_profile,
    training_reference,
)
from fraud_assets.core.plots import drift_png
from fraud_assets.core.registry import ModelRegistryError
from fraud_assets.core.scoring import with_fraud_prob
from fraud_assets.core.tables import read_table
from fraud_assets.core.train import folder_fingerprint
from fraud_assets.defs.metadata import png, table
from fraud_assets.defs.resources import (
    DriftResource,
    KafkaResource,
    ProjectResource,
    SparkResource,
)
from fraud_assets.defs.selection import promoted_model
from fraud_assets.kafka.io import end_offsets

DRIFT_CHECK = "no_significant_drift"
REFERENCE_FOLDER = "drift_reference"
"""Under the tables folder: one reference profile per promoted version (computed once)."""


def _float(value: float) -> dg.MetadataValue:
    # NaN (no live value to compare) is a float the UI cannot plot: shown as null.
    return dg.MetadataValue.null() if math.isnan(value) else dg.MetadataValue.float(value)


def _reference(
    project: ProjectResource,
    spark: SparkResource,
    settings: DriftResource,
    version: str,
    model: PipelineModel,
) -> tuple[ReferenceProfile, dict]:
    """The training-data profile of ``version``: saved, or computed from the audited table.

    The model's training rows are the audited table minus the time-ordered holdout its
    metadata records; ``training_data_sha256`` says whether the table is still the one it
    was trained on (the profile is of the current table either way, and says which).
    """
    registry = project.registry
    metadata = registry.metadata(version)
    audited_path = project.table("audited_transactions")
    current = folder_fingerprint(audited_path)
    holdout_fraction = (metadata.get("training") or {}).get("holdout_fraction")
    if holdout_fraction is None:
        raise ModelRegistryError(
            f"model version {version} does not record its holdout_fraction, so its training "
            "rows are unknown: retrain it (materialize fraud_model) before measuring drift"
        )
    provenance = {
        "model_version": version,
        "audited_sha256": current,
        "holdout_fraction": holdout_fraction,
        "bins": settings.bins,
        "reference_rows": settings.reference_rows,
    }
    path = project.table(REFERENCE_FOLDER) / f"{version}.json"
    profile = load_profile(path, **provenance)
    source = {
        **provenance,
        "matches_training_data": current == metadata.get("training_data_sha256"),
        "reused": profile is not None,
    }
    if profile is None:
        audited = read_table(spark.session(), audited_path, AUDITED_TRANSACTIONS_SCHEMA)
        reference = training_reference(audited, holdout_fraction, settings.reference_rows)
        scored = with_fraud_prob(model, reference)
        profile = reference_profile(scored, DRIFT_COLUMNS, settings.bins)
        save_profile(path, profile, **provenance)
    return profile, source


@dg.asset(
    group_name="audits",
    kinds={"spark", "kafka"},
    deps=[promoted_model],
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="feature_drift",
            description="No model input (V1..V28, Amount) and not the score has a population "
            "stability index above the drift threshold (drift.psi_threshold, 0.2) against "
            "the promoted model's training data. A warning: its failure triggers retraining "
            "(docs/models.md, Drift and retraining).",
        ),
    ],
    description=(
        "How far live traffic has moved from the promoted model's training data: the "
        "population stability index of each model input and of the score, on the newest "
        "transactions of Kafka `transactions` (parsed and validated as the stream does, scored "
        "with the promoted model) against the training rows' decile bins."
    ),
)
def feature_drift(
    project: ProjectResource,
    spark: SparkResource,
    kafka: KafkaResource,
    drift: DriftResource,
):
    registry = project.registry
    promotion = registry.require_promoted()
    session = spark.session()  # before loading the model: Spark ML reads through it
    model = registry.load(promotion.version)
    profile, source = _reference(project, spark, drift, promotion.version, model)
    settings = kafka.settings
    ends = end_offsets(settings, settings.topics.transactions)
    live = recent_transactions(session, settings, ends, drift.live_rows)
    measured = measure_drift(profile, with_fraud_prob(model, live))
    psi = measured.table()
    live_rows = int(psi["live_rows"].max()) if len(psi) else 0
    threshold = drift.psi_threshold
    measurable = live_rows >= drift.min_live_rows
    shifted = psi[psi["psi"] > threshold]["feature"].tolist() if measurable else []
    largest = psi.iloc[0]
    score_psi = measured.psi(SCORE_COLUMN)
    figures = {
        "max_psi": _float(float(largest["psi"])),
        "max_psi_feature": str(largest["feature"]),
        "score_psi": _float(score_psi),
        "psi_threshold": dg.MetadataValue.float(threshold),
        "shifted_features": dg.MetadataValue.json(shifted),
        "live_rows": live_rows,
        "min_live_rows": drift.min_live_rows,
        "model_version": promotion.version,
    }
    yield dg.MaterializeResult(
        metadata={
            # The table and the plot first: what a person reads (the UI keeps this order).
            "psi_by_feature": table(psi.round(4)),
            "drift_plot": png(
                drift_png(
                    psi,
                    measured.bin_shares(SCORE_COLUMN),
                    threshold,
                    f"{promotion.version}: live ({live_rows} rows) vs training data",
                ),
                "PSI per feature and score distribution",
            ),
            **figures,
            "dagster/row_count": live_rows,
            "reference_rows": profile.rows,
            "reference": dg.MetadataValue.json(source),
            "transactions_topic": settings.topics.transactions,
            "end_offsets": dg.MetadataValue.json({str(p): o for p, o in ends.items()}),
        }
    )
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=not shifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if measurable
        else f"too few live transactions to measure ({live_rows} < {drift.min_live_rows})",
        metadata={**figures, "measured": measurable},
    )
