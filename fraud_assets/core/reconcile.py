"""Exact reconciliation of the stream's alerts against batch scoring, as sets of ids."""

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fraud_assets.core.contracts import ALERT_SCHEMA, ALERTS_TABLE_SCHEMA, KPI_SCHEMA, field_names
from fraud_assets.core.kpis import final_watermark
from fraud_assets.core.registry import Promotion
from fraud_assets.core.scoring import score_transactions


def expected_alert_ids(
    model: PipelineModel, transactions: DataFrame, promotion: Promotion
) -> set[str]:
    """Ids that batch scoring of ``transactions`` with the promoted model alerts on."""
    scored = score_transactions(model, transactions, promotion.threshold, promotion.version)
    return {row[0] for row in scored.where("is_alert").select("transaction_id").collect()}


def duplicate_payload_mismatches(keys: list[bytes | None], values: list[bytes | None]) -> int:
    """How many keys were produced more than once with differing payloads.

    At-least-once delivery (a crash, real-time mode's replay from its last checkpoint) may
    repeat an alert; the promise is that a repeat is the identical keyed record.
    """
    by_key: dict[bytes | None, set[bytes | None]] = defaultdict(set)
    for key, value in zip(keys, values, strict=True):
        by_key[key].add(value)
    return sum(1 for payloads in by_key.values() if len(payloads) > 1)


def parquet_alert_ids(spark: SparkSession, alerts_table: Path) -> list[str]:
    """Every ``transaction_id`` row of the Parquet alerts table (duplicates kept)."""
    if not alerts_table.exists():
        return []
    table = spark.read.schema(ALERTS_TABLE_SCHEMA).parquet(str(alerts_table))
    return [row[0] for row in table.select("transaction_id").collect()]


def kafka_alert_ids(values: Iterable[bytes | None], keys: Iterable[bytes | None]) -> list[str]:
    """The ``transaction_id`` of every Kafka alert record, checking key and payload agree.

    Raises ValueError when a record is not a JSON alert with every contract field or its
    key is not its ``transaction_id``.
    """
    required = {field.name for field in ALERT_SCHEMA.fields}
    ids = []
    for key, value in zip(keys, values, strict=True):
        payload = json.loads(value or b"null")
        if not isinstance(payload, dict) or not required <= payload.keys():
            raise ValueError(f"alert record lacks contract fields: {value!r}")
        if key is None or key.decode() != payload["transaction_id"]:
            raise ValueError(f"alert key {key!r} is not its transaction_id in {value!r}")
        ids.append(payload["transaction_id"])
    return ids


@dataclass(frozen=True)
class AlertReconciliation:
    """Stream sinks against the batch-scored expectation."""

    alerts_expected: int
    alerts_parquet: int
    alerts_parquet_distinct: int
    alerts_kafka: int
    alerts_kafka_distinct: int
    missing_alerts: int
    unexpected_alerts: int
    duplicate_alerts_parquet: int
    missing_ids: list[str]
    unexpected_ids: list[str]

    @property
    def exact(self) -> bool:
        return (
            self.missing_alerts == 0
            and self.unexpected_alerts == 0
            and self.duplicate_alerts_parquet == 0
            and self.alerts_parquet == self.alerts_kafka_distinct == self.alerts_expected
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "exact": self.exact}


def reconcile_alerts(
    expected: set[str], parquet_ids: list[str], kafka_ids: list[str], sample: int = 20
) -> AlertReconciliation:
    """Compare the sinks with ``expected``; missing means absent from either sink."""
    parquet, kafka = set(parquet_ids), set(kafka_ids)
    missing = (expected - parquet) | (expected - kafka)
    unexpected = (parquet | kafka) - expected
    duplicates = sum(n - 1 for n in Counter(parquet_ids).values() if n > 1)
    return AlertReconciliation(
        alerts_expected=len(expected),
        alerts_parquet=len(parquet_ids),
        alerts_parquet_distinct=len(parquet),
        alerts_kafka=len(kafka_ids),
        alerts_kafka_distinct=len(kafka),
        missing_alerts=len(missing),
        unexpected_alerts=len(unexpected),
        duplicate_alerts_parquet=duplicates,
        missing_ids=sorted(missing)[:sample],
        unexpected_ids=sorted(unexpected)[:sample],
    )


def batch_log_totals(batch_log_dir: Path) -> dict[str, int]:
    """Totals over the stream's committed batch logs (one JSON file per batch)."""
    totals = Counter()
    for path in sorted(batch_log_dir.glob("batch-*.json")):
        stats = json.loads(path.read_text())
        totals["batches"] += 1
        for key in ("input_rows", "scored", "alerts", "invalid"):
            totals[key] += int(stats[key])
    return dict(totals)


def quarantined(spark: SparkSession, table: Path) -> DataFrame | None:
    """The quarantine table, or None when nothing was ever rejected."""
    if not table.exists():
        return None
    return spark.read.parquet(str(table)).where(F.col("reason").isNotNull())


@dataclass(frozen=True)
class KpiReconciliation:
    """Streamed KPI windows against batch KPIs of the same committed rows."""

    kpi_windows_streamed: int
    kpi_windows_closed: int
    kpi_windows_open: int
    kpi_windows_missing: int
    kpi_windows_mismatched: int
    kpi_windows_duplicated: int
    kpi_txn_streamed: int
    mismatched_windows: list[str]

    @property
    def exact(self) -> bool:
        return (
            self.kpi_windows_missing == 0
            and self.kpi_windows_mismatched == 0
            and self.kpi_windows_duplicated == 0
            and self.kpi_windows_streamed == self.kpi_windows_closed
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "kpis_exact": self.exact}


def max_event_time(events: DataFrame):
    """The latest ``event_time`` of ``events`` as a pandas Timestamp (UTC, naive)."""
    return events.agg(F.max("event_time").alias("latest")).toPandas()["latest"][0]


def reconcile_kpis(
    streamed: DataFrame, batch: DataFrame, latest_event_time, watermark_delay: str
) -> KpiReconciliation:
    """Compare window by window; only windows the final watermark closed are expected.

    A window is closed once the KPI query's final watermark
    (:func:`fraud_assets.core.kpis.final_watermark`) has reached its end; later ones are
    still open in the stream's state and are reported, not compared.
    """
    columns = field_names(KPI_SCHEMA)
    batch_rows = batch.select(*columns).toPandas()
    streamed_rows = streamed.select(*columns).toPandas()
    if batch_rows.empty:
        closed = batch_rows
    else:
        watermark = final_watermark(latest_event_time, watermark_delay)
        closed = batch_rows[batch_rows["window_end"] <= watermark]
    key = "window_start"
    streamed_by_window = streamed_rows.set_index(key)
    duplicated = int(streamed_by_window.index.duplicated().sum())
    mismatched, missing = [], 0
    for row in closed.to_dict(orient="records"):
        if row[key] not in streamed_by_window.index:
            missing += 1
            continue
        other = streamed_by_window.loc[[row[key]]].iloc[0].to_dict()
        for column in columns:
            if column == key:
                continue
            a, b = row[column], other[column]
            if not (a == b or (_is_missing(a) and _is_missing(b))):
                mismatched.append(f"{row[key]}:{column}")
                break
    return KpiReconciliation(
        kpi_windows_streamed=len(streamed_rows),
        kpi_windows_closed=len(closed),
        kpi_windows_open=len(batch_rows) - len(closed),
        kpi_windows_missing=missing,
        kpi_windows_mismatched=len(mismatched),
        kpi_windows_duplicated=duplicated,
        kpi_txn_streamed=int(streamed_rows["n_txn"].sum()) if len(streamed_rows) else 0,
        mismatched_windows=mismatched[:20],
    )


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)
