"""Which model to promote: average precision weighed against the stream's scoring cost.

The rule (``cheapest_not_worse``), on the rolling-origin evidence of one training run:

1. the reference is the candidate with the best pooled AP;
2. a candidate *qualifies* when the paired 95% interval of ``AP(candidate) - AP(reference)``
   (same rolling-origin rows, same resamples) includes 0 (not significantly worse) or lies
   wholly above ``-ap_tolerance`` (worse, but surely by less than the tolerance); the
   reference itself always qualifies;
3. among the qualifying candidates the one with the lowest measured scoring cost per row is
   chosen (ties: the higher pooled AP).

So the burden of proof lies on cost: a model that costs 10x per message is promoted only
when the paired comparison shows that every cheaper model is worse. Without rolling-origin
evidence (no pooled AP, or no paired interval), the rule falls back to the best time-ordered
validation AP, and says so.
"""

from dataclasses import asdict, dataclass
from typing import Any

RULE = "cheapest_not_worse"
FALLBACK_RULE = "best_validation_ap"

DEFAULT_AP_TOLERANCE = 0.01
"""A pooled-AP shortfall of at most 0.01, when the paired interval proves it, is not worth
paying for: AP is quoted to two decimals and such a gap moves no alert budget."""


@dataclass(frozen=True)
class Candidate:
    """One model version with its measured figures."""

    version: str
    model: str
    validation_average_precision: float
    pooled_average_precision: float | None = None
    scoring_core_us_per_row: float | None = None


@dataclass(frozen=True)
class CandidateVerdict:
    """How the rule saw one candidate."""

    version: str
    model: str
    pooled_average_precision: float | None
    difference_vs_best: float | None
    difference_ci_low: float | None
    difference_ci_high: float | None
    scoring_core_us_per_row: float | None
    qualifies: bool
    chosen: bool


@dataclass(frozen=True)
class ModelChoice:
    """The chosen version, the rule that chose it, and every candidate's verdict."""

    version: str
    rule: str
    reason: str
    verdicts: tuple[CandidateVerdict, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rule": self.rule,
            "reason": self.reason,
            "verdicts": [asdict(v) for v in self.verdicts],
        }


def choose_model(
    candidates: list[Candidate],
    paired: dict[str, dict[str, Any]],
    ap_tolerance: float = 0.0,
) -> ModelChoice:
    """Apply the rule of the module doc.

    Args:
        candidates: The versions of one training run.
        paired: Per version other than the best-pooled one, its paired comparison with it
            (``difference`` = AP(version) - AP(best), ``ci_low``, ``ci_high``).
        ap_tolerance: A candidate whose paired interval lies wholly above ``-ap_tolerance``
            qualifies even when it excludes 0 (>= 0).
    """
    if not candidates:
        raise ValueError("no candidate model to choose from")
    if ap_tolerance < 0:
        raise ValueError(f"ap_tolerance must be >= 0, got {ap_tolerance}")
    best = max(candidates, key=lambda c: c.pooled_average_precision or float("-inf"))
    evidence = all(
        c.pooled_average_precision is not None and c.scoring_core_us_per_row is not None
        for c in candidates
    ) and all(c.version in paired for c in candidates if c is not best)
    if not evidence:
        chosen = max(candidates, key=lambda c: c.validation_average_precision)
        verdicts = tuple(
            _verdict(c, None, qualifies=c is chosen, chosen=c is chosen) for c in candidates
        )
        return ModelChoice(
            chosen.version,
            FALLBACK_RULE,
            "no rolling-origin evidence (pooled AP, paired interval and scoring cost) for "
            "every candidate: the best time-ordered validation AP is chosen",
            verdicts,
        )
    qualifying = {
        c.version for c in candidates if c is best or qualifies(paired[c.version], ap_tolerance)
    }
    chosen = min(
        (c for c in candidates if c.version in qualifying),
        key=lambda c: (c.scoring_core_us_per_row, -c.pooled_average_precision),
    )
    verdicts = tuple(
        _verdict(
            c,
            None if c is best else paired[c.version],
            qualifies=c.version in qualifying,
            chosen=c is chosen,
        )
        for c in candidates
    )
    if chosen is best:
        reason = (
            f"{chosen.model} has the best pooled AP and no model that scores more cheaply "
            "is as good (paired interval)"
        )
    else:
        pair = paired[chosen.version]
        reason = (
            f"{chosen.model} is not significantly worse than {best.model} (best pooled AP; "
            f"paired difference {pair['difference']:+.3f}, 95% interval {pair['ci_low']:+.3f} "
            f"to {pair['ci_high']:+.3f}) and scores for {chosen.scoring_core_us_per_row:.1f} "
            f"core-µs per row against {best.scoring_core_us_per_row:.1f}"
        )
    return ModelChoice(chosen.version, RULE, reason, verdicts)


def qualifies(pair: dict[str, Any], ap_tolerance: float) -> bool:
    """Whether a paired interval against the best says "not worse" (see the module doc)."""
    return pair["ci_low"] <= 0.0 <= pair["ci_high"] or pair["ci_low"] >= -ap_tolerance


def _verdict(
    candidate: Candidate, pair: dict[str, Any] | None, *, qualifies: bool, chosen: bool
) -> CandidateVerdict:
    return CandidateVerdict(
        version=candidate.version,
        model=candidate.model,
        pooled_average_precision=candidate.pooled_average_precision,
        difference_vs_best=pair["difference"] if pair else None,
        difference_ci_low=pair["ci_low"] if pair else None,
        difference_ci_high=pair["ci_high"] if pair else None,
        scoring_core_us_per_row=candidate.scoring_core_us_per_row,
        qualifies=qualifies,
        chosen=chosen,
    )
