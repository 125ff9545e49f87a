"""Parse, validate and score transactions: one set of functions for batch, stream and tests.

The stream reads Kafka records, :func:`parse_transactions` turns each into the message
fields plus a rejection ``reason`` (null when valid). Valid rows are scored by
:func:`score_transactions`; rejected ones become dead letters via :func:`dead_letters`.
Batch scoring of the audited table calls the same :func:`score_transactions`, so the alerts
a stream produces can be reconciled exactly against batch.
"""

import functools

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


def _ends_after_object(raw_value: Column) -> Column:
    """The text ends with the closing brace of its object (JSON whitespace may follow).

    Jackson stops after the first value, so ``{...}garbage`` would parse: the message must
    end where its object ends. (Space, tab, CR and LF are JSON's whitespace, RFC 8259.)
    """
    return raw_value.rlike(r"\}[ \t\r\n]*$")


def _rejection_checks(
    message: Column, raw_value: Column, event_time: Column
) -> list[tuple[Column, Column]]:
    """Every contract rule as ``(broken, reason text)``, in the order they are reported."""
    checks: list[tuple[Column, Column]] = [
        (raw_value.isNull(), F.lit("empty_message")),
        (F.octet_length(raw_value) > MAX_MESSAGE_BYTES, F.lit("oversized")),
        (
            message.isNull() | message[CORRUPT_RECORD].isNotNull() | ~_ends_after_object(raw_value),
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
        (~_id_is_json_string(raw_value), F.lit("missing_or_invalid_field:transaction_id"))
    )
    checks.append(
        (
            event_time.isNull() | ~_event_time_is_json_string(raw_value),
            F.lit("invalid_event_time"),
        )
    )
    checks += [
        (_non_finite(message[name]), F.lit(f"non_finite:{name}")) for name in _NUMERIC_FIELDS
    ]
    checks.append((message["Amount"] < 0, F.lit("negative_amount")))
    checks.append((~message["Class"].isin(0, 1), F.lit("invalid_class")))
    return checks


def _non_finite(value: Column) -> Column:
    return F.isnan(value) | (F.abs(value) == F.lit(float("inf")))


def _id_is_json_string(raw_value: Column) -> Column:
    return raw_value.rlike(r'"transaction_id"\s*:\s*"[^"]')


def _event_time_is_json_string(raw_value: Column) -> Column:
    return raw_value.rlike(r'"event_time"\s*:\s*"')


def _surely_valid(message: Column, raw_value: Column, event_time: Column) -> Column:
    """True only for a message that breaks none of :func:`_rejection_checks` (fast path).

    One conjunction instead of one rule per field: the numeric fields are checked through
    their sum (null if any is missing, NaN or infinite if any is non-finite). It may be
    false or null for a valid message (a sum that overflows, say); such a row is then
    judged by the full rules, so it only decides which rows need them, never the outcome.
    """
    total = message[_NUMERIC_FIELDS[0]]
    for name in _NUMERIC_FIELDS[1:]:
        total = total + message[name]
    return (
        (F.octet_length(raw_value) <= MAX_MESSAGE_BYTES)
        & message.isNotNull()
        & message[CORRUPT_RECORD].isNull()
        # What producers send ends with its brace; trailing whitespace takes the full rules.
        & raw_value.endswith(F.lit("}"))
        & F.is_valid_utf8(raw_value)
        & message["transaction_id"].isNotNull()
        & _id_is_json_string(raw_value)
        & event_time.isNotNull()
        & _event_time_is_json_string(raw_value)
        & ~_non_finite(total)
        & (message["Amount"] >= 0)
        & (message["Class"].isNull() | message["Class"].isin(0, 1))
    )


def _rejection_reason(message: Column, raw_value: Column, event_time: Column) -> Column:
    """The first rule a message breaks, as ``reason[:field]`` text; null when valid.

    Valid messages (nearly all) pass one conjunction; only the others go through the rules
    one by one. A flat ``coalesce`` of one ``when`` per rule keeps the expression tree
    shallow: Catalyst re-optimizes it for every micro-batch, and a 70-deep ``CASE WHEN``
    chain cost over a second of planning per Spark job.
    """
    first_broken = F.coalesce(
        *[
            F.when(broken, text)
            for broken, text in _rejection_checks(message, raw_value, event_time)
        ]
    )
    return F.when(
        _surely_valid(message, raw_value, event_time), F.lit(None).cast("string")
    ).otherwise(first_broken)


@functools.lru_cache(maxsize=4)
def _parse_columns(application_id: str) -> tuple[tuple[Column, ...], tuple[Column, ...]]:
    """The two projections of :func:`parse_transactions`, built once per Spark application.

    Building these ~400 expressions costs about a second of JVM calls from Python; a
    micro-batch reuses them instead of paying that on every trigger.
    """
    del application_id  # the cache key: Columns belong to one JVM
    raw_value = F.col("value").cast("string")
    first = (
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
    second = (
        F.col("key"),
        F.col("value"),
        F.col("source_topic"),
        F.col("source_partition"),
        F.col("source_offset"),
        F.col("kafka_timestamp"),
        *[
            message[name].alias(name)
            for name in field_names(TRANSACTION_MESSAGE_SCHEMA)
            if name != "event_time"
        ],
        event_time.alias("event_time"),
        _rejection_reason(message, F.col("value"), event_time).alias("reason"),
    )
    return first, second


def parse_transactions(records: DataFrame) -> DataFrame:
    """Kafka records -> message fields, parsed ``event_time``, ``reason`` and provenance.

    ``records`` has the Kafka source columns (key, value, topic, partition, offset,
    timestamp). JSON is parsed once with the explicit contract schema; unknown extra fields
    are ignored.
    """
    first, second = _parse_columns(records.sparkSession.sparkContext.applicationId)
    return records.select(*first).select(*second)


def without_valid_text(parsed: DataFrame) -> DataFrame:
    """``parsed`` with the raw message text kept only for rejected rows.

    What a micro-batch keeps in memory for its outputs: the dead letters need the text of
    rejected messages; the ~700 bytes of every valid one would only fill the cache.
    """
    return parsed.withColumn("value", F.when(F.col("reason").isNotNull(), F.col("value")))


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
    computed = {
        "threshold": F.lit(float(threshold)),
        "model_version": F.lit(model_version),
        "is_alert": alert,
        "prediction": alert.cast("int"),
    }
    # One projection over the scored rows: fewer plan nodes to analyse per micro-batch.
    return with_fraud_prob(model, transactions).select(
        *[
            computed[name].alias(name) if name in computed else F.col(name)
            for name in field_names(SCORED_TRANSACTIONS_SCHEMA)
        ],
        *[name for name in FEATURE_COLUMNS if name != "Amount"],
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
