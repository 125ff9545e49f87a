"""The ``fraud-assets`` command line (also ``python -m fraud_assets``).

Each area registers its own sub-commands (``register(subparsers)``); a handler returns the
process exit code. Errors that an operator can fix are printed as one clear line, without
a stack trace, and exit non-zero.
"""

import argparse
import sys
from collections.abc import Sequence

# Defined below every subcommand (fraud_assets.errors); named here because the handlers'
# errors are caught here.
from fraud_assets.console import configure_logging
from fraud_assets.errors import OperatorError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every area's sub-commands."""
    from fraud_assets.bench.cli import register as register_bench
    from fraud_assets.chaos.cli import register as register_chaos
    from fraud_assets.demo import register as register_demo
    from fraud_assets.kafka.cli import register as register_kafka
    from fraud_assets.live.cli import register as register_live
    from fraud_assets.modeling.cli import register as register_models
    from fraud_assets.operate.cli import register as register_model
    from fraud_assets.operate.reset import register as register_reset
    from fraud_assets.setup.cli import register as register_setup
    from fraud_assets.stream.cli import register as register_stream

    parser = argparse.ArgumentParser(
        prog="fraud-assets",
        description="Real-time credit-card fraud detection on Kafka, Spark and Dagster.",
    )
    parser.add_argument(
        "--home",
        default=".",
        help="fraud_assets home: holds data/ and var/ (default: the current directory)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, and every library log line and Dagster event that is quiet otherwise",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order of the flow: set up, Kafka, train, operate models, stream, then tooling.
    register_setup(subparsers)
    register_kafka(subparsers)
    register_models(subparsers)
    register_model(subparsers)
    register_stream(subparsers)
    register_reset(subparsers)
    register_demo(subparsers)
    register_live(subparsers)
    register_chaos(subparsers)
    register_bench(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our lines, quiet libraries; --verbose shows everything (fraud_assets.console).
    configure_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except OperatorError as error:
        print(f"fraud-assets {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fraud-assets {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
