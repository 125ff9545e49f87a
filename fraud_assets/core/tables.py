"""Parquet tables written whole or not at all."""

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Replace the table folder at ``path`` with what ``write`` puts in a folder it is given.

    ``write`` fills a staging sibling; only a complete write is swapped into place, so
    readers see the old or the new table, never a half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    staging = path.parent / f".{path.name}.staging-{token}"
    retired = path.parent / f".{path.name}.retired-{token}"
    try:
        write(staging)
        if path.exists():
            os.replace(path, retired)
        os.replace(staging, path)
    finally:
        for leftover in (staging, retired):
            if leftover.exists():
                shutil.rmtree(leftover)


def write_parquet_atomic(df: DataFrame, path: Path) -> None:
    """Replace the table at ``path`` with ``df``, written by Spark (:func:`replace_atomically`)."""
    replace_atomically(path, lambda staging: df.write.mode("errorifexists").parquet(str(staging)))


ROW_GROUP_ROWS = 32_768
"""Row groups of an Arrow-written table: Spark splits a file read at row groups, so a table
of one file is still read by every core."""


def write_arrow_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Replace the table at ``path`` with an Arrow table, as one Parquet file (no Spark job).

    For data that is already in the driver's memory: Spark would first ship it to its tasks
    (``createDataFrame``) to write it back out.
    """

    def write(staging: Path) -> None:
        staging.mkdir()
        pq.write_table(table, staging / "part-00000.parquet", row_group_size=ROW_GROUP_ROWS)

    replace_atomically(path, write)


def read_table(spark: SparkSession, path: Path, schema: T.StructType) -> DataFrame:
    """Read a Parquet table with its contract schema, with a clear error when absent."""
    if not path.exists():
        raise FileNotFoundError(
            f"table {path} does not exist yet: materialize the asset that writes it first"
        )
    return spark.read.schema(schema).parquet(str(path))
