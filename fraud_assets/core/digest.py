"""What the alerts say so far: a digest for people, and an audit of the two alert sinks.

The digest reads the Parquet alerts table (exactly-once per micro-batch) with pyarrow: it is
small, and a digest run needs no Spark session. The audit
compares its distinct transaction ids with those in the Kafka ``fraud_alerts`` topic
(at-least-once). A batch is committed to Parquet first and produced to Kafka second, and
its batch log is written last: ids of a Parquet partition without a batch log may still be
on their way to Kafka, so the audit counts them as in flight rather than missing while the
partition is recent.
"""

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from fraud_assets.core.contracts import ALERTS_TABLE_SCHEMA

DIGEST_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "event_time",
    "Amount",
    "Class",
    "fraud_prob",
    "model_version",
    "scored_at",
    "top_features",
    "batch_id",
)
"""The alert columns shown in the digest tables (``top_features`` as readable text)."""

_BATCH_DIR = re.compile(r"^batch_id=(\d+)$")


@dataclass(frozen=True)
class AlertDigest:
    """The alerts table summarised: counts, precision so far and two short tables."""

    alerts: int
    """Alert rows in the table."""
    distinct_transactions: int
    labelled: int
    """Alerts whose transaction carries a label (``Class`` not null)."""
    true_frauds: int
    """Labelled alerts with ``Class == 1``."""
    precision_so_far: float | None
    """``true_frauds / labelled``; None while no alert is labelled."""
    latest_scored_at: str | None
    by_model_version: dict[str, int]
    latest: pd.DataFrame
    """The most recently scored alerts, newest first."""
    largest: pd.DataFrame
    """The alerts with the largest amounts, largest first."""


def read_alerts(spark: SparkSession, alerts_table: Path) -> DataFrame | None:
    """The Parquet alerts table with its contract schema, or None before the first batch."""
    if not alerts_table.exists() or not any(_batch_dirs(alerts_table)):
        return None
    return spark.read.schema(ALERTS_TABLE_SCHEMA).parquet(str(alerts_table))


def _nullable(data_type: pa.DataType) -> pa.DataType:
    """``data_type`` with every nested field nullable, as Spark writes Parquet."""
    if pa.types.is_list(data_type):
        item = data_type.value_field
        return pa.list_(pa.field(item.name, _nullable(item.type)))
    if pa.types.is_struct(data_type):
        return pa.struct([pa.field(f.name, _nullable(f.type)) for f in data_type])
    return data_type


def arrow_schema(table_schema: T.StructType) -> pa.Schema:
    """A table's Spark contract as an Arrow schema, every field nullable as Parquet has it.

    Columns an old partition lacks are read as null.
    """
    return pa.schema(
        [pa.field(f.name, _nullable(f.type)) for f in to_arrow_schema(table_schema, timezone="UTC")]
    )


def read_batch_table_frame(
    table: Path, table_schema: T.StructType, columns: list[str]
) -> pd.DataFrame | None:
    """``columns`` of a table partitioned by micro-batch as pandas; None before its first batch.

    Read with pyarrow, not Spark: the digest of a table of alerts (a few hundred rows a day)
    takes milliseconds this way, where starting a Spark session for it took 15-30 s of the
    digest run (``docs/operations.md``, live system). Timestamps are UTC, tz-naive, as
    Spark's ``toPandas`` gives them with the session time zone UTC.
    """
    if not table.exists() or not any(_batch_dirs(table)):
        return None
    dataset = pads.dataset(
        str(table), format="parquet", partitioning="hive", schema=arrow_schema(table_schema)
    )
    frame = dataset.to_table(columns=columns).to_pandas()
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame


def read_alerts_frame(alerts_table: Path, columns: list[str]) -> pd.DataFrame | None:
    """``columns`` of the Parquet alerts table as pandas, or None before the first batch."""
    return read_batch_table_frame(alerts_table, ALERTS_TABLE_SCHEMA, columns)


def alert_digest(alerts_table: Path, top: int = 10) -> AlertDigest:
    """Summarise the alerts table (an empty digest when it does not exist yet)."""
    table = read_alerts_frame(alerts_table, list(DIGEST_COLUMNS))
    if table is None:
        empty = pd.DataFrame(columns=list(DIGEST_COLUMNS))
        return AlertDigest(0, 0, 0, 0, None, None, {}, empty, empty)
    shown = table.assign(top_features=table["top_features"].map(top_features_text))
    latest = shown.sort_values(
        ["scored_at", "transaction_id"], ascending=[False, False], kind="mergesort"
    ).head(top)
    # Largest amounts first, unknown amounts last, ties by transaction id.
    largest = shown.sort_values(
        ["Amount", "transaction_id"], ascending=[False, True], na_position="last", kind="mergesort"
    ).head(top)
    labelled = int(table["Class"].notna().sum())
    true_frauds = int((table["Class"] == 1).sum())
    latest_scored_at = table["scored_at"].max()
    return AlertDigest(
        alerts=len(table),
        distinct_transactions=int(table["transaction_id"].nunique()),
        labelled=labelled,
        true_frauds=true_frauds,
        precision_so_far=true_frauds / labelled if labelled else None,
        latest_scored_at=latest_scored_at.isoformat() if pd.notna(latest_scored_at) else None,
        by_model_version={
            str(version): int(count)
            for version, count in table["model_version"].value_counts(sort=False).items()
        },
        latest=latest.reset_index(drop=True),
        largest=largest.reset_index(drop=True),
    )


def top_features_text(features: Sequence[Mapping] | None) -> str | None:
    """An alert's explanation as one line, ``V14 (+2.31), V4 (+1.02)``; None when absent."""
    if features is None:
        return None
    return ", ".join(f"{item['feature']} ({item['contribution']:+.2f})" for item in features)


def _batch_dirs(table: Path) -> list[tuple[int, Path]]:
    if not table.is_dir():
        return []
    found = []
    for child in table.iterdir():
        match = _BATCH_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def in_flight_batches(
    alerts_table: Path, batch_log_dir: Path, grace_seconds: float, now: float | None = None
) -> list[int]:
    """Committed alert partitions that may not have reached Kafka yet.

    A partition is in flight when its batch log does not exist yet and it was committed
    less than ``grace_seconds`` ago; an older one without a log is a batch whose Kafka
    write never finished (the stream stopped and was not restarted), so it is not excused.
    """
    now = time.time() if now is None else now
    return [
        batch_id
        for batch_id, folder in _batch_dirs(alerts_table)
        if not (batch_log_dir / f"batch-{batch_id:012d}.json").is_file()
        and now - folder.stat().st_mtime < grace_seconds
    ]


def alert_ids_in_batches(spark: SparkSession, alerts_table: Path, batch_ids: list[int]) -> set[str]:
    """Distinct ``transaction_id`` values of the given alert partitions."""
    table = read_alerts(spark, alerts_table)
    if table is None or not batch_ids:
        return set()
    rows = table.where(F.col("batch_id").isin(batch_ids)).select("transaction_id").distinct()
    return {row[0] for row in rows.collect()}


@dataclass(frozen=True)
class SinkAudit:
    """The Parquet alerts table against the Kafka ``fraud_alerts`` topic, as id sets."""

    parquet_rows: int
    parquet_distinct: int
    kafka_records: int
    kafka_distinct: int
    malformed_kafka_records: int
    """Records that are not contract alerts keyed by their ``transaction_id``."""
    missing_from_kafka: list[str]
    """Ids in Parquet, absent from Kafka and not in flight (a lost Kafka write)."""
    in_flight: list[str]
    """Ids in Parquet, absent from Kafka, in a batch that may still be producing."""
    kafka_only: list[str]
    """Ids in Kafka, absent from Parquet (older runs, or a table moved aside)."""

    @property
    def kafka_complete(self) -> bool:
        """Every committed alert reached Kafka, and Kafka holds only contract alerts."""
        return not self.missing_from_kafka and not self.malformed_kafka_records

    @property
    def parquet_complete(self) -> bool:
        """Every alert in Kafka is also in the Parquet table."""
        return not self.kafka_only


def audit_alert_sinks(
    parquet_ids: list[str],
    kafka_ids: list[str],
    in_flight_ids: set[str] | None = None,
    malformed_kafka_records: int = 0,
) -> SinkAudit:
    """Compare the two sinks' distinct ids; ``in_flight_ids`` excuses Parquet-only ids."""
    parquet, kafka = set(parquet_ids), set(kafka_ids)
    parquet_only = parquet - kafka
    in_flight = parquet_only & (in_flight_ids or set())
    return SinkAudit(
        parquet_rows=len(parquet_ids),
        parquet_distinct=len(parquet),
        kafka_records=len(kafka_ids),
        kafka_distinct=len(kafka),
        malformed_kafka_records=malformed_kafka_records,
        missing_from_kafka=sorted(parquet_only - in_flight),
        in_flight=sorted(in_flight),
        kafka_only=sorted(kafka - parquet),
    )
