"""The audit: exact duplicates dropped (first kept), identity derived, counts reported."""

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from fraud_assets.core.audit import (
    audit_report,
    audited_transactions,
    filter_exact_duplicates,
    raw_transactions,
    read_source_csv,
    write_raw_transactions,
)
from fraud_assets.core.contracts import (
    AUDITED_TRANSACTIONS_SCHEMA,
    EVENT_TIME_BASE_EPOCH_SECONDS,
    PCA_COLUMNS,
    RAW_TRANSACTIONS_SCHEMA,
    SOURCE_COLUMNS,
    field_names,
)
from fraud_assets.core.tables import read_table
from fraud_assets_tests.factories import raw_transactions_df, source_row, write_source_csv


def _with_index(row: dict, row_index: int) -> dict:
    """An exact copy of ``row`` found again at another place in the file."""
    return {**row, "row_index": row_index}


@pytest.fixture(scope="module")
def raw_rows() -> list[dict]:
    """Rows 0..6 of a file with exact duplicates, a near-duplicate, a null and frauds.

    0 A, 1 B (fraud), 2 = A, 3 = A but Amount +0.01, 4 = B, 5 C (fractional Time),
    6 D (V2 null), 7 = D (exact duplicates with a null compare equal).
    """
    a = source_row(0, Time=0.0)
    b = source_row(1, Time=406.0, Class=1)
    c = source_row(5, Time=406.25)
    d = source_row(6, Time=172792.0, V2=None)
    return [
        a,
        b,
        _with_index(a, 2),
        {**_with_index(a, 3), "Amount": a["Amount"] + 0.01},
        _with_index(b, 4),
        c,
        d,
        _with_index(d, 7),
    ]


@pytest.fixture(scope="module")
def raw(spark, raw_rows):
    # Reversed, so "first occurrence" can only mean lowest row_index, not DataFrame order.
    return raw_transactions_df(spark, list(reversed(raw_rows))).cache()


@pytest.fixture(scope="module")
def audited(raw):
    return audited_transactions(raw).cache()


def test_exact_duplicates_keep_the_lowest_row_index_and_near_duplicates_stay(raw):
    kept = sorted(row["row_index"] for row in filter_exact_duplicates(raw).collect())
    assert kept == [0, 1, 3, 5, 6]


def test_kept_rows_carry_their_original_values(raw, raw_rows):
    by_index = {row["row_index"]: row.asDict() for row in filter_exact_duplicates(raw).collect()}
    for row_index in (0, 3, 6):
        expected = next(row for row in raw_rows if row["row_index"] == row_index)
        assert {name: by_index[row_index][name] for name in SOURCE_COLUMNS} == {
            name: expected[name] for name in SOURCE_COLUMNS
        }


def test_audited_schema_is_the_contract_in_order(audited):
    assert audited.columns == field_names(AUDITED_TRANSACTIONS_SCHEMA)
    assert [f.dataType for f in audited.schema.fields] == [
        f.dataType for f in AUDITED_TRANSACTIONS_SCHEMA.fields
    ]


def test_audited_rows_are_ordered_by_row_index_with_id_equal_to_index(audited):
    rows = audited.select("transaction_id", "row_index").collect()
    assert [row["row_index"] for row in rows] == [0, 1, 3, 5, 6]
    assert [row["transaction_id"] for row in rows] == ["0", "1", "3", "5", "6"]


def test_event_time_is_base_plus_time_seconds_including_fractions(audited):
    rows = audited.select(
        "row_index",
        "Time",
        F.unix_micros("event_time").alias("micros"),
        F.date_format("event_time", "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX").alias("text"),
    ).collect()
    texts = {row["row_index"]: row["text"] for row in rows}
    assert texts == {
        0: "2013-09-01T00:00:00.000000Z",
        1: "2013-09-01T00:06:46.000000Z",
        3: "2013-09-01T00:00:00.000000Z",
        5: "2013-09-01T00:06:46.250000Z",
        6: "2013-09-02T23:59:52.000000Z",
    }
    for row in rows:
        assert row["micros"] == round((EVENT_TIME_BASE_EPOCH_SECONDS + row["Time"]) * 1_000_000)


def test_audit_report_counts(raw, audited):
    report = audit_report(raw, audited)
    assert report.rows == 8
    assert report.distinct_rows == 5
    assert report.duplicate_rows == 3
    assert report.frauds == 2  # row 1 and its exact copy, row 4
    assert report.distinct_frauds == 1
    assert report.fraud_rate == pytest.approx(1 / 5)
    assert report.missing_values == {name: (2 if name == "V2" else 0) for name in SOURCE_COLUMNS}
    assert (report.time_min, report.time_max) == (0.0, 172792.0)
    assert report.as_dict()["duplicate_rows"] == 3


# --- reading the original file --------------------------------------------------------------


@pytest.fixture
def csv_rows() -> list[dict]:
    return [
        source_row(0, Time=0.0),
        source_row(1, Time=2.5, Class=1),
        source_row(2, Time=100000.0),
        source_row(3, Time=172792.0),
    ]


def test_read_source_csv_types_values_and_row_index(tmp_path, csv_rows):
    path = write_source_csv(tmp_path / "creditcard.csv", csv_rows, time_text={2: "1e+05"})
    assert path.read_text().splitlines()[0].startswith('"Time","V1",')
    assert ',"1"' in path.read_text().splitlines()[2]

    table = read_source_csv(path)

    assert table.column_names == ["row_index", *SOURCE_COLUMNS]
    assert table.schema.field("row_index").type == pa.int64()
    assert table.schema.field("Class").type == pa.int32()
    assert all(table.schema.field(n).type == pa.float64() for n in ("Time", *PCA_COLUMNS))
    assert table.schema.field("Amount").type == pa.float64()
    assert table.column("row_index").to_pylist() == [0, 1, 2, 3]
    assert table.column("Time").to_pylist() == [0.0, 2.5, 100000.0, 172792.0]
    assert table.column("Class").to_pylist() == [0, 1, 0, 0]
    for name in (*PCA_COLUMNS, "Amount"):
        assert table.column(name).to_pylist() == [row[name] for row in csv_rows]


def test_raw_transactions_has_the_raw_contract(spark, tmp_path, csv_rows):
    path = write_source_csv(tmp_path / "creditcard.csv", csv_rows, time_text={2: "1e+05"})
    raw = raw_transactions(spark, path)
    assert raw.schema == RAW_TRANSACTIONS_SCHEMA
    rows = raw.orderBy("row_index").collect()
    assert [row.asDict() for row in rows] == csv_rows


def test_the_raw_table_written_by_arrow_is_what_spark_reads_with_the_raw_contract(
    spark, tmp_path, csv_rows
):
    path = write_source_csv(tmp_path / "creditcard.csv", csv_rows, time_text={2: "1e+05"})
    target = tmp_path / "tables" / "raw_transactions"

    assert write_raw_transactions(path, target) == len(csv_rows)

    written = read_table(spark, target, RAW_TRANSACTIONS_SCHEMA)
    rows = [row.asDict() for row in written.orderBy("row_index").collect()]
    assert rows == csv_rows
    # The same rows as the DataFrame the CSV gives through Spark itself.
    through_spark = raw_transactions(spark, path).orderBy("row_index").collect()
    assert rows == [row.asDict() for row in through_spark]
