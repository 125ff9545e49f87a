"""Parquet tables written whole or not at all."""

import os
import shutil
import uuid
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T


def write_parquet_atomic(df: DataFrame, path: Path) -> None:
    """Replace the table at ``path`` with ``df``: readers see the old or the new table.

    Spark writes into a staging sibling; only a complete write is swapped into place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    staging = path.parent / f".{path.name}.staging-{token}"
    retired = path.parent / f".{path.name}.retired-{token}"
    try:
        df.write.mode("errorifexists").parquet(str(staging))
        if path.exists():
            os.replace(path, retired)
        os.replace(staging, path)
    finally:
        for leftover in (staging, retired):
            if leftover.exists():
                shutil.rmtree(leftover)


def read_table(spark: SparkSession, path: Path, schema: T.StructType) -> DataFrame:
    """Read a Parquet table with its contract schema, with a clear error when absent."""
    if not path.exists():
        raise FileNotFoundError(
            f"table {path} does not exist yet: materialize the asset that writes it first"
        )
    return spark.read.schema(schema).parquet(str(path))
