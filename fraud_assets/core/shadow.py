"""A challenger in shadow: how it did on the live traffic the champion scored.

While an operator has named a challenger (``ModelRegistry.name_challenger``), the scoring
stream scores every valid message with both models from the same parsed row and commits the
pair to the shadow table (``tables/shadow``, exactly once per micro-batch, never to Kafka;
``fraud_assets.core.stream``). This module compares the two on the labelled part of those
rows (``Class`` known): alerts raised, precision and recall at each model's threshold,
average precision with a bootstrap interval, and the transactions where they disagree.
It reads the table with pyarrow (no Spark session) and computes with numpy on the driver.

Promoting the challenger can require a minimum of such evidence (:class:`EvidenceRule`):
a challenger that scored a few hundred labelled rows with two frauds among them has shown
nothing yet.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_assets.core.contracts import SHADOW_SCHEMA, SHADOW_TABLE_SCHEMA, field_names
from fraud_assets.core.digest import read_batch_table_frame
from fraud_assets.core.evaluate import average_precision, bootstrap_ap_interval
from fraud_assets.core.registry import ModelRegistry, ModelRegistryError, Promotion

COMPARISON_COLUMNS: tuple[str, ...] = (
    "role",
    "version",
    "threshold",
    "alerts",
    "labelled_alerts",
    "true_alerts",
    "precision",
    "recall",
    "average_precision",
    "ap_ci_low",
    "ap_ci_high",
)
"""One row per model of :func:`compare`: the champion first, then the challenger."""

DISAGREEMENT_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "event_time",
    "Amount",
    "Class",
    "fraud_prob",
    "challenger_prob",
    "alerted_by",
)


@dataclass(frozen=True)
class EvidenceRule:
    """The least live evidence a challenger needs before it may be promoted."""

    min_labelled_rows: int = 10_000
    """Labelled transactions the challenger scored in shadow."""
    min_frauds: int = 20
    """Frauds among them: a recall measured on fewer is mostly noise."""


@dataclass(frozen=True)
class ShadowComparison:
    """The champion and the challenger on the same live rows."""

    challenger_version: str | None
    """The newest challenger in the table (None: the table holds no rows)."""
    rows: int
    labelled: int
    frauds: int
    batches: int
    models: pd.DataFrame
    """:data:`COMPARISON_COLUMNS`, on the labelled rows (alerts: on every row)."""
    disagreements: int
    """Rows where exactly one of the two alerts."""
    disagreement_rows: pd.DataFrame
    """The disagreements, labelled frauds first, then by the larger of the two scores."""

    def as_dict(self) -> dict:
        values = asdict(self)
        values["models"] = self.models.to_dict(orient="records")
        values.pop("disagreement_rows")
        return values

    def evidence(self, rule: EvidenceRule) -> tuple[bool, str]:
        """Whether the rule's minimum is met, and what is (or is still) there."""
        enough = self.labelled >= rule.min_labelled_rows and self.frauds >= rule.min_frauds
        seen = f"{self.labelled:,} labelled rows with {self.frauds:,} frauds in shadow"
        wanted = f"{rule.min_labelled_rows:,} and {rule.min_frauds:,}"
        return enough, f"{seen} (at least {wanted} required)"


def read_shadow(shadow_table: Path) -> pd.DataFrame:
    """The shadow table as pandas (:data:`SHADOW_SCHEMA` and ``batch_id``); empty before it."""
    columns = [*field_names(SHADOW_SCHEMA), "batch_id"]
    frame = read_batch_table_frame(shadow_table, SHADOW_TABLE_SCHEMA, columns)
    return pd.DataFrame(columns=columns) if frame is None else frame


def _model_row(role: str, version, threshold, alerts: pd.Series, labels, scores) -> dict:
    labelled_alerts = alerts[labels.index]
    true_alerts = int((labelled_alerts & (labels == 1)).sum())
    frauds = int((labels == 1).sum())
    low, high = bootstrap_ap_interval(labels.to_numpy(), scores.to_numpy(), resamples=200)
    return {
        "role": role,
        "version": version,
        "threshold": threshold,
        "alerts": int(alerts.sum()),
        "labelled_alerts": int(labelled_alerts.sum()),
        "true_alerts": true_alerts,
        "precision": true_alerts / int(labelled_alerts.sum()) if labelled_alerts.any() else None,
        "recall": true_alerts / frauds if frauds else None,
        "average_precision": average_precision(labels.to_numpy(), scores.to_numpy())
        if len(labels)
        else None,
        "ap_ci_low": low,
        "ap_ci_high": high,
    }


def compare(shadow: pd.DataFrame, version: str | None = None, top: int = 20) -> ShadowComparison:
    """Compare the champion's and the challenger's scores of the shadow rows of ``version``.

    ``version`` defaults to the challenger of the newest batch. The champion is whatever
    model the stream acted on for those rows (a promotion meanwhile is a different champion
    for the later rows; its versions are listed together).
    """
    if version is None and len(shadow):
        version = str(shadow.loc[shadow["batch_id"].idxmax(), "challenger_version"])
    rows = shadow[shadow["challenger_version"] == version] if version else shadow.iloc[0:0]
    labelled = rows[rows["Class"].notna()]
    labels = labelled["Class"].astype(int)
    champions = sorted(rows["model_version"].unique())
    thresholds = sorted(rows["threshold"].unique())
    models = pd.DataFrame(
        [
            _model_row(
                "champion",
                ", ".join(champions),
                ", ".join(f"{t:g}" for t in thresholds),
                rows["is_alert"].astype(bool),
                labels,
                labelled["fraud_prob"].astype(float),
            ),
            _model_row(
                "challenger",
                version,
                ", ".join(f"{t:g}" for t in sorted(rows["challenger_threshold"].unique())),
                rows["challenger_alert"].astype(bool),
                labels,
                labelled["challenger_prob"].astype(float),
            ),
        ],
        columns=list(COMPARISON_COLUMNS),
    )
    champion_alert = rows["is_alert"].astype(bool)
    challenger_alert = rows["challenger_alert"].astype(bool)
    differ = rows[champion_alert != challenger_alert].assign(
        alerted_by=np.where(
            champion_alert[champion_alert != challenger_alert], "champion", "challenger"
        ),
        _fraud=lambda d: d["Class"].eq(1),
        _top=lambda d: d[["fraud_prob", "challenger_prob"]].max(axis=1),
    )
    shown = differ.sort_values(
        ["_fraud", "_top", "transaction_id"], ascending=[False, False, True], kind="mergesort"
    ).head(top)
    return ShadowComparison(
        challenger_version=version,
        rows=len(rows),
        labelled=len(labelled),
        frauds=int((labels == 1).sum()),
        batches=int(rows["batch_id"].nunique()),
        models=models,
        disagreements=len(differ),
        disagreement_rows=shown[list(DISAGREEMENT_COLUMNS)].reset_index(drop=True),
    )


class NotEnoughEvidenceError(ModelRegistryError):
    """The challenger has not scored enough labelled live traffic in shadow yet."""

    def __init__(self, message: str, comparison: ShadowComparison):
        super().__init__(message)
        self.comparison = comparison


def promote_challenger(
    registry: ModelRegistry,
    shadow_table: Path,
    rule: EvidenceRule,
    *,
    changed_by: str,
    reason: str,
) -> tuple[Promotion, ShadowComparison]:
    """Promote the named challenger at its shadow threshold if its evidence meets ``rule``.

    The change log records the evidence with the reason; the challenger pointer is cleared.

    Raises:
        ModelRegistryError: No challenger is named.
        NotEnoughEvidenceError: It has not scored enough labelled traffic in shadow.
    """
    challenger = registry.challenger()
    if challenger is None:
        raise ModelRegistryError("no challenger is named: name one first")
    comparison = compare(read_shadow(shadow_table), challenger.version)
    enough, evidence = comparison.evidence(rule)
    if not enough:
        raise NotEnoughEvidenceError(
            f"{challenger.version} is not promoted: {evidence}. Let the stream score more "
            "traffic in shadow, or lower the minimum deliberately",
            comparison,
        )
    promotion = registry.promote(
        challenger.version,
        challenger.threshold,
        challenger.policy,
        registry.recorded_pr_auc(challenger.version),
        changed_by=changed_by,
        reason=f"{reason} ({evidence})",
    )
    return promotion, comparison
