"""Shadow: the challenger against the champion on the live traffic both scored.

The comparison itself is ``fraud_assets.core.shadow``; the jobs that name, clear and promote
a challenger are in ``defs/operate.py``.
"""

import dagster as dg

from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.shadow import compare, read_shadow
from fraud_assets.defs.metadata import table
from fraud_assets.defs.resources import ProjectResource
from fraud_assets.defs.stream import alerts_table


@dg.asset(
    group_name="audits",
    kinds={"pandas", "json"},
    deps=[alerts_table],
    description=(
        "The challenger scored in shadow against the champion, on the same live rows "
        "(tables/shadow): alerts raised, precision, recall and average precision on the "
        "labelled ones, and the transactions where the two disagree. Name a challenger with "
        "the name_challenger job; promote it with promote_challenger once the evidence suffices."
    ),
)
def challenger_comparison(project: ProjectResource) -> dg.MaterializeResult:
    shadow_table = project.stream_paths.shadow_table
    comparison = compare(read_shadow(shadow_table))
    challenger = project.registry.challenger()
    report = comparison.as_dict() | {
        "named_challenger": None if challenger is None else challenger.version
    }
    write_json_atomic(project.table("challenger_comparison.json"), report)
    return dg.MaterializeResult(
        metadata={
            "challenger": comparison.challenger_version or "none yet",
            "named_challenger": report["named_challenger"] or "none",
            "shadow_rows": comparison.rows,
            "labelled": comparison.labelled,
            "frauds": comparison.frauds,
            "batches": comparison.batches,
            "disagreements": comparison.disagreements,
            "models": table(comparison.models),
            "disagreement_rows": table(comparison.disagreement_rows),
            "shadow_table": dg.MetadataValue.path(str(shadow_table)),
        }
    )
