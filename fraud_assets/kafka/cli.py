# ruff: noqa: T201 - the handlers of a command line report to the operator with print.
"""``fraud-assets kafka start|stop|status`` and ``fraud-assets produce``.

The embedded broker keeps its state in ``<home>/var/kafka`` and runs from the jars in
``<home>/var/jars/kafka-broker``. ``start`` detaches by default (the broker outlives the
command; ``stop`` ends it); ``--foreground`` keeps it attached until Ctrl-C or SIGTERM.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from fraud_assets.core.paths import ProjectPaths
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.errors import OperatorError
from fraud_assets.interrupts import stop_on_signals, stop_signals_ignored
from fraud_assets.kafka.admin import (
    BrokerUnreachableError,
    TopicError,
    ensure_topics,
    project_topics,
)
from fraud_assets.kafka.broker import BrokerSettings, BrokerStartError, EmbeddedKafka
from fraud_assets.kafka.producer import ReplayResult

EXIT_NOT_RUNNING = 3
BOOTSTRAP_SERVERS_ENV = "FRAUD_KAFKA_BOOTSTRAP_SERVERS"
AUDITED_TABLE_NAME = "audited_transactions"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kafka {start,stop,status}`` and ``produce`` to the ``fraud-assets`` parser."""
    kafka = subparsers.add_parser("kafka", help="run the embedded single-node Kafka broker")
    actions = kafka.add_subparsers(dest="kafka_command", required=True, metavar="ACTION")

    start = actions.add_parser("start", help="start the broker and create the project topics")
    start.add_argument("--port", type=int, default=9092, help="client port (default: 9092)")
    start.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="KRaft controller port (default: port + 1 if free)",
    )
    start.add_argument("--heap", default="512m", help="JVM heap (default: 512m)")
    start.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached; Ctrl-C or SIGTERM stops the broker",
    )
    start.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for readiness (default: 90)"
    )
    start.set_defaults(handler=start_command)

    stop = actions.add_parser("stop", help="stop the broker started from this home")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    stop.set_defaults(handler=stop_command)

    status = actions.add_parser(
        "status", help="print the broker status as JSON (exit 0 if running, 3 if not)"
    )
    status.set_defaults(handler=status_command)

    produce = subparsers.add_parser(
        "produce", help="replay the audited transactions into the transactions topic"
    )
    produce.add_argument(
        "--bootstrap-servers",
        default=None,
        help=f"Kafka to write to (default: ${BOOTSTRAP_SERVERS_ENV}, else the embedded broker "
        "of this home, else 127.0.0.1:9092)",
    )
    produce.add_argument("--topic", default=None, help="destination (default: transactions)")
    produce.add_argument("--limit", type=int, default=None, help="send only the first N rows")
    produce.add_argument(
        "--rate", type=float, default=0.0, help="transactions per second (default: 0 = max)"
    )
    produce.add_argument("--no-progress", action="store_true", help="no progress bar")
    produce.add_argument(
        "--method",
        choices=("kafka-python", "spark"),
        default="kafka-python",
        help="kafka-python: paced or not, any --limit (default); spark: Spark's Kafka writer, "
        "the whole table as fast as the broker takes it (what `make demo` uses)",
    )
    produce.set_defaults(handler=produce_command)


def broker_for_home(
    home: str | Path,
    *,
    port: int = 9092,
    controller_port: int | None = None,
    heap: str = "512m",
    tie_to_parent: bool = True,
) -> EmbeddedKafka:
    """The embedded broker whose state lives in ``<home>/var/kafka``."""
    paths = ProjectPaths.at(home)
    settings = BrokerSettings(
        state_dir=paths.kafka_dir,
        jars_dir=paths.kafka_jars_dir,
        port=port,
        controller_port=controller_port,
        heap=heap,
    )
    return EmbeddedKafka(settings, tie_to_parent=tie_to_parent)


def _ensure_project_topics(bootstrap_servers: str) -> list[str]:
    try:
        return ensure_topics(
            bootstrap_servers, project_topics(KafkaSettings(bootstrap_servers=bootstrap_servers))
        )
    except (BrokerUnreachableError, TopicError) as error:
        raise OperatorError(str(error)) from error


def start_command(args: argparse.Namespace) -> int:
    """Start the broker (detached unless ``--foreground``) and create the project topics."""
    # Before the broker exists: a SIGTERM at any later moment then reaches the cleanup below.
    stop_on_signals()
    broker = broker_for_home(
        args.home,
        port=args.port,
        controller_port=args.controller_port,
        heap=args.heap,
        tie_to_parent=args.foreground,
    )
    running = broker.pid()
    if running is not None:
        _ensure_project_topics(broker.bootstrap_servers)
        print(f"Kafka is already running at {broker.bootstrap_servers} (pid {running})")
        return 0
    state_dir = broker.settings.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        broker.start(timeout_s=args.timeout)
    except BrokerStartError as error:
        raise OperatorError(str(error)) from error
    # From here until the return, any way out stops the broker, except a detached start
    # that got as far as its last line.
    detached = False
    try:
        created = _ensure_project_topics(broker.bootstrap_servers)
        print(f"Kafka is running at {broker.bootstrap_servers} (pid {broker.pid()})", flush=True)
        print(f"  state and logs: {state_dir}")
        if created:
            print(f"  created topics: {', '.join(created)}")
        if not args.foreground:
            print("  stop it with: fraud-assets kafka stop")
            detached = True
            return 0
        print("  Ctrl-C stops it.", flush=True)
        code = broker.wait()
        print(f"Kafka exited with code {code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not args.foreground:
            raise
        print("Stopping Kafka...", flush=True)
        return 0
    finally:
        if not detached:
            # A second Ctrl-C during the stop must not orphan the JVM.
            with stop_signals_ignored():
                broker.stop()


def stop_command(args: argparse.Namespace) -> int:
    """Stop the broker of this home (a no-op if none runs)."""
    broker = broker_for_home(args.home)
    pid = broker.pid()
    if broker.stop(timeout_s=args.timeout):
        print(f"Kafka stopped (pid {pid})")
    else:
        print(f"Kafka is not running (state: {broker.settings.state_dir})")
    return 0


def status_command(args: argparse.Namespace) -> int:
    """Print the status JSON; exit 0 if the broker runs, 3 if not."""
    status = broker_for_home(args.home).status()
    print(json.dumps(status, indent=2))
    return 0 if status["running"] else EXIT_NOT_RUNNING


def resolve_bootstrap_servers(args: argparse.Namespace) -> str:
    """``--bootstrap-servers``, else the environment, else this home's broker, else default."""
    if args.bootstrap_servers:
        return str(args.bootstrap_servers)
    from_env = os.environ.get(BOOTSTRAP_SERVERS_ENV)
    if from_env:
        return from_env
    broker = broker_for_home(args.home)
    if broker.is_running():
        return broker.bootstrap_servers
    return KafkaSettings().bootstrap_servers


def _bulk_replay(
    home: str, table: Path, bootstrap_servers: str, topic: str, progress: bool
) -> ReplayResult:
    """The table through Spark's Kafka writer, in a Spark session of this process."""
    from fraud_assets.core.replay import bulk_replay
    from fraud_assets.core.settings import SparkSettings
    from fraud_assets.core.spark import (
        get_spark,
        require_connector_jars,
        stop_spark,
    )

    jars_dir = ProjectPaths.at(home).spark_jars_dir
    require_connector_jars(jars_dir)
    session = get_spark(SparkSettings(connector_jars_dir=jars_dir))
    try:
        return bulk_replay(
            session,
            table,
            KafkaSettings(bootstrap_servers=bootstrap_servers),
            topic,
            progress=progress,
        )
    finally:
        # Closes Spark's cached Kafka producers (they would retry a broker stopped after this
        # command) and waits for the JVM to exit.
        stop_spark()


def produce_command(args: argparse.Namespace) -> int:
    """Replay ``<home>/var/tables/audited_transactions`` into the transactions topic."""
    from fraud_assets.core.spark import SparkSetupError
    from fraud_assets.kafka.producer import ReplayError, replay

    table = ProjectPaths.at(args.home).tables_dir / AUDITED_TABLE_NAME
    if not table.exists():
        raise OperatorError(
            f"{table} does not exist: run the audit first: `make demo` or materialize "
            "audited_transactions in Dagster"
        )
    bootstrap_servers = resolve_bootstrap_servers(args)
    topic = args.topic or KafkaSettings().topics.transactions
    if args.method == "spark" and (args.rate or args.limit is not None):
        raise OperatorError("--method spark sends the whole table unpaced: no --rate, no --limit")
    try:
        if args.method == "spark":
            result = _bulk_replay(args.home, table, bootstrap_servers, topic, not args.no_progress)
        else:
            result = replay(
                table,
                bootstrap_servers,
                topic,
                limit=args.limit,
                rate=args.rate,
                progress=not args.no_progress,
            )
    except (BrokerUnreachableError, ReplayError, SparkSetupError) as error:
        raise OperatorError(str(error)) from error
    print(
        f"Sent {result.sent} transactions to {topic} at {bootstrap_servers} in "
        f"{result.seconds:.1f} s ({result.rate_tps:.0f} tx/s)"
    )
    return 0
