"""Audit: the source file, and the deduplicated, time-stamped transactions built from it."""

import dagster as dg
from pyspark.sql import functions as F

from fraud_assets.core import audit
from fraud_assets.core.contracts import (
    AUDITED_TRANSACTIONS_SCHEMA,
    LABEL_COLUMN,
    RAW_TRANSACTIONS_SCHEMA,
    SOURCE_COLUMNS,
)
from fraud_assets.core.tables import read_table, write_parquet_atomic
from fraud_assets.defs.metadata import column_schema
from fraud_assets.defs.resources import ProjectResource, SparkResource
from fraud_assets.setup.dataset import verify_dataset


@dg.asset(
    group_name="audit",
    kinds={"spark", "parquet"},
    description="Every row of data/creditcard.csv (ULB), with its 0-based source row index.",
    metadata={"dagster/column_schema": column_schema(RAW_TRANSACTIONS_SCHEMA)},
)
def raw_transactions(project: ProjectResource, spark: SparkResource) -> dg.MaterializeResult:
    csv_path = project.paths.dataset_csv
    verify_dataset(csv_path, expected_sha256=project.dataset_sha256 or None)
    target = project.table("raw_transactions")
    audit.write_raw_transactions(csv_path, target)
    # Counted as Spark reads it with the contract schema, as every reader downstream does.
    rows = read_table(spark.session(), target, RAW_TRANSACTIONS_SCHEMA).count()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "source": dg.MetadataValue.path(str(csv_path)),
            "path": dg.MetadataValue.path(str(target)),
            "sha256_checked": bool(project.dataset_sha256),
        }
    )


@dg.asset(
    group_name="audit",
    kinds={"spark", "parquet"},
    deps=[raw_transactions],
    description=(
        "One row per distinct transaction: exact duplicates dropped (first kept), "
        "transaction_id = source row index, event_time = 2013-09-01T00:00Z + Time seconds."
    ),
    metadata={"dagster/column_schema": column_schema(AUDITED_TRANSACTIONS_SCHEMA)},
)
def audited_transactions(project: ProjectResource, spark: SparkResource) -> dg.MaterializeResult:
    session = spark.session()
    raw = read_table(session, project.table("raw_transactions"), RAW_TRANSACTIONS_SCHEMA)
    audited = audit.audited_transactions(raw)
    target = project.table("audited_transactions")
    write_parquet_atomic(audited, target)
    report = audit.audit_report(raw, read_table(session, target, AUDITED_TRANSACTIONS_SCHEMA))
    missing = {name: n for name, n in report.missing_values.items() if n}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report.distinct_rows,
            "source_rows": report.rows,
            "duplicate_rows_dropped": report.duplicate_rows,
            "frauds_distinct": report.distinct_frauds,
            "frauds_in_source": report.frauds,
            "fraud_rate_pct": round(100 * report.fraud_rate, 4),
            "missing_values": dg.MetadataValue.json(missing or {"all columns": 0}),
            "time_range_seconds": f"{report.time_min:g} .. {report.time_max:g}",
            "path": dg.MetadataValue.path(str(target)),
        }
    )


def _audited(project: ProjectResource, spark: SparkResource):
    return read_table(
        spark.session(), project.table("audited_transactions"), AUDITED_TRANSACTIONS_SCHEMA
    )


@dg.asset_check(
    asset=audited_transactions,
    blocking=True,
    description="No two rows are the same transaction or the same source record.",
)
def audited_has_no_duplicates(
    project: ProjectResource, spark: SparkResource
) -> dg.AssetCheckResult:
    df = _audited(project, spark)
    stats = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct("transaction_id").alias("ids"),
    ).first()
    distinct_records = df.select(*SOURCE_COLUMNS).distinct().count()
    passed = stats["rows"] == stats["ids"] == distinct_records
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "rows": stats["rows"],
            "distinct_ids": stats["ids"],
            "distinct_records": distinct_records,
        },
    )


@dg.asset_check(
    asset=audited_transactions, blocking=True, description="No missing value in any column."
)
def audited_has_no_missing_values(
    project: ProjectResource, spark: SparkResource
) -> dg.AssetCheckResult:
    df = _audited(project, spark)
    row = df.agg(*[F.count_if(F.col(c).isNull()).alias(c) for c in df.columns]).first()
    missing = {c: int(row[c]) for c in df.columns if row[c]}
    return dg.AssetCheckResult(
        passed=not missing, metadata={"missing": dg.MetadataValue.json(missing)}
    )


@dg.asset_check(
    asset=audited_transactions,
    blocking=True,
    description="The fraud rate is within the band the model was designed for.",
)
def audited_fraud_rate_in_band(
    project: ProjectResource, spark: SparkResource
) -> dg.AssetCheckResult:
    row = (
        _audited(project, spark)
        .agg(F.avg(F.col(LABEL_COLUMN).cast("double")).alias("rate"))
        .first()
    )
    rate = float(row["rate"] or 0.0)
    low, high = project.fraud_rate_min, project.fraud_rate_max
    return dg.AssetCheckResult(
        passed=low <= rate <= high,
        metadata={
            "fraud_rate_pct": round(100 * rate, 4),
            "band_pct": f"{100 * low:g} .. {100 * high:g}",
        },
    )
