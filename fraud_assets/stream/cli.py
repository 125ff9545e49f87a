"""``fraud-assets stream``: run the scoring job outside the Dagster UI.

It executes the very job the UI launches (``scoring_stream`` of
:mod:`fraud_assets.defs.stream`) in this process, with the code location's resources, so the
environment (``FRAUD_*``) is read in one place, :mod:`fraud_assets.defs.resources`.

SIGTERM and SIGINT stop the queries at a micro-batch boundary, then the command exits 130
(Dagster turns both signals into one interruption); a bounded run exits 0 once the backlog
is processed. Problems an operator can fix (no promoted model,
an unusable model, no broker, a checkpoint of another query) exit 2 with one line saying
what to do, before anything is written to the tables. No checkpoint is ever deleted.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from fraud_assets.core.queries import CheckpointMismatchError
from fraud_assets.core.realtime import RealtimeSetupError
from fraud_assets.core.registry import ModelRegistryError
from fraud_assets.core.spark import SparkSetupError
from fraud_assets.core.stream_run import REALTIME, DeliveryModeError
from fraud_assets.errors import OperatorError
from fraud_assets.interrupts import stop_on_signals
from fraud_assets.kafka.admin import BrokerUnreachableError

JOB_NAME = "scoring_stream"
OP_NAME = "run_scoring_stream"
EXIT_INTERRUPTED = 130

OPERATOR_ERRORS: tuple[type[BaseException], ...] = (
    ModelRegistryError,
    CheckpointMismatchError,
    BrokerUnreachableError,
    SparkSetupError,
    RealtimeSetupError,
    DeliveryModeError,
)
"""Failures inside the run whose message already tells the operator what to do."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``stream`` to the ``fraud-assets`` parser."""
    parser = subparsers.add_parser(
        "stream",
        help="run the scoring stream (the Dagster scoring_stream job) in this process",
        description="Score Kafka transactions into alerts until stopped (SIGTERM/Ctrl-C), or "
        "with --bounded until the backlog is processed. Settings come from the FRAUD_* "
        "environment (see the README); --home is the default of FRAUD_HOME.",
    )
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="process every message available now, close the KPI windows, then exit",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="deliver alerts through Spark's real-time mode (milliseconds); the micro-batch "
        "query keeps the tables, dead letters and KPIs (default: FRAUD_ALERT_DELIVERY)",
    )
    parser.add_argument(
        "--max-offsets-per-trigger", type=int, default=None, help="messages per micro-batch"
    )
    parser.add_argument(
        "--trigger-interval", default=None, help='micro-batch interval, e.g. "1 second"'
    )
    parser.add_argument(
        "--early-alerts-max-messages",
        type=int,
        default=None,
        help="micro-batches of at most this many messages send their alerts before their "
        "ledger is written (0: never)",
    )
    parser.add_argument(
        "--watermark-delay", default=None, help='KPI lateness allowance, e.g. "10 minutes"'
    )
    parser.add_argument(
        "--no-dagster-home",
        dest="dagster_home",
        action="store_false",
        help="record the run in a throwaway Dagster instance even if $DAGSTER_HOME is set",
    )
    parser.set_defaults(handler=run_stream)


def op_config(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ScoringStreamConfig`` of the flags that were given (the rest keep defaults)."""
    config: dict[str, Any] = {"bounded": bool(args.bounded)}
    if getattr(args, "realtime", False):
        config["alert_delivery"] = REALTIME
    flags = ("max_offsets_per_trigger", "early_alerts_max_messages", "trigger_interval")
    for flag in (*flags, "watermark_delay"):
        value = getattr(args, flag)
        if value is not None:
            config[flag] = value
    return config


def operator_error_in(error: BaseException) -> BaseException | None:
    """The operator-fixable error that caused ``error``, if any.

    Dagster wraps what an op raises (``DagsterExecutionStepExecutionError.user_exception``,
    ``__cause__``); follow every link, guarding against cycles.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OPERATOR_ERRORS):
            return current
        pending += [
            getattr(current, "user_exception", None),
            current.__cause__,
            current.__context__,
        ]
    return None


def _instance(use_dagster_home: bool) -> dg.DagsterInstance:
    if use_dagster_home and os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def run_stream(args: argparse.Namespace) -> int:
    """CLI handler: execute ``scoring_stream`` in-process; map operator errors to exit 2."""
    from fraud_assets.definitions import load_definitions
    from fraud_assets.defs.resources import build_resources

    # --home is the default of FRAUD_HOME; resources read the environment, nothing else does.
    os.environ.setdefault("FRAUD_HOME", str(Path(args.home).resolve()))
    # Until the run starts (Dagster then installs its own handlers), SIGTERM acts as Ctrl-C.
    stop_on_signals()
    job = load_definitions().get_job_def(JOB_NAME)
    run_config: dict[str, Any] = {"ops": {OP_NAME: {"config": op_config(args)}}}
    if not args.verbose:
        # Dagster's console logger prints a failed step with its stack trace; an operator
        # error is one line (printed by fraud_assets.cli), the batch log comes from logging.
        run_config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    try:
        with _instance(args.dagster_home) as instance:
            result = job.execute_in_process(
                run_config=run_config, resources=build_resources(), instance=instance
            )
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        # The op stopped its queries (at a micro-batch boundary) before this propagated.
        return _interrupted()
    except Exception as error:
        cause = operator_error_in(error)
        if cause is not None:
            raise OperatorError(str(cause)) from error
        raise
    summary = result.output_for_node(OP_NAME)
    print(
        f"scoring stream stopped: {summary['batches']} micro-batches, {summary['scored']:,} "
        f"scored, {summary['alerts']:,} alerts, {summary['invalid']:,} rejected "
        f"(model {summary['model_version']}, threshold {summary['threshold']}, "
        f"{summary['alert_delivery']} alert delivery)"
    )
    return 0


def _interrupted() -> int:
    print("fraud-assets stream: stopped by a signal (queries stopped)", file=sys.stderr)
    return EXIT_INTERRUPTED
