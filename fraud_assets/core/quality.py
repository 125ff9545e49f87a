"""Live model quality and KPI freshness, read from the tables the stream committed."""

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fraud_assets.core.contracts import KPI_SCHEMA, LEDGER_TABLE_SCHEMA
from fraud_assets.core.kpis import WINDOW, KpiSettings, final_watermark
from fraud_assets.core.paths import StreamPaths


@dataclass(frozen=True)
class LiveQuality:
    """Precision and recall of the stream's alerts on labelled transactions, and KPI lag."""

    scored: int
    labelled: int
    alerts: int
    tp: int
    fp: int
    fn: int
    precision: float | None
    recall: float | None
    newest_event_time: str | None
    newest_kpi_window_end: str | None
    kpi_event_lag_seconds: float | None
    """Event time between the newest window the watermark could close and the newest one
    the KPI table holds (0 when caught up, None when windows are due but none exists)."""
    kpi_commit_lag_seconds: float | None
    """Seconds between the newest ledger batch folder and the newest KPI batch folder."""

    def as_dict(self) -> dict:
        return asdict(self)


def _newest_batch_mtime(table: Path) -> float | None:
    folders = [p for p in table.glob("batch_id=*") if p.is_dir()] if table.is_dir() else []
    return max((p.stat().st_mtime for p in folders), default=None)


def live_quality(
    spark: SparkSession, paths: StreamPaths, watermark_delay: str = KpiSettings.watermark_delay
) -> LiveQuality:
    """Measure what the stream did so far (labelled rows only count for precision/recall)."""
    if not paths.ledger_table.is_dir():
        raise FileNotFoundError(
            f"{paths.ledger_table} does not exist: run the scoring_stream job first"
        )
    ledger = spark.read.schema(LEDGER_TABLE_SCHEMA).parquet(str(paths.ledger_table))
    scored = ledger.where(F.col("reason").isNull())
    label = F.col("Class") == 1
    alert = F.col("is_alert")
    row = (
        scored.agg(
            F.count(F.lit(1)).alias("scored"),
            F.count_if(F.col("Class").isNotNull()).alias("labelled"),
            F.count_if(alert).alias("alerts"),
            F.count_if(alert & label).alias("tp"),
            F.count_if(alert & (F.col("Class") == 0)).alias("fp"),
            F.count_if(~alert & label).alias("fn"),
            F.max("event_time").alias("newest_event_time"),
        )
        .toPandas()
        .iloc[0]
    )
    tp, fp, fn = int(row["tp"]), int(row["fp"]), int(row["fn"])
    newest_event = row["newest_event_time"]
    newest_kpi = None
    if paths.kpi_table.is_dir():
        kpis = spark.read.schema(KPI_SCHEMA).parquet(str(paths.kpi_table))
        newest_kpi = kpis.agg(F.max("window_end").alias("w")).toPandas()["w"][0]
    # The newest window the watermark allows to be closed, among windows that hold events:
    # data can be sparse, so "newest event minus watermark" alone would overstate the lag.
    closable = (
        scored.select(F.window("event_time", WINDOW).end.alias("end"))
        .where(F.col("end") <= F.lit(final_watermark(newest_event, watermark_delay)))
        .agg(F.max("end").alias("end"))
        .toPandas()["end"][0]
        if not pd.isna(newest_event)
        else None
    )
    if closable is None or pd.isna(closable):
        event_lag = 0.0  # no window can be closed yet: nothing to lag behind
    elif newest_kpi is None or pd.isna(newest_kpi):
        event_lag = None  # windows are due but none was emitted
    else:
        event_lag = max(0.0, (closable - newest_kpi).total_seconds())
    scored_mtime, kpi_mtime = (
        _newest_batch_mtime(paths.ledger_table),
        _newest_batch_mtime(paths.kpi_table),
    )
    return LiveQuality(
        scored=int(row["scored"]),
        labelled=int(row["labelled"]),
        alerts=int(row["alerts"]),
        tp=tp,
        fp=fp,
        fn=fn,
        precision=tp / (tp + fp) if tp + fp else None,
        recall=tp / (tp + fn) if tp + fn else None,
        newest_event_time=None if pd.isna(newest_event) else str(newest_event),
        newest_kpi_window_end=None
        if newest_kpi is None or pd.isna(newest_kpi)
        else str(newest_kpi),
        kpi_event_lag_seconds=event_lag,
        kpi_commit_lag_seconds=(
            max(0.0, scored_mtime - kpi_mtime) if scored_mtime and kpi_mtime else None
        ),
    )
