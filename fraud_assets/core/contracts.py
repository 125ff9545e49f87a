"""Named schemas and field lists: the contracts between modules, topics and tables.

Every DataFrame that crosses a module boundary has one of these schemas, and every
transform that produces one ends in ``select(*SCHEMA.fieldNames())``. Changing one of
them is a breaking change for tests, consumers of the Kafka topics and the checkpoints of
stateful queries.
"""

from datetime import UTC, datetime

from pyspark.sql import types as T

PCA_COLUMNS: tuple[str, ...] = tuple(f"V{i}" for i in range(1, 29))
"""The 28 anonymised PCA components of the ULB dataset."""

SOURCE_COLUMNS: tuple[str, ...] = ("Time", *PCA_COLUMNS, "Amount", "Class")
"""The header of ``creditcard.csv``, in file order."""

FEATURE_COLUMNS: tuple[str, ...] = (*PCA_COLUMNS, "Amount")
"""Model inputs. ``Time`` (seconds since the first transaction of the capture) is left
out on purpose: it only orders the two days of the dataset and means nothing for a
transaction arriving in production."""

LABEL_COLUMN = "Class"

EVENT_TIME_BASE = datetime(2013, 9, 1, tzinfo=UTC)
"""``event_time = EVENT_TIME_BASE + Time seconds``. The dataset says only "two days in
September 2013"; a fixed base keeps event times (and so KPI windows) deterministic."""

EVENT_TIME_BASE_EPOCH_SECONDS = int(EVENT_TIME_BASE.timestamp())


def partitioned_by_batch(schema: T.StructType) -> T.StructType:
    """``schema`` plus ``batch_id``: a table partitioned by the micro-batch that wrote it.

    The folders are ``batch_id=N`` (see ``fraud_assets.core.sinks.commit_batch_partition``).
    """
    return T.StructType([*schema.fields, T.StructField("batch_id", T.LongType())])


# --- raw and audited tables --------------------------------------------------------------

RAW_TRANSACTIONS_SCHEMA = T.StructType(
    [T.StructField("row_index", T.LongType(), False)]
    + [T.StructField(name, T.DoubleType(), True) for name in ("Time", *PCA_COLUMNS, "Amount")]
    + [T.StructField("Class", T.IntegerType(), True)]
)
"""``creditcard.csv`` as read, plus its 0-based data row index (the header not counted)."""

AUDITED_TRANSACTIONS_SCHEMA = T.StructType(
    [
        T.StructField("transaction_id", T.StringType(), False),
        T.StructField("row_index", T.LongType(), False),
        T.StructField("event_time", T.TimestampType(), False),
    ]
    + [T.StructField(name, T.DoubleType(), True) for name in ("Time", *PCA_COLUMNS, "Amount")]
    + [T.StructField("Class", T.IntegerType(), True)]
)
"""One row per distinct source transaction (exact duplicates dropped, first kept)."""

# --- Kafka topic `transactions` ----------------------------------------------------------

TRANSACTION_MESSAGE_SCHEMA = T.StructType(
    [
        T.StructField("transaction_id", T.StringType(), True),
        T.StructField("event_time", T.StringType(), True),
    ]
    + [T.StructField(name, T.DoubleType(), True) for name in ("Time", *PCA_COLUMNS, "Amount")]
    + [T.StructField("Class", T.IntegerType(), True)]
)
"""The JSON value of a ``transactions`` message. ``event_time`` is ISO-8601 text (parsed
and validated after ``from_json``); ``Class`` is optional: the label is known later."""

REQUIRED_MESSAGE_FIELDS: tuple[str, ...] = (
    "transaction_id",
    "event_time",
    "Time",
    *PCA_COLUMNS,
    "Amount",
)

SCORED_TRANSACTIONS_SCHEMA = T.StructType(
    [
        T.StructField("transaction_id", T.StringType(), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("Amount", T.DoubleType(), True),
        T.StructField("Class", T.IntegerType(), True),
        T.StructField("fraud_prob", T.DoubleType(), False),
        T.StructField("threshold", T.DoubleType(), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("is_alert", T.BooleanType(), False),
        T.StructField("prediction", T.IntegerType(), False),
    ]
)
"""Every valid transaction after scoring: the input of alerts and KPIs."""

# --- Kafka topic `fraud_alerts` and the Parquet alerts table ------------------------------

TOP_FEATURES_TYPE = T.ArrayType(
    T.StructType(
        [
            T.StructField("feature", T.StringType(), False),
            T.StructField("contribution", T.DoubleType(), False),
        ]
    ),
    False,
)
"""An alert's explanation: up to three ``{feature, contribution}``, largest ``|contribution|``
first (see ``fraud_assets.core.explain`` for what a contribution means per model kind)."""

ALERT_SCHEMA = T.StructType(
    [
        T.StructField("alert_id", T.StringType(), False),
        T.StructField("transaction_id", T.StringType(), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("Amount", T.DoubleType(), True),
        T.StructField("Class", T.IntegerType(), True),
        T.StructField("fraud_prob", T.DoubleType(), False),
        T.StructField("threshold", T.DoubleType(), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("is_alert", T.BooleanType(), False),
        T.StructField("prediction", T.IntegerType(), False),
        T.StructField("scored_at", T.TimestampType(), False),
        T.StructField("top_features", TOP_FEATURES_TYPE, True),
    ]
)
"""One row per transaction scored at or above the promoted threshold. ``alert_id`` is
``<model_version>:<transaction_id>``, so consumers can de-duplicate. ``threshold`` and
``model_version`` are the ones the micro-batch applied; ``top_features`` explains the score
(null only in alerts written before explanations existed)."""

ALERTS_TABLE_SCHEMA = partitioned_by_batch(ALERT_SCHEMA)
"""The Parquet alerts table: alerts partitioned by the micro-batch that committed them."""

# --- Kafka topic `transactions_dlq` and the Parquet quarantine table -----------------------

DEAD_LETTER_SCHEMA = T.StructType(
    [
        T.StructField("reason", T.StringType(), False),
        T.StructField("key", T.StringType(), True),
        T.StructField("value", T.StringType(), True),
        T.StructField("source_topic", T.StringType(), False),
        T.StructField("source_partition", T.IntegerType(), False),
        T.StructField("source_offset", T.LongType(), False),
        T.StructField("kafka_timestamp", T.TimestampType(), True),
        T.StructField("event_time", T.TimestampType(), True),
    ]
)
"""A message that never reached the model: the original bytes (as UTF-8 text, invalid
bytes replaced), why it was rejected, where it came from, and its event time when that
much could be read (it places the message in a KPI window)."""

QUARANTINE_TABLE_SCHEMA = partitioned_by_batch(DEAD_LETTER_SCHEMA)


# --- the stream's ledger: every message it read, once ----------------------------------------

SHADOW_SCORE_FIELDS: tuple[T.StructField, ...] = (
    T.StructField("challenger_version", T.StringType(), True),
    T.StructField("challenger_prob", T.DoubleType(), True),
    T.StructField("challenger_threshold", T.DoubleType(), True),
)
"""The challenger's score of a valid message, beside the champion's (null without one)."""

LEDGER_SCHEMA = T.StructType(
    [
        T.StructField(f.name, f.dataType, True)
        for f in (
            *[f for f in SCORED_TRANSACTIONS_SCHEMA.fields if f.name != "prediction"],
            T.StructField("scored_at", T.TimestampType()),
            T.StructField("top_features", TOP_FEATURES_TYPE),
            *SHADOW_SCORE_FIELDS,
            *[f for f in DEAD_LETTER_SCHEMA.fields if f.name != "event_time"],
        )
    ]
)
"""One row per message the scoring stream read, written once per micro-batch: the single
pass over Kafka that every other output of the batch is derived from.

A valid message has ``reason`` null and its score; a rejected one has its ``reason``, its
original ``key``/``value`` and Kafka origin, and no score. The model version and
threshold are the batch's (constant within it, so Parquet stores them in a few bytes).
Fields marked ``# valid`` / ``# rejected`` are null on the other kind of row::

    transaction_id, event_time, Amount, Class         # both (null where unreadable)
    fraud_prob, threshold, model_version, is_alert    # valid
    scored_at, top_features                           # valid (top_features: alerts only)
    challenger_version, _prob, _threshold             # valid, while a challenger is named
    reason, key, value, source_*, kafka_timestamp     # rejected
"""
LEDGER_TABLE_SCHEMA = partitioned_by_batch(LEDGER_SCHEMA)
"""The ledger table (``tables/ledger/batch_id=N``): exactly once per micro-batch; the input of
live-quality audits and of batch KPIs."""

# --- the challenger's shadow table -------------------------------------------------------------

SHADOW_SCHEMA = T.StructType(
    [
        T.StructField("transaction_id", T.StringType(), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("Amount", T.DoubleType(), True),
        T.StructField("Class", T.IntegerType(), True),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("fraud_prob", T.DoubleType(), False),
        T.StructField("threshold", T.DoubleType(), False),
        T.StructField("is_alert", T.BooleanType(), False),
        T.StructField("challenger_version", T.StringType(), False),
        T.StructField("challenger_prob", T.DoubleType(), False),
        T.StructField("challenger_threshold", T.DoubleType(), False),
        T.StructField("challenger_alert", T.BooleanType(), False),
    ]
)
"""One row per valid message scored while a challenger was named: the champion's score and
alert (``model_version``, ``fraud_prob``, ``threshold``, ``is_alert``: what the stream acted
on) beside the challenger's, from the same parsed row. Never produced to Kafka."""

SHADOW_TABLE_SCHEMA = partitioned_by_batch(SHADOW_SCHEMA)
"""The Parquet shadow table (``tables/shadow/batch_id=N``), exactly once per micro-batch."""

# --- the KPI query's input: per-micro-batch partial counts ----------------------------------

KPI_COUNT_COLUMNS: tuple[str, ...] = (
    "n_txn",
    "n_alert",
    "n_fraud_true",
    "tp",
    "fp",
    "fn",
    "n_invalid",
)
"""The additive counts of a KPI window: a window's KPI row is the sum of its partials."""

KPI_PARTIAL_SCHEMA = T.StructType(
    [
        T.StructField("stream_id", T.StringType(), False),
        T.StructField("batch_id", T.LongType(), False),
        T.StructField("window_start", T.TimestampType(), False),
    ]
    + [T.StructField(name, T.LongType(), False) for name in KPI_COUNT_COLUMNS]
)
"""What one scoring micro-batch adds to one 1-minute window (internal Kafka topic
``fraud_kpi_partials``, key ``<stream_id>:<batch_id>:<window_start>``). ``stream_id`` is the
scoring query's id, stable across restarts from its checkpoint: a KPI query counts only the
partials of its own scoring query, and each ``(batch_id, window_start)`` once. A record
whose ``stream_id`` is ``fraud_assets:evict`` carries no counts: it only makes a restarted KPI
query run a batch (``fraud_assets.core.kpis.EVICTION_REQUEST``)."""

# --- Kafka topic `fraud_kpis` and the Parquet KPI table ------------------------------------

KPI_SCHEMA = T.StructType(
    [
        T.StructField("window_start", T.TimestampType(), False),
        T.StructField("window_end", T.TimestampType(), False),
        T.StructField("n_txn", T.LongType(), False),
        T.StructField("n_alert", T.LongType(), False),
        T.StructField("n_fraud_true", T.LongType(), False),
        T.StructField("tp", T.LongType(), False),
        T.StructField("fp", T.LongType(), False),
        T.StructField("fn", T.LongType(), False),
        T.StructField("precision", T.DoubleType(), True),
        T.StructField("recall", T.DoubleType(), True),
        T.StructField("n_invalid", T.LongType(), False),
    ]
)
"""One row per 1-minute event-time window: volume, alerts and their quality. ``precision``
is null without alerts, ``recall`` null without labelled frauds; ``n_invalid`` counts
rejected messages whose event time could be read."""

KPI_TABLE_SCHEMA = partitioned_by_batch(KPI_SCHEMA)


def field_names(schema: T.StructType) -> list[str]:
    """The column names of ``schema``, in order (for a closing ``select``)."""
    return [field.name for field in schema.fields]
