"""``fraud-assets live``: the live system in one command (see :mod:`fraud_assets.live.system`)."""

import argparse
import os
from pathlib import Path

from fraud_assets.end_to_end import SETUP_ERRORS
from fraud_assets.errors import OperatorError
from fraud_assets.interrupts import stop_on_signals
from fraud_assets.live.system import LiveOptions, run_live


def live_command(args: argparse.Namespace) -> int:
    """CLI handler: run the live system until Ctrl-C or SIGTERM, then stop all it started."""
    # `kill PID` stops like Ctrl-C: everything this command started, in order.
    stop_on_signals()
    home = Path(args.home).resolve()
    state_dir = Path(args.state_dir).resolve() if args.state_dir else home / "var"
    dagster_home = Path(
        args.dagster_home or os.environ.get("DAGSTER_HOME") or state_dir / "dagster_home"
    ).resolve()
    if args.rate <= 0:
        raise OperatorError("--rate must be positive (transactions per second)")
    if args.rows is not None and args.rows < 1:
        raise OperatorError("--rows must be at least 1")
    options = LiveOptions(
        home=home,
        state_dir=state_dir,
        dagster_home=dagster_home,
        port=args.port,
        kafka_port=args.kafka_port,
        rate=args.rate,
        rows=args.rows,
        verbose=args.verbose,
    )
    try:
        run_live(options)
    except SETUP_ERRORS as error:
        raise OperatorError(str(error)) from error
    except KeyboardInterrupt:
        # Everything is stopped by now (run_live's cleanup); the state stays.
        return 0
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``live`` to the CLI."""
    parser = subparsers.add_parser(
        "live",
        help="the live system: broker, Dagster UI + daemon, the supervised stream and a paced "
        "replay of the real transactions, until Ctrl-C",
    )
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    parser.add_argument(
        "--kafka-port", type=int, default=9092, help="embedded broker port (default 9092)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="replay rate in transactions per second (default 200: event time runs about "
        "120x faster than wall time)",
    )
    parser.add_argument(
        "--state-dir",
        default="",
        help="tables, models, checkpoints and broker state (default: <home>/var)",
    )
    parser.add_argument(
        "--dagster-home",
        default="",
        help="the Dagster instance (default: $DAGSTER_HOME, else <state-dir>/dagster_home)",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="train and replay the first N rows of the real data plus every fraud (quick "
        "runs; default: all the data)",
    )
    parser.set_defaults(handler=live_command)
