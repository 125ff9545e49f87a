"""``fraud-assets demo``: the whole pipeline, end to end, on the real dataset.

Runs every step of :mod:`fraud_assets.end_to_end` once with an embedded Kafka broker: audit
-> train -> select in Dagster, replay every audited transaction into Kafka, the scoring
stream in bounded mode until all of them are processed, then reads both alert sinks back and
reconciles them exactly against batch scoring. Writes ``var/demo/summary.json`` and exits
non-zero unless the stream's alerts are exactly the expected ones. Everything it starts, it
stops, also on failure or Ctrl-C.
"""

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.stream_run import MICROBATCH, REALTIME
from fraud_assets.end_to_end import (
    SETUP_ERRORS,
    EndToEndOptions,
    run_end_to_end,
    subset_of_real_data,
)
from fraud_assets.errors import OperatorError
from fraud_assets.interrupts import stop_on_signals


def _print_summary(summary: dict[str, Any], path: Path) -> None:
    ok = "OK" if summary["success"] else "MISMATCH"
    print(f"\nfraud_assets demo: {ok}  (summary: {path})")
    print(
        f"  model {summary['model_version']}  PR-AUC {summary['pr_auc']:.3f}  "
        f"threshold {summary['threshold']} ({summary['threshold_policy']})"
    )
    print(
        f"  transactions replayed {summary['transactions_produced']:,} "
        f"({summary['replay_rate_tps']:,} tx/s)  scored {summary['transactions_scored']:,}  "
        f"in {summary['micro_batches']} micro-batches"
    )
    print(
        f"  alerts expected {summary['alerts_expected']:,}  parquet {summary['alerts_parquet']:,}  "
        f"kafka {summary['alerts_kafka']:,} ({summary['alerts_kafka_distinct']:,} distinct, "
        f"{summary['alert_delivery']} delivery, "
        f"{summary['alerts_kafka_payload_mismatches']} repeats differing)"
    )
    print(
        f"  missing {summary['missing_alerts']}  unexpected {summary['unexpected_alerts']}  "
        f"parquet duplicates {summary['duplicate_alerts_parquet']}"
    )
    print(
        f"  KPI windows {summary['kpi_windows_streamed']:,} streamed = "
        f"{summary['kpi_windows_closed']:,} closed in batch "
        f"({summary['kpi_windows_open']} still open), mismatched "
        f"{summary['kpi_windows_mismatched']}, missing {summary['kpi_windows_missing']}"
    )
    stages = "  ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items())
    print(f"  wall {summary['wall_seconds']:.1f}s: {stages}")


def run_demo(args: argparse.Namespace) -> int:
    """CLI handler: the full-dataset demo with its own broker."""
    # `kill PID` must clean up like Ctrl-C: stop the stream and the broker we started.
    stop_on_signals()
    home = Path(args.home).resolve()
    demo_dir = home / "var" / "demo"
    state_dir = demo_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    if args.rows is not None and args.rows < 1:
        raise OperatorError("--rows must be at least 1")
    instance = dg.DagsterInstance.get() if args.dagster_home else dg.DagsterInstance.ephemeral()
    try:
        subset = {} if args.rows is None else subset_of_real_data(home, state_dir, args.rows)
        options = EndToEndOptions(
            home=home,
            state_dir=state_dir,
            broker_port=args.port,
            progress=not args.no_progress,
            stop_spark_at_end=True,
            verbose=args.verbose,
            alert_delivery=REALTIME if args.realtime else MICROBATCH,
            **subset,
        )
        summary = run_end_to_end(options, instance)
    except SETUP_ERRORS as error:
        raise OperatorError(str(error)) from error
    path = demo_dir / "summary.json"
    write_json_atomic(path, summary)
    write_json_atomic(state_dir / "summary.json", summary)
    _print_summary(summary, path)
    return 0 if summary["success"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the CLI."""
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on the real dataset with an embedded Kafka broker"
    )
    parser.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="a quick run on the first N rows of the real data plus every fraud (the audit's "
        "fraud-rate band is relaxed for it; default: all the data)",
    )
    parser.add_argument(
        "--no-dagster-home",
        dest="dagster_home",
        action="store_false",
        help="use a throwaway Dagster instance instead of $DAGSTER_HOME",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="deliver alerts through Spark's real-time mode (milliseconds, at least once; "
        "see docs/operations.md); the Parquet tables and KPIs stay exactly once",
    )
    parser.set_defaults(handler=run_demo)
