"""Parquet tables written whole or not at all."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fraud_assets.core.tables import read_table, write_arrow_parquet_atomic, write_parquet_atomic

ID_SCHEMA = T.StructType([T.StructField("id", T.LongType())])


def _ids(spark, path) -> list[int]:
    return sorted(row[0] for row in read_table(spark, path, ID_SCHEMA).collect())


def test_first_write_creates_missing_parent_folders(spark, tmp_path):
    table = tmp_path / "tables" / "nested" / "ids"
    write_parquet_atomic(spark.range(3), table)
    assert _ids(spark, table) == [0, 1, 2]


def test_a_write_replaces_the_table_and_leaves_no_staging_or_retired_folder(spark, tmp_path):
    table = tmp_path / "ids"
    write_parquet_atomic(spark.range(5), table)
    write_parquet_atomic(spark.range(10, 12), table)
    assert _ids(spark, table) == [10, 11]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids"]


def test_a_failing_write_leaves_the_previous_table_intact(spark, tmp_path):
    table = tmp_path / "ids"
    write_parquet_atomic(spark.range(4), table)
    before = sorted(p.name for p in table.iterdir())
    # Fails while Spark evaluates rows, i.e. after the write has started.
    failing = spark.range(3).select(
        F.when(F.col("id") < 1, F.col("id")).otherwise(F.raise_error(F.lit("boom"))).alias("id")
    )
    with pytest.raises(Exception, match="boom"):
        write_parquet_atomic(failing, table)
    assert _ids(spark, table) == [0, 1, 2, 3]
    assert sorted(p.name for p in table.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids"]


def test_reading_a_table_never_written_says_what_to_do(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize the asset"):
        read_table(spark, tmp_path / "absent", ID_SCHEMA)


def test_an_arrow_write_replaces_the_table_in_row_groups_spark_reads(spark, tmp_path):
    table = tmp_path / "ids"
    write_parquet_atomic(spark.range(5), table)
    write_arrow_parquet_atomic(pa.table({"id": pa.array(range(70_000), pa.int64())}), table)
    assert _ids(spark, table) == list(range(70_000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids"]
    # Several row groups: Spark can split the one file between its cores.
    assert pq.ParquetFile(table / "part-00000.parquet").num_row_groups == 3


def test_a_failing_arrow_write_leaves_the_previous_table_intact(spark, tmp_path):
    table = tmp_path / "ids"
    write_parquet_atomic(spark.range(4), table)
    before = sorted(p.name for p in table.iterdir())
    # Fails inside the write, after the staging folder exists.
    with pytest.raises(AttributeError):
        write_arrow_parquet_atomic("not an Arrow table", table)
    assert _ids(spark, table) == [0, 1, 2, 3]
    assert sorted(p.name for p in table.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids"]
