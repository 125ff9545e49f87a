"""The outputs of a micro-batch: Parquet partitions committed once, Kafka records at least once.

A micro-batch may run more than once (Spark replays the last uncommitted batch after a
crash, with the same id and offsets). Its Parquet outputs are exactly-once by
:func:`commit_batch_partition` (written aside, renamed into place, skipped when already
there); its Kafka records are produced from committed Parquet, so a replay re-sends
identical keyed records that consumers de-duplicate.
"""

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pyspark import InheritableThread
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from fraud_assets.core.settings import KafkaSettings


def commit_batch_partition(df: DataFrame, table_dir: Path, batch_id: int) -> tuple[Path, bool]:
    """Write ``df`` as ``table_dir/batch_id=N`` exactly once.

    Returns the partition folder and whether it already existed (a replayed batch). The
    data is written to ``table_dir/_staging`` (ignored by Parquet readers) and renamed into
    place, so the folder either holds the whole batch or does not exist.
    """
    final = table_dir / f"batch_id={batch_id}"
    if final.exists():
        return final, True
    staging = table_dir / "_staging" / f"batch_id={batch_id}-{uuid.uuid4().hex}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    df.write.mode("errorifexists").parquet(str(staging))
    os.replace(staging, final)
    return final, False


def clear_staging(table_dir: Path) -> None:
    """Remove leftovers of interrupted batch writes (never committed data, never checkpoints)."""
    staging = table_dir / "_staging"
    if staging.is_dir():
        shutil.rmtree(staging)


def write_kafka(
    df: DataFrame,
    kafka: KafkaSettings,
    topic: str | None = None,
    producer_options: dict[str, str] | None = None,
) -> None:
    """Produce ``key``/``value`` rows to ``topic`` (Kafka's batch writer, at-least-once).

    Without ``topic``, each row names its own in a ``topic`` column: one Spark job produces
    to several topics. ``producer_options`` are more ``kafka.``-prefixed settings of Spark's
    Kafka producer.
    """
    writer = (
        df.write.format("kafka")
        .options(**kafka.spark_options())
        .options(**(producer_options or {}))
    )
    if topic is not None:
        writer = writer.option("topic", topic)
    writer.save()


def run_concurrently(steps: dict[str, Callable[[], object]]) -> dict[str, int]:
    """Run independent output steps at once; their wall milliseconds, once all are done.

    Each step is a Spark job (or two) on a few rows, whose time is mostly scheduling: run
    one after the other, a micro-batch pays each in full. Each runs in a thread that inherits
    the caller's Spark job properties (so stopping the query cancels them too). The first
    failure is raised after every step has ended; nothing is left running.
    """
    elapsed: dict[str, int] = {}
    errors: list[BaseException] = []

    def timed(name: str, step: Callable[[], object]) -> None:
        started = time.monotonic()
        try:
            step()
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)
        finally:
            elapsed[name] = int((time.monotonic() - started) * 1000)

    threads = [InheritableThread(target=timed, args=(n, s)) for n, s in steps.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return elapsed


def read_batch_partition(
    spark: SparkSession, table_dir: Path, batch_id: int, schema: StructType
) -> DataFrame:
    """The committed partition ``table_dir/batch_id=N``, with its ``batch_id`` column.

    ``schema`` is the table's (``batch_id`` last). Only this folder is listed, and
    ``batch_id`` is its partition value, not a literal in the plan: the derived outputs of
    every batch run the same generated code.
    """
    return (
        spark.read.schema(schema)
        .option("basePath", str(table_dir))
        .parquet(str(table_dir / f"batch_id={batch_id}"))
    )
