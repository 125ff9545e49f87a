"""The stream's health rows, the KPI history and the plots the Dagster UI shows."""

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from matplotlib import image as mpimg

from fraud_assets.core.contracts import KPI_SCHEMA
from fraud_assets.core.monitoring import (
    HEALTH_COLUMNS,
    HealthHistory,
    health_row,
    kpi_history,
    offsets_behind,
    parquet_rows,
)
from fraud_assets.core.plots import kpi_timeseries_png, stream_health_png


def progress(batch: int, second: int, rows: int, latest: dict, end: dict) -> dict:
    """A scoring query progress report, as Spark's JSON has it (offsets as JSON text)."""
    return {
        "timestamp": f"2026-12-02T05:00:{second:02d}.000Z",
        "batchId": batch,
        "numInputRows": rows,
        "inputRowsPerSecond": rows / 2,
        "processedRowsPerSecond": float(rows),
        "durationMs": {"triggerExecution": 400 + batch},
        "sources": [{"latestOffset": str(latest).replace("'", '"'), "endOffset": end}],
    }


def test_lag_is_what_kafka_held_at_planning_minus_what_the_batch_read():
    latest = {"transactions": {"0": 120, "1": 80}}
    assert offsets_behind({"latestOffset": latest, "endOffset": latest}) == 0
    behind = {"transactions": {"0": 100, "1": 75}}
    assert offsets_behind({"latestOffset": latest, "endOffset": behind}) == 25
    assert offsets_behind({"endOffset": behind}) is None


def test_health_rows_keep_each_report_once_and_only_the_newest():
    latest = {"transactions": {"0": 50}}
    reports = [progress(b, b, 10 * b, latest, {"transactions": {"0": 40 + b}}) for b in range(5)]
    history = HealthHistory(keep=3)
    history.add(reports[:4])
    history.add(reports[2:])  # reports 2 and 3 again, as recentProgress repeats them
    frame = history.frame()
    assert list(frame.columns) == list(HEALTH_COLUMNS)
    assert list(frame["batch_id"]) == [2, 3, 4]
    assert list(frame["kafka_lag"]) == [8, 7, 6]
    row = health_row(reports[4])
    assert row["batch_duration_ms"] == 404 and row["processed_rows_per_second"] == 40.0


def kpi_rows(count: int) -> list[dict]:
    start = datetime(2013, 9, 1, tzinfo=UTC)
    rows = []
    for i in range(count):
        alerts, frauds, tp = i % 3, i % 2, min(i % 3, i % 2)
        rows.append(
            {
                "window_start": start + timedelta(minutes=i),
                "window_end": start + timedelta(minutes=i + 1),
                "n_txn": 100,
                "n_alert": alerts,
                "n_fraud_true": frauds,
                "tp": tp,
                "fp": alerts - tp,
                "fn": frauds - tp,
                "precision": tp / alerts if alerts else None,
                "recall": tp / frauds if frauds else None,
                "n_invalid": 0,
            }
        )
    return rows


def test_kpi_history_is_the_newest_windows_oldest_first(spark, tmp_path):
    table = tmp_path / "kpis"
    assert kpi_history(spark, table).empty
    assert parquet_rows(table) == 0
    spark.createDataFrame(kpi_rows(12), KPI_SCHEMA).write.parquet(str(table / "batch_id=0"))
    recent = kpi_history(spark, table, newest=5)
    assert len(recent) == 5
    assert recent["window_start"].is_monotonic_increasing
    assert recent["window_start"].iloc[-1] == pd.Timestamp("2013-09-01T00:11:00")
    assert parquet_rows(table) == 12
    # What Spark skips is not counted: its markers, checksums, and a folder being staged.
    (table / "_SUCCESS").write_bytes(b"")
    spark.createDataFrame(kpi_rows(3), KPI_SCHEMA).write.parquet(str(table / ".staging-1"))
    assert parquet_rows(table) == 12 == spark.read.schema(KPI_SCHEMA).parquet(str(table)).count()


def drawn(png: bytes) -> np.ndarray:
    """The PNG's pixels, checked to be a picture and not a blank canvas."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(io.BytesIO(png))[..., :3]
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 20 and float(pixels.std()) > 0.02
    return pixels


def test_plots_draw_the_windows_and_the_micro_batches():
    kpis = pd.DataFrame(kpi_rows(90))
    with_data = drawn(kpi_timeseries_png(kpis))
    empty = drawn(kpi_timeseries_png(kpis.iloc[0:0]))
    assert with_data.shape == empty.shape
    # The alert bars and the precision/recall lines are coloured: the empty plot has none.
    red = (with_data[..., 0] > 0.7) & (with_data[..., 1] < 0.3) & (with_data[..., 2] < 0.3)
    assert red.sum() > 100
    assert not ((empty[..., 0] > 0.7) & (empty[..., 1] < 0.3) & (empty[..., 2] < 0.3)).any()

    latest = {"transactions": {"0": 500}}
    history = HealthHistory()
    history.add(
        progress(b, b, 10 * b, latest, {"transactions": {"0": 400 + 10 * b}}) for b in range(20)
    )
    drawn(stream_health_png(history.frame()))
    drawn(stream_health_png(history.frame().iloc[0:0]))
