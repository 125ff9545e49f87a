"""Parse, validate and score transactions: one set of functions for batch, stream and tests.

The stream reads Kafka records, :func:`parse_transactions` turns each into the message
fields plus a rejection ``reason`` (null when valid). Valid rows are scored by
:func:`score_transactions`; rejected ones become dead letters via :func:`dead_letters`.
Batch scoring of the audited table calls the same :func:`score_transactions`, so the alerts
a stream produces can be reconciled exactly against batch.
"""

from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fraud_assets.core.contracts import (
    ALERT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    FEATURE_COLUMNS,
    REQUIRED_MESSAGE_FIELDS,
    SCORED_TRANSACTIONS_SCHEMA,
    TOP_FEATURES_TYPE,
    TRANSACTION_MESSAGE_SCHEMA,
    field_names,
)
from fraud_assets.core.selection import is_alert
from fraud_assets.core.train import with_fraud_prob

MAX_MESSAGE_BYTES = 16 * 1024
"""A transaction message is about 700 bytes; anything far larger is rejected unparsed."""

JSON_KEEP_NULLS = {"ignoreNullFields": "false"}
"""Every contract field is present in produced JSON, null or not (``Class`` is often null)."""

CORRUPT_RECORD = "_corrupt_record"
_PARSE_SCHEMA = T.StructType(
    [*TRANSACTION_MESSAGE_SCHEMA.fields, T.StructField(CORRUPT_RECORD, T.StringType(), True)]
)
_NUMERIC_FIELDS = ("Time", *FEATURE_COLUMNS)


def _rejection_reason(message: Column, raw_value: Column, event_time: Column) -> Column:
    """The first rule a message breaks, as ``reason[:field]`` text; null when valid."""
    checks: list[tuple[Column, Column]] = [
        (raw_value.isNull(), F.lit("empty_message")),
        (F.octet_length(raw_value) > MAX_MESSAGE_BYTES, F.lit("oversized")),
        (
            message.isNull()
            | message[CORRUPT_RECORD].isNotNull()
            # Jackson stops after the first value: "{...}garbage" would parse.
            | ~raw_value.rlike(r"\}\s*$"),
            F.lit("malformed_json"),
        ),
        # The JSON reader decodes invalid UTF-8 as U+FFFD: the text is not what was sent.
        (~F.is_valid_utf8(raw_value), F.lit("invalid_utf8")),
    ]
    checks += [
        (message[name].isNull(), F.lit(f"missing_or_invalid_field:{name}"))
        for name in REQUIRED_MESSAGE_FIELDS
    ]
    # Spark reads any JSON token into a string field (12 -> "12", {"a":1} -> its text): the
    # two string fields must be JSON strings, and the id a non-empty one.
    checks.append(
        (
            ~raw_value.rlike(r'"transaction_id"\s*:\s*"[^"]'),
            F.lit("missing_or_invalid_field:transaction_id"),
        )
    )
    checks.append(
        (
            event_time.isNull() | ~raw_value.rlike(r'"event_time"\s*:\s*"'),
            F.lit("invalid_event_time"),
        )
    )
    checks += [
        (
            F.isnan(message[name]) | (F.abs(message[name]) == F.lit(float("inf"))),
            F.lit(f"non_finite:{name}"),
        )
        for name in _NUMERIC_FIELDS
    ]
    checks.append((message["Amount"] < 0, F.lit("negative_amount")))
    checks.append((~message["Class"].isin(0, 1), F.lit("invalid_class")))
    reason = None
    for condition, text in reversed(checks):
        reason = (
            F.when(condition, text) if reason is None else F.when(condition, text).otherwise(reason)
        )
    return reason


def parse_transactions(records: DataFrame) -> DataFrame:
    """Kafka records -> message fields, parsed ``event_time``, ``reason`` and provenance.

    ``records`` has the Kafka source columns (key, value, topic, partition, offset,
    timestamp). JSON is parsed once with the explicit contract schema; unknown extra fields
    are ignored.
    """
    raw_value = F.col("value").cast("string")
    with_message = records.select(
        F.col("key").cast("string").alias("key"),
        raw_value.alias("value"),
        F.col("topic").alias("source_topic"),
        F.col("partition").alias("source_partition"),
        F.col("offset").alias("source_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        # explode(array(x)) yields exactly one row per record (a null element included) and
        # is a plan barrier: the optimizer cannot push `reason IS NULL` (or any later filter)
        # below a Generate, so from_json cannot be inlined into each validation rule (98
        # parses per row otherwise) — with or without persist(), in micro-batch and in
        # real-time mode alike.
        F.explode(
            F.array(
                F.when(
                    F.octet_length(raw_value) <= MAX_MESSAGE_BYTES,
                    F.from_json(
                        raw_value,
                        _PARSE_SCHEMA,
                        {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD},
                    ),
                )
            )
        ).alias("message"),
    )
    message = F.col("message")
    event_time = message["event_time"].try_cast("timestamp")
    return with_message.select(
        "key",
        "value",
        "source_topic",
        "source_partition",
        "source_offset",
        "kafka_timestamp",
        *[
            message[name].alias(name)
            for name in field_names(TRANSACTION_MESSAGE_SCHEMA)
            if name != "event_time"
        ],
        event_time.alias("event_time"),
        _rejection_reason(message, F.col("value"), event_time).alias("reason"),
    )


def filter_valid(parsed: DataFrame) -> DataFrame:
    """Only the messages that passed validation."""
    return parsed.where(F.col("reason").isNull())


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Rejected messages with :data:`DEAD_LETTER_SCHEMA`."""
    return parsed.where(F.col("reason").isNotNull()).select(*field_names(DEAD_LETTER_SCHEMA))


def score_with_features(
    model: PipelineModel, transactions: DataFrame, threshold: float, model_version: str
) -> DataFrame:
    """:func:`score_transactions` plus the raw feature columns (what explanations read)."""
    alert = is_alert(F.col("fraud_prob"), F.lit(threshold))
    return (
        with_fraud_prob(model, transactions)
        .withColumn("threshold", F.lit(float(threshold)))
        .withColumn("model_version", F.lit(model_version))
        .withColumn("is_alert", alert)
        .withColumn("prediction", alert.cast("int"))
        .select(
            *field_names(SCORED_TRANSACTIONS_SCHEMA),
            *[name for name in FEATURE_COLUMNS if name != "Amount"],
        )
    )


def score_transactions(
    model: PipelineModel, transactions: DataFrame, threshold: float, model_version: str
) -> DataFrame:
    """Every transaction with its fraud probability and alert decision.

    ``transactions`` needs ``transaction_id``, ``event_time``, the feature columns and
    (optionally null) ``Class``. Returns :data:`SCORED_TRANSACTIONS_SCHEMA`.
    """
    return score_with_features(model, transactions, threshold, model_version).select(
        *field_names(SCORED_TRANSACTIONS_SCHEMA)
    )


def alert_id_of(model_version: Column, transaction_id: Column) -> Column:
    """Deterministic alert id ``<model_version>:<transaction_id>`` (consumers de-duplicate)."""
    return F.concat_ws(":", model_version, transaction_id)


def alerts(scored: DataFrame, scored_at: Column, top_features: Column | None = None) -> DataFrame:
    """The alerts among ``scored`` rows, with :data:`ALERT_SCHEMA`.

    ``top_features`` is the explanation expression (``fraud_assets.core.explain``); it is
    evaluated after the filter, on alert rows only, and needs the feature columns of
    :func:`score_with_features`. Without it the alerts carry a null explanation.
    """
    explanation = F.lit(None).cast(TOP_FEATURES_TYPE) if top_features is None else top_features
    return (
        scored.where(F.col("is_alert"))
        .withColumn("alert_id", alert_id_of(F.col("model_version"), F.col("transaction_id")))
        .withColumn("scored_at", scored_at)
        .withColumn("top_features", explanation)
        .select(*field_names(ALERT_SCHEMA))
    )


def alert_kafka_records(alert_rows: DataFrame) -> DataFrame:
    """Alerts as Kafka records: key ``transaction_id``, value the JSON alert."""
    return alert_rows.select(
        F.col("transaction_id").alias("key"),
        F.to_json(F.struct(*field_names(ALERT_SCHEMA)), JSON_KEEP_NULLS).alias("value"),
    )


def dead_letter_kafka_records(letters: DataFrame) -> DataFrame:
    """Dead letters as Kafka records: the original key, value JSON with reason and source."""
    return letters.select(
        F.col("key"),
        F.to_json(F.struct(*field_names(DEAD_LETTER_SCHEMA)), JSON_KEEP_NULLS).alias("value"),
    )
