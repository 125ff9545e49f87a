"""The live stream over time: its health per micro-batch and its KPI windows, as frames.

The scoring query's progress reports (Spark's ``StreamingQueryProgress``, one per
micro-batch, and one every few seconds while idle) become one row each
(:data:`HEALTH_COLUMNS`); :class:`HealthHistory` keeps the newest of them for the plots the
Dagster UI shows (:mod:`fraud_assets.core.plots`).
"""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as pads
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fraud_assets.core.contracts import KPI_SCHEMA

HEALTH_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "batch_id",
    "num_input_rows",
    "input_rows_per_second",
    "processed_rows_per_second",
    "kafka_lag",
    "batch_duration_ms",
)
"""One micro-batch of the scoring query: when, how much, how fast, how far behind Kafka."""


def _as_dict(progress: Any) -> dict[str, Any]:
    """A progress report as plain JSON data (PySpark gives dict-like objects with ``json``)."""
    text = getattr(progress, "json", None)
    if isinstance(text, str):
        return json.loads(text)
    return json.loads(json.dumps(progress, default=str))


def _offsets(value: Any) -> dict[str, dict[str, int]]:
    if isinstance(value, str):
        value = json.loads(value)
    return value or {}


def offsets_behind(source: dict[str, Any]) -> int | None:
    """Messages available when the batch was planned that it did not read (its source's lag).

    ``latestOffset`` is what Kafka held at planning time, ``endOffset`` where the batch
    stopped reading; None when the report has neither.
    """
    latest, end = _offsets(source.get("latestOffset")), _offsets(source.get("endOffset"))
    if not latest or not end:
        return None
    behind = 0
    for topic, partitions in latest.items():
        read = end.get(topic, {})
        for partition, offset in partitions.items():
            behind += max(0, int(offset) - int(read.get(partition, 0)))
    return behind


def health_row(progress: Any) -> dict[str, Any]:
    """One :data:`HEALTH_COLUMNS` row of a progress report."""
    data = _as_dict(progress)
    sources = data.get("sources") or [{}]
    return {
        "timestamp": pd.Timestamp(data["timestamp"]),
        "batch_id": int(data.get("batchId", -1)),
        "num_input_rows": int(data.get("numInputRows") or 0),
        "input_rows_per_second": float(data.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_second": float(data.get("processedRowsPerSecond") or 0.0),
        "kafka_lag": offsets_behind(sources[0]),
        "batch_duration_ms": int((data.get("durationMs") or {}).get("triggerExecution", 0)),
    }


class HealthHistory:
    """The newest ``keep`` progress rows of a query, each report once (by its timestamp)."""

    def __init__(self, keep: int = 720) -> None:
        self.keep = keep
        self._rows: dict[pd.Timestamp, dict[str, Any]] = {}

    def add(self, progresses: Iterable[Any]) -> None:
        """Add reports (``query.recentProgress``); ones already seen are skipped."""
        for progress in progresses:
            row = health_row(progress)
            self._rows[row["timestamp"]] = row
        for stamp in sorted(self._rows)[: max(0, len(self._rows) - self.keep)]:
            del self._rows[stamp]

    def frame(self) -> pd.DataFrame:
        """The rows, oldest first."""
        rows = [self._rows[stamp] for stamp in sorted(self._rows)]
        return pd.DataFrame(rows, columns=list(HEALTH_COLUMNS))


def kpi_history(spark: SparkSession, kpi_table: Path, newest: int = 360) -> pd.DataFrame:
    """The newest ``newest`` KPI windows, oldest first (an empty frame before the first)."""
    if not Path(kpi_table).exists():
        return pd.DataFrame(columns=KPI_SCHEMA.fieldNames())
    kpis = spark.read.schema(KPI_SCHEMA).parquet(str(kpi_table))
    recent = kpis.orderBy(F.col("window_start").desc()).limit(newest).toPandas()
    return recent.sort_values("window_start").reset_index(drop=True)


def parquet_rows(table: Path) -> int:
    """Rows of a Parquet table folder, from its files' footers (0 before it exists).

    No Spark job: the stream's reports count its tables while its queries run. Files and
    folders whose names start with ``_`` or ``.`` are skipped, as Spark skips them.
    """
    if not Path(table).is_dir() or not any(Path(table).iterdir()):
        return 0
    return pads.dataset(str(table), format="parquet").count_rows()
