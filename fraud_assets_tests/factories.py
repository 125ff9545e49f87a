"""Tiny deterministic data builders for the unit tests of the core Spark modules.

Every builder is a pure function of its arguments (no randomness), so a failing test
reproduces exactly. Rows are plain dicts keyed by contract column names; the ``*_df``
builders turn them into Spark DataFrames with the contract schemas.
"""

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from fraud_assets.core.contracts import (
    AUDITED_TRANSACTIONS_SCHEMA,
    EVENT_TIME_BASE,
    PCA_COLUMNS,
    RAW_TRANSACTIONS_SCHEMA,
    SOURCE_COLUMNS,
    field_names,
)
from fraud_assets.core.train import TrainingConfig, fit

KAFKA_RECORD_SCHEMA = T.StructType(
    [
        T.StructField("key", T.BinaryType(), True),
        T.StructField("value", T.BinaryType(), True),
        T.StructField("topic", T.StringType(), True),
        T.StructField("partition", T.IntegerType(), True),
        T.StructField("offset", T.LongType(), True),
        T.StructField("timestamp", T.TimestampType(), True),
    ]
)
"""The columns of Spark's Kafka source (headers left out: the parser does not read them)."""

KAFKA_TIMESTAMP = datetime(2024, 1, 2, 3, 4, 5)
"""The broker timestamp given to every built Kafka record."""


# --- source rows (creditcard.csv) ---------------------------------------------------------


def source_row(row_index: int, **overrides: Any) -> dict[str, Any]:
    """One raw source row (``row_index`` + ``creditcard.csv`` columns), values from the index.

    ``overrides`` replace any column, e.g. ``Class=1`` or ``V2=None``.
    """
    row: dict[str, Any] = {"row_index": row_index, "Time": float(row_index * 10)}
    for position, name in enumerate(PCA_COLUMNS, start=1):
        row[name] = (-1) ** position * (position / 10 + row_index / 8)
    row["Amount"] = round(1.25 + row_index * 3.5, 2)
    row["Class"] = 0
    row.update(overrides)
    return row


def frame(
    spark: SparkSession, rows: Sequence[Mapping[str, Any]], schema: T.StructType
) -> DataFrame:
    """``rows`` (dicts) as a DataFrame with ``schema``, in the given order."""
    names = field_names(schema)
    return spark.createDataFrame([tuple(row[name] for name in names) for row in rows], schema)


def raw_transactions_df(spark: SparkSession, rows: Sequence[Mapping[str, Any]]) -> DataFrame:
    """``rows`` as a DataFrame with :data:`RAW_TRANSACTIONS_SCHEMA`, in the given order."""
    return frame(spark, rows, RAW_TRANSACTIONS_SCHEMA)


def write_source_csv(path: Path, rows: Sequence[Mapping[str, Any]], time_text: Mapping[int, str]):
    """Write ``rows`` the way ``creditcard.csv`` is written (quoted header, quoted label).

    ``time_text`` maps a position in ``rows`` to the literal text of its ``Time`` field (the
    real file writes row 153758 as ``1e+05``).
    """
    lines = [",".join(f'"{name}"' for name in SOURCE_COLUMNS)]
    for position, row in enumerate(rows):
        fields = [time_text.get(position, repr(float(row["Time"])))]
        fields += [repr(float(row[name])) for name in (*PCA_COLUMNS, "Amount")]
        fields.append(f'"{int(row["Class"])}"')
        lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n")
    return path


# --- audited transactions (model inputs) ----------------------------------------------------


def separable_transactions(count: int = 200, fraud_every: int = 10) -> list[dict[str, Any]]:
    """Audited rows where frauds (every ``fraud_every``-th row) have a large ``V1``.

    The classes overlap slightly in ``V1`` so a regularised model gives graded (not all 0/1)
    probabilities; the other features vary but carry no signal.
    """
    rows = []
    for index in range(count):
        is_fraud = index % fraud_every == 0
        seconds = index * 10.0
        row: dict[str, Any] = {
            "transaction_id": str(index),
            "row_index": index,
            "event_time": EVENT_TIME_BASE + timedelta(seconds=seconds),
            "Time": seconds,
        }
        for position, name in enumerate(PCA_COLUMNS, start=1):
            row[name] = ((index * position) % 11 - 5) / 10
        row["V1"] = 2.0 + (index % 7) * 0.4 if is_fraud else -1.0 + (index % 13) * 0.2
        row["Amount"] = 10.0 + (index % 17) * 3.1
        row["Class"] = 1 if is_fraud else 0
        rows.append(row)
    return rows


def audited_df(spark: SparkSession, rows: Sequence[Mapping[str, Any]]) -> DataFrame:
    """``rows`` as a DataFrame with :data:`AUDITED_TRANSACTIONS_SCHEMA`."""
    return frame(spark, rows, AUDITED_TRANSACTIONS_SCHEMA)


@functools.cache
def separable_model(spark: SparkSession) -> PipelineModel:
    """The scoring pipeline fitted on ``separable_transactions(200)``, once per session.

    Regularised so that probabilities are graded, strictly inside (0, 1). Cached because a
    fit costs seconds and several test modules only need *a* real model.
    """
    training = audited_df(spark, separable_transactions(200))
    return fit(training, TrainingConfig(max_iter=50, reg_param=0.05))


@functools.cache
def xgboost_model(spark: SparkSession) -> PipelineModel:
    """An XGBoost pipeline (xgboost.spark) fitted on ``separable_transactions(400)``, once.

    Small trees and a high learning rate so its probabilities are graded and several
    features are split on.
    """
    training = audited_df(spark, separable_transactions(400))
    config = TrainingConfig(
        algorithm="xgb", xgb_n_estimators=25, xgb_max_depth=3, xgb_learning_rate=0.3
    )
    return fit(training, config)


# --- Kafka records --------------------------------------------------------------------------


def kafka_record(
    value: bytes | None,
    key: bytes | None = None,
    *,
    offset: int,
    topic: str = "transactions",
    partition: int = 0,
) -> tuple[Any, ...]:
    """One row of :data:`KAFKA_RECORD_SCHEMA`."""
    return (key, value, topic, partition, offset, KAFKA_TIMESTAMP)


def kafka_records_df(spark: SparkSession, records: Sequence[tuple[Any, ...]]) -> DataFrame:
    """Rows built with :func:`kafka_record`, shaped like Spark's Kafka source."""
    return spark.createDataFrame(list(records), KAFKA_RECORD_SCHEMA)


def json_bytes(message: Mapping[str, Any]) -> bytes:
    """``message`` as JSON text that may carry ``NaN``/``Infinity`` literals on purpose."""
    return json.dumps(message, separators=(",", ":"), allow_nan=True).encode("utf-8")


# --- scored transactions --------------------------------------------------------------------


def scored_df(spark: SparkSession, pairs: Sequence[tuple[float, int]]) -> DataFrame:
    """``(fraud_prob, Class)`` pairs as the minimal input of a threshold sweep."""
    return spark.createDataFrame(
        [(float(prob), int(label)) for prob, label in pairs], "fraud_prob double, Class int"
    )
