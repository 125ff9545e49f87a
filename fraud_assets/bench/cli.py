"""``fraud-assets bench``: the performance benchmark (see ``docs/performance.md``)."""

import argparse
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from fraud_assets.core.paths import ProjectPaths
from fraud_assets.core.registry import write_json_atomic
from fraud_assets.interrupts import stop_on_signals

log = logging.getLogger(__name__)

SMOKE_SUBSET_ROWS = 20_000
THROUGHPUT_PIPELINES = (
    "production",
    "production_shadow",
    "plain_python_fast",
    "reference_style",
    "plain_python",
)
LATENCY_PIPELINES = (
    "production",
    "bare_microbatch",
    "reference_style",
    "plain_python",
    "production_realtime",
    "bare_realtime",
)


def run(args: argparse.Namespace) -> int:
    """CLI handler: run the benchmark, write ``report.json`` and ``plan.txt``."""
    from fraud_assets.bench.runner import BenchConfig, run_bench
    from fraud_assets.cli import OperatorError
    from fraud_assets.core.spark import SparkSetupError
    from fraud_assets.core.stream import StreamSettings
    from fraud_assets.kafka.broker import BrokerStartError
    from fraud_assets.setup.dataset import DatasetError, check_header

    # `kill PID` must clean up like Ctrl-C: stop the queries, Spark and the broker we started.
    stop_on_signals()
    paths = ProjectPaths.at(args.home)
    out_dir = Path(args.out).resolve() if args.out else paths.var / "bench"
    run_dir = out_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    stream = StreamSettings()
    stream = replace(
        stream,
        trigger_interval=args.trigger or stream.trigger_interval,
        max_offsets_per_trigger=args.max_offsets or stream.max_offsets_per_trigger,
    )
    config = BenchConfig(
        home=paths.home,
        run_dir=run_dir,
        dataset_csv=paths.dataset_csv,
        stream=stream,
        transactions_partitions=args.partitions,
    )
    if args.shuffle_partitions:
        config = replace(config, shuffle_partitions=args.shuffle_partitions)
    if args.realtime_interval:
        config = replace(config, realtime_checkpoint_interval=args.realtime_interval)
    if args.smoke:
        config = replace(
            config,
            smoke=True,
            subset_rows=SMOKE_SUBSET_ROWS,
            # Several micro-batches, so the sustained (warm) rate is measured too.
            stream=replace(config.stream, max_offsets_per_trigger=SMOKE_SUBSET_ROWS // 2),
            min_backlog=2 * SMOKE_SUBSET_ROWS,
            rates=(1000,),
            microbatch_seconds=5.0,
            realtime_seconds=10.0,
            baseline_seconds=5.0,
            warm_up_seconds=2.0,
            fixed_cost_seconds=5.0,
            drain_timeout_s=300.0,
            ladder_warm_up_per_partition=2_000,
        )
    if args.rates:
        config = replace(config, rates=tuple(args.rates))
    if args.seconds:
        config = replace(config, microbatch_seconds=args.seconds, baseline_seconds=args.seconds)
    if args.realtime_seconds:
        config = replace(config, realtime_seconds=args.realtime_seconds)
    if args.backlog:
        config = replace(config, min_backlog=args.backlog)
    if args.pipelines:
        config = replace(
            config,
            pipelines=tuple(p for p in args.pipelines if p in THROUGHPUT_PIPELINES),
            latency_pipelines=tuple(p for p in args.pipelines if p in LATENCY_PIPELINES),
        )
    try:
        check_header(config.dataset_csv)
        run_dir.mkdir(parents=True)
        report = run_bench(config)
    except (DatasetError, SparkSetupError, BrokerStartError, FileNotFoundError) as error:
        raise OperatorError(str(error)) from error
    report["run_dir"] = str(run_dir)
    for folder in (run_dir, out_dir):
        write_json_atomic(folder / "report.json", report)
    (out_dir / "plan.txt").write_text((run_dir / "plan.txt").read_text())
    keys = ("throughput_tps", "floor_ratio", "ratio_vs_reference_style", "ratio_vs_plain_python")
    keys += ("ratio_vs_plain_python_fast", "microbatch_fixed_ms", "latency_ms")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    for name, goal in report["goals"].items():
        met = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
        print(f"  goal {name}: {goal['value']} (goal {goal['goal']}): {met}")
    print(f"report: {out_dir / 'report.json'}  plan: {out_dir / 'plan.txt'}")
    exact = all(c.get("exact") for c in report["correctness"].values())
    exact = exact and report["cost_ladder_exact"]
    return 0 if exact else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the CLI."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark throughput and latency of the scoring pipelines on the real dataset",
    )
    parser.add_argument("--smoke", action="store_true", help="small subset, one rate, 5 s")
    parser.add_argument("--out", default=None, help="output folder (default: var/bench)")
    parser.add_argument("--rates", type=int, nargs="+", help="offered tx/s of latency runs")
    parser.add_argument(
        "--seconds", type=float, help="seconds per micro-batch and baseline latency point"
    )
    parser.add_argument(
        "--realtime-seconds", type=float, help="seconds per real-time latency point (>= 120)"
    )
    parser.add_argument(
        "--backlog", type=int, help="at least this many backlog messages (default 1,000,000)"
    )
    parser.add_argument(
        "--pipelines",
        nargs="+",
        choices=sorted({*THROUGHPUT_PIPELINES, *LATENCY_PIPELINES}),
        help="only these pipelines (throughput and latency alike)",
    )
    parser.add_argument("--trigger", help="production micro-batch interval, e.g. '500 ms'")
    parser.add_argument("--max-offsets", type=int, help="production maxOffsetsPerTrigger")
    parser.add_argument("--partitions", type=int, default=2, help="transactions partitions")
    parser.add_argument("--shuffle-partitions", type=int, help="spark.sql.shuffle.partitions")
    parser.add_argument("--realtime-interval", help="real-time mode checkpoint interval")
    parser.set_defaults(handler=run)
