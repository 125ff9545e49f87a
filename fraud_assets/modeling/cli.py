"""``fraud-assets models``: train every algorithm under each protocol and compare them.

Audits ``data/creditcard.csv`` exactly as the Dagster assets do (exact duplicates dropped),
then for each algorithm and protocol runs the bounded hyper-parameter search of
``fraud_assets.core.train.SEARCH_SPACE`` on the validation slice, refits the best
configuration on the training part and evaluates it once on the holdout. The rolling-origin
protocol (``fraud_assets.core.rolling``) refits the time-ordered protocol's configuration on
each expanding fold; its pooled AP, the paired differences against the best model and the
measured scoring costs then go through the cost-aware rule of
``fraud_assets.core.model_choice``, as ``model_selection`` does. Writes

- ``var/models/comparison.json``: one entry per model x protocol (the table of the docs);
- ``var/models/comparison_reports.json``: the full reports (search, per-policy thresholds,
  holdout PR curve, rolling-origin folds, paired differences, the rule's choice, settings,
  dataset hash and Spark version);
- the tables between the markers of ``docs/models.md``.

Nothing is saved in the model registry: promotion goes through Dagster's gate.
"""

import argparse
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyspark

from fraud_assets.core import audit, model_choice, rolling, train
from fraud_assets.core.paths import ProjectPaths
from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.selection import POLICIES, PolicySettings
from fraud_assets.core.settings import SparkSettings
from fraud_assets.core.spark import get_spark
from fraud_assets.errors import OperatorError
from fraud_assets.setup.dataset import DATASET_SHA256, DatasetError, sha256_of, verify_dataset

log = logging.getLogger(__name__)

TABLE_START = "<!-- comparison:start -->"
TABLE_END = "<!-- comparison:end -->"
ROLLING_START = "<!-- rolling-origin:start -->"
ROLLING_END = "<!-- rolling-origin:end -->"
PROTOCOL_CHOICES = (*train.PROTOCOLS, rolling.PROTOCOL)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


def comparison_table(entries: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (one row per model x protocol)."""
    lines = [
        "| model | protocol | AP (95% CI) | AP trapezoid | ROC-AUC | threshold (policy) "
        "| precision | recall | precision @ budget | train s | scoring core-µs/row |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries:
        lines.append(
            f"| {e['model']} | {e['protocol']} | {_fmt(e['average_precision'])} "
            f"({_fmt(e['ap_ci_low'])}–{_fmt(e['ap_ci_high'])}) | {_fmt(e['ap_trapezoid'])} "
            f"| {_fmt(e['roc_auc'], 4)} | {_fmt(e['threshold'], 6)} ({_fmt(e['policy'])}) "
            f"| {_fmt(e['precision'])} | {_fmt(e['recall'])} "
            f"| {_fmt(e['precision_at_budget'])} | {_fmt(e['train_seconds'], 0)} "
            f"| {_fmt(e.get('scoring_core_us_per_row'), 1)} |"
        )
    return "\n".join(lines)


def _interval(value: Any, low: Any, high: Any) -> str:
    return f"{_fmt(value)} ({_fmt(low)}–{_fmt(high)})"


def rolling_origin_table(
    reports: list[dict[str, Any]], paired: list[dict[str, Any]], choice: dict[str, Any] | None
) -> str:
    """The rolling-origin comparison as a Markdown table, one row per model.

    Pooled AP (95% CI), each fold's AP, the paired difference with the best pooled model,
    the scoring cost and what the cost-aware rule made of the model.
    """
    folds = max((len(r["folds"]) for r in reports), default=0)
    by_model = {p["a"]: p for p in paired}
    chosen = {v["model"]: v for v in (choice or {}).get("verdicts", [])}
    fold_heads = "".join(f" fold {i} AP (frauds) |" for i in range(1, folds + 1))
    lines = [
        f"| model | pooled AP (95% CI) | mean fold AP |{fold_heads} AP − best (paired 95% CI) "
        "| scoring core-µs/row | rule |",
        "| --- " * (6 + folds) + "|",
    ]
    for report in reports:
        pooled, model = report["pooled"], report["model"]
        cells = "".join(
            f" {_fmt(f['average_precision'])} ({f['frauds']}) |" for f in report["folds"]
        )
        pair = by_model.get(model)
        difference = (
            f"{pair['difference']:+.3f} ({pair['ci_low']:+.3f} to {pair['ci_high']:+.3f})"
            if pair
            else "best"
        )
        rule = _rule_cell(chosen.get(model))
        ap = _interval(pooled["average_precision"], pooled["ap_ci_low"], pooled["ap_ci_high"])
        lines.append(
            f"| {model} | {ap} "
            f"| {_fmt(pooled['mean_fold_average_precision'])} |{cells} {difference} "
            f"| {_fmt(report.get('scoring_core_us_per_row'), 1)} | {rule} |"
        )
    return "\n".join(lines)


def _rule_cell(verdict: dict[str, Any] | None) -> str:
    if verdict is None:
        return "—"
    if verdict["chosen"]:
        return "**chosen**"
    return "qualifies" if verdict["qualifies"] else "significantly worse"


def write_docs_table(
    docs: Path, table: str, note: str, markers: tuple[str, str] = (TABLE_START, TABLE_END)
) -> bool:
    """Replace the text between two markers of ``docs``; False without the markers."""
    if not docs.is_file():
        return False
    text = docs.read_text()
    start_marker, end_marker = markers
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        return False
    body = f"{start_marker}\n{note}\n\n{table}\n{end_marker}"
    docs.write_text(text[:start] + body + text[end + len(end_marker) :])
    return True


def run_models(args: argparse.Namespace) -> int:
    """CLI handler: train, evaluate and compare; returns 0 when every run finished."""
    paths = ProjectPaths.at(args.home)
    csv = Path(args.dataset) if args.dataset else paths.dataset_csv
    try:
        verify_dataset(csv, expected_sha256=None if args.dataset else DATASET_SHA256)
    except DatasetError as error:
        raise OperatorError(str(error)) from error
    settings = PolicySettings(
        min_precision=args.min_precision,
        alerts_per_day=args.alerts_per_day,
        review_cost=args.review_cost,
    )
    spark = get_spark(
        SparkSettings(
            master=args.spark_master,
            driver_memory=args.driver_memory,
            shuffle_partitions=4,
            app_name="fraud_assets_models",
        )
    )
    started = time.monotonic()
    output = Path(args.output) if args.output else paths.var / "models" / "comparison.json"
    audited = audit.audited_transactions(audit.raw_transactions(spark, csv)).cache()
    entries, reports, rolling_runs, rolling_reports = [], [], [], []
    train_protocols = [p for p in args.protocols if p != rolling.PROTOCOL]
    for algorithm in args.algorithms:
        base = train.TrainingConfig(algorithm=algorithm)
        candidates = train.search_candidates(base, args.budget)
        chosen_config, cost = candidates[0], None
        for protocol in train_protocols:
            log.info("training %s (%s), %d candidate(s)", algorithm, protocol, len(candidates))
            run = train.train_protocol(audited, protocol, candidates)
            report = train.run_report(run, settings, args.policy, resamples=args.resamples)
            entry = train.comparison_entry(report)
            # What the stream pays per transaction for this model: the same expression (or
            # UDF) over every audited row, net of reading them.
            entry["scoring_core_us_per_row"] = train.scoring_cost_us_per_row(run.model, audited)
            if protocol == "time_ordered":
                chosen_config, cost = run.config, entry["scoring_core_us_per_row"]
            log.info(
                "%s %s: AP %.3f [%.3f, %.3f] in %.0f s",
                algorithm,
                protocol,
                entry["average_precision"],
                entry["ap_ci_low"],
                entry["ap_ci_high"],
                entry["train_seconds"],
            )
            entries.append(entry)
            reports.append(report)
            # Written after every run, so an interrupted comparison keeps what it finished.
            write_json_atomic(output, entries)
        if rolling.PROTOCOL in args.protocols:
            log.info("rolling origin: %s on %d folds", algorithm, args.folds)
            fold_started = time.monotonic()
            run = rolling.rolling_origin(audited, chosen_config, args.folds)
            report = rolling.rolling_report(run, args.resamples)
            report["train_seconds"] = round(time.monotonic() - fold_started, 1)
            report["params"] = chosen_config.params()
            report["scoring_core_us_per_row"] = cost
            log.info(
                "%s rolling origin: pooled AP %.3f",
                algorithm,
                report["pooled"]["average_precision"],
            )
            rolling_runs.append(run)
            rolling_reports.append(report)
            entries.append(rolling.comparison_entry(report))
            write_json_atomic(output, entries)
    paired = rolling.paired_comparisons(rolling_runs, args.resamples)
    choice = (
        model_choice.choose_model(
            _candidates(rolling_reports, reports),
            rolling.paired_by_model(paired),
            args.ap_tolerance,
        ).as_dict()
        if rolling_reports
        else None
    )
    audited.unpersist()
    write_json_atomic(
        output.with_name(output.stem + "_reports.json"),
        {
            "generated_at": datetime.now(UTC).isoformat(),
            "dataset": str(csv),
            "dataset_sha256": sha256_of(csv),
            "spark_version": pyspark.__version__,
            "policy_settings": settings.__dict__,
            "recommended_policy": args.policy,
            "wall_seconds": round(time.monotonic() - started, 1),
            "reports": reports,
            "rolling_origin": {
                "folds": args.folds,
                "reports": rolling_reports,
                "paired": paired,
                "choice": choice,
                "ap_tolerance": args.ap_tolerance,
            },
        },
    )
    note = (
        f"`fraud-assets models{f' --budget {args.budget}' if args.budget else ''}` on "
        f"{datetime.now(UTC):%Y-%m-%d}: holdout metrics, "
        f"thresholds chosen on validation by `{args.policy}`, budget "
        f"{args.alerts_per_day:g} alerts/day, {args.resamples} bootstrap resamples."
    )
    docs = paths.home / "docs" / "models.md"
    if not args.no_docs and not write_docs_table(docs, comparison_table(entries), note):
        log.warning("%s has no comparison markers: table not written there", docs)
    print(comparison_table(entries))
    if rolling_reports:
        table = rolling_origin_table(rolling_reports, paired, choice)
        rolling_note = (
            f"`fraud-assets models` on {datetime.now(UTC):%Y-%m-%d}: {args.folds} expanding "
            f"folds, {args.resamples} bootstrap resamples (within folds, paired across models); "
            f"rule `{choice['rule']}` (AP tolerance {args.ap_tolerance:g}) chooses "
            f"**{_chosen_model(choice)}**: {choice['reason']}."
        )
        markers = (ROLLING_START, ROLLING_END)
        if not args.no_docs and not write_docs_table(docs, table, rolling_note, markers):
            log.warning("%s has no rolling-origin markers: table not written there", docs)
        print(f"\n{table}\n\n{rolling_note}")
    print(f"\nwrote {output} in {time.monotonic() - started:.0f} s")
    return 0


def _candidates(
    rolling_reports: list[dict[str, Any]], reports: list[dict[str, Any]]
) -> list[model_choice.Candidate]:
    """One candidate per model (named by the model: nothing is saved in the registry)."""
    validation = {
        r["model"]: r["validation"]["average_precision"]
        for r in reports
        if r["protocol"] == "time_ordered"
    }
    return [
        model_choice.Candidate(
            version=r["model"],
            model=r["model"],
            validation_average_precision=validation.get(r["model"], float("nan")),
            pooled_average_precision=r["pooled"]["average_precision"],
            scoring_core_us_per_row=r["scoring_core_us_per_row"],
        )
        for r in rolling_reports
    ]


def _chosen_model(choice: dict[str, Any]) -> str:
    return next(v["model"] for v in choice["verdicts"] if v["chosen"])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command."""
    parser = subparsers.add_parser(
        "models",
        help="train every algorithm under each protocol and compare them",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "--algorithms", nargs="+", choices=list(train.ALGORITHMS), default=list(train.ALGORITHMS)
    )
    parser.add_argument(
        "--protocols", nargs="+", choices=list(PROTOCOL_CHOICES), default=list(PROTOCOL_CHOICES)
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=rolling.DEFAULT_FOLDS,
        help="rolling-origin folds (the data is cut into folds + 1 blocks by Time)",
    )
    parser.add_argument(
        "--ap-tolerance",
        type=float,
        default=model_choice.DEFAULT_AP_TOLERANCE,
        help="the cost-aware rule's tolerance on the paired AP difference",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="at most this many search candidates per algorithm (default: all)",
    )
    parser.add_argument("--policy", choices=list(POLICIES), default="max_f1")
    parser.add_argument("--min-precision", type=float, default=PolicySettings.min_precision)
    parser.add_argument("--alerts-per-day", type=float, default=PolicySettings.alerts_per_day)
    parser.add_argument("--review-cost", type=float, default=PolicySettings.review_cost)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--dataset", default="", help="another CSV (header checked, not hash)")
    parser.add_argument("--output", default="", help="default: var/models/comparison.json")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/models.md alone")
    parser.add_argument("--spark-master", default="local[*]")
    parser.add_argument("--driver-memory", default="4g")
    parser.set_defaults(handler=run_models)
