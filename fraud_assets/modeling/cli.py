"""``fraud-assets models``: train LR, random forest and GBT under both protocols, compare.

Audits ``data/creditcard.csv`` exactly as the Dagster assets do (exact duplicates dropped),
then for each algorithm and protocol runs the bounded hyper-parameter search of
``fraud_assets.core.train.SEARCH_SPACE`` on the validation slice, refits the best
configuration on the training part and evaluates it once on the holdout. Writes

- ``var/models/comparison.json``: one entry per model x protocol (the table of the docs);
- ``var/models/comparison_reports.json``: the full reports (search, per-policy thresholds,
  holdout PR curve, settings, dataset hash and Spark version);
- the table between the markers of ``docs/models.md``.

Nothing is saved in the model registry: promotion goes through Dagster's gate.
"""

import argparse
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyspark

from fraud_assets.core import audit, train
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


def write_docs_table(docs: Path, table: str, note: str) -> bool:
    """Replace the text between the comparison markers of ``docs``; False without markers."""
    if not docs.is_file():
        return False
    text = docs.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return False
    body = f"{TABLE_START}\n{note}\n\n{table}\n{TABLE_END}"
    docs.write_text(text[:start] + body + text[end + len(TABLE_END) :])
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
    entries, reports = [], []
    for algorithm in args.algorithms:
        base = train.TrainingConfig(algorithm=algorithm)
        candidates = train.search_candidates(base, args.budget)
        for protocol in args.protocols:
            log.info("training %s (%s), %d candidate(s)", algorithm, protocol, len(candidates))
            run = train.train_protocol(audited, protocol, candidates)
            report = train.run_report(run, settings, args.policy, resamples=args.resamples)
            entry = train.comparison_entry(report)
            # What the stream pays per transaction for this model: the same expression (or
            # UDF) over every audited row, net of reading them.
            entry["scoring_core_us_per_row"] = train.scoring_cost_us_per_row(run.model, audited)
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
    print(f"\nwrote {output} in {time.monotonic() - started:.0f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command."""
    parser = subparsers.add_parser(
        "models",
        help="train LR, random forest and GBT under both protocols and compare them",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "--algorithms", nargs="+", choices=list(train.ALGORITHMS), default=list(train.ALGORITHMS)
    )
    parser.add_argument(
        "--protocols", nargs="+", choices=list(train.PROTOCOLS), default=list(train.PROTOCOLS)
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
