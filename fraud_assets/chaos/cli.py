"""``fraud-assets chaos``: run :mod:`fraud_assets.chaos.harness` and write its report.

The report goes to ``<home>/var/chaos/report.json`` (and the run's own folder,
``var/chaos/run-<UTC>/``); the exit code is 0 only when every reconciliation holds.
"""

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from fraud_assets.core.stream_run import MICROBATCH, REALTIME
from fraud_assets.errors import OperatorError
from fraud_assets.interrupts import stop_on_signals


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``chaos`` to the ``fraud-assets`` parser."""
    parser = subparsers.add_parser(
        "chaos",
        help="kill -9 the stream and stop Kafka during a replay of the real data, then "
        "reconcile (report: var/chaos/report.json)",
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="replay the first N rows (+ every fraud) only"
    )
    parser.add_argument("--kills", type=int, default=5, help="kill -9 of the stream (default 5)")
    parser.add_argument(
        "--outage-seconds", type=float, default=30.0, help="broker outage (default 30 s)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the kill moments (default: random)"
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="deliver alerts through Spark's real-time mode (milliseconds, at least once; "
        "see docs/operations.md); the Parquet tables and KPIs stay exactly once",
    )
    parser.set_defaults(handler=run_chaos_command)


def run_chaos_command(args: argparse.Namespace) -> int:
    """CLI handler: one chaos run; exit 1 if any reconciliation fails."""
    import random

    from fraud_assets.chaos.harness import ChaosOptions, run_chaos
    from fraud_assets.core.registry import write_json_atomic
    from fraud_assets.end_to_end import SETUP_ERRORS

    # `kill PID` must clean up like Ctrl-C: the harness stops what it started in `finally`.
    stop_on_signals()
    if args.kills < 1 or args.outage_seconds < 0:
        raise OperatorError("--kills must be at least 1 and --outage-seconds not negative")
    home = Path(args.home).resolve()
    chaos_dir = home / "var" / "chaos"
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    options = ChaosOptions(
        home=home,
        state_dir=chaos_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}",
        rows=args.rows,
        kills=args.kills,
        outage_seconds=args.outage_seconds,
        seed=seed,
        alert_delivery=REALTIME if args.realtime else MICROBATCH,
    )
    try:
        report = run_chaos(options)
    except SETUP_ERRORS as error:
        raise OperatorError(str(error)) from error
    write_json_atomic(chaos_dir / "report.json", report)
    print(json.dumps(report, indent=2, sort_keys=True))
    verdict = "OK" if report["success"] else "RECONCILIATION FAILED"
    print(f"fraud-assets chaos: {verdict} (report: {chaos_dir / 'report.json'})")
    return 0 if report["success"] else 1
