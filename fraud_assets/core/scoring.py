"""Parse, validate and score transactions: one set of functions for batch, stream and tests.

The stream reads Kafka records, :func:`parse_transactions` turns each into the message
fields plus a rejection ``reason`` (null when valid). Valid rows are scored by
:func:`score_transactions`; rejected ones become dead letters via :func:`dead_letters`.
Batch scoring of the audited table calls the same :func:`score_transactions`, so the alerts
a stream produces can be reconciled exactly against batch.

The micro-batch writer turns a batch of parsed rows into its :func:`ledger_rows` (one pass
over Kafka: every message with its score or its rejection) and derives every other output
of the batch from the committed ledger: :func:`ledger_alerts`, :func:`ledger_dead_letters`
and the KPI partials of :mod:`fraud_assets.core.kpis`.

How any model scores a row (:func:`with_fraud_prob`, :func:`is_alert`) lives here, below
training, evaluation and selection, which use it.
"""

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fraud_assets.core.compiled import compiled_fraud_probability
from fraud_assets.core.contracts import (
    ALERT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    FEATURE_COLUMNS,
    LEDGER_SCHEMA,
    REQUIRED_MESSAGE_FIELDS,
    SCORED_TRANSACTIONS_SCHEMA,
    SHADOW_SCHEMA,
    SHADOW_SCORE_FIELDS,
    TOP_FEATURES_TYPE,
    TRANSACTION_MESSAGE_SCHEMA,
    field_names,
)

T_co = TypeVar("T_co")

# --- how a model scores a row ---------------------------------------------------------------


def is_alert(fraud_prob: Column, threshold: Column) -> Column:
    """The alert rule, the same in batch, stream and tests: ``fraud_prob >= threshold``."""
    return fraud_prob >= threshold


def fraud_probability(probability: Column) -> Column:
    """P(fraud) from Spark ML's probability vector, with built-in functions (no UDF)."""
    return vector_to_array(probability).getItem(1)


def with_fraud_prob(model: PipelineModel, df: DataFrame, output: str = "fraud_prob") -> DataFrame:
    """``df`` plus ``output``, P(fraud) by ``model``; its intermediate columns are dropped.

    A second model can then score the same rows into another ``output``.

    A logistic regression is evaluated as one built-in expression
    (:mod:`fraud_assets.core.compiled`); trees through their model's ``transform``: Spark
    ML's in the JVM, XGBoost's by its own C++ predictor on Arrow batches of rows (a pandas
    UDF: batch-at-a-time, no row-at-a-time Python; its cost per row is measured by
    ``fraud-assets models``, see ``docs/models.md``).
    """
    compiled = compiled_fraud_probability(model)
    if compiled is not None:
        return df.withColumn(output, compiled)
    scored = model.transform(df)
    return scored.withColumn(output, fraud_probability(F.col("probability"))).drop(
        "features_raw", "features", "rawPrediction", "probability", "model_prediction"
    )


# --- parse and validate ---------------------------------------------------------------------

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


def filter_valid(parsed: DataFrame) -> DataFrame:
    """Only the messages that passed validation."""
    return parsed.where(F.col("reason").isNull())


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Rejected messages with :data:`DEAD_LETTER_SCHEMA`."""
    return parsed.where(F.col("reason").isNotNull()).select(*field_names(DEAD_LETTER_SCHEMA))


def score_with_features(
    model: PipelineModel,
    transactions: DataFrame,
    threshold: float,
    model_version: str,
    keep: tuple[str, ...] = (),
) -> DataFrame:
    """:func:`score_transactions` plus the raw feature columns (what explanations read).

    ``keep`` names more columns of ``transactions`` to carry along.
    """
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
        *keep,
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


# --- the micro-batch ledger and what is derived from it ------------------------------------
#
# A micro-batch's fixed cost is mostly Python -> JVM calls (every Column is built by one) and
# code generation. So every projection below is built once per Spark application (or per
# model version and threshold) and reused, and none holds a value that changes from batch to
# batch: a new literal in a plan is new generated code, compiled again for every batch.


def per_application(build: Callable[..., T_co]) -> Callable[..., T_co]:
    """Cache ``build(spark, *args)`` per Spark application (Columns belong to one JVM)."""

    @functools.lru_cache(maxsize=64)
    def cached(application_id: str, *args: Any) -> T_co:
        del application_id  # the cache key
        return build(*args)

    @functools.wraps(build)
    def wrapper(spark: SparkSession, *args: Any) -> T_co:
        return cached(spark.sparkContext.applicationId, *args)

    return wrapper


def scoring_time(epoch_ms: int) -> Column:
    """``epoch_ms`` (a micro-batch's scoring time) as a timestamp, kept out of generated code.

    ``current_timestamp()`` is no substitute: it is a new literal in every micro-batch, and
    a timestamp literal is inlined into the Java code Spark generates, so a new value every
    micro-batch would be new code, compiled again every batch. Here the value is the string
    argument of ``reflect`` (``java_method``), which Spark evaluates without generated code
    and never constant-folds (it is non-deterministic to Spark): the plan's code is the same
    for every value.
    """
    millis = F.reflect(F.lit("java.lang.Long"), F.lit("parseLong"), F.lit(str(int(epoch_ms))))
    return F.timestamp_millis(millis.cast("long"))


SCORED_AT = "_scored_at"
"""The column :func:`ledger_rows` adds for its projection: the batch's scoring time."""


@per_application
def _scoreable_columns(columns: tuple[str, ...]) -> tuple[Column, ...]:
    valid = F.col("reason").isNull()
    return tuple(
        F.when(valid, F.col(name)).otherwise(F.lit(0.0)).alias(name)
        if name in FEATURE_COLUMNS
        else F.col(name)
        for name in columns
    )


def _scoreable(parsed: DataFrame) -> DataFrame:
    """``parsed`` with the features of rejected rows set to 0.0, so any model can score it.

    Spark ML's ``VectorAssembler`` fails a job on a null feature (and "skip"/"keep" drop rows
    or yield NaN): a rejected message may have any field missing. Its score is discarded by
    :func:`ledger_rows`; only valid rows' features reach a model unchanged.
    """
    return parsed.select(*_scoreable_columns(parsed.sparkSession, tuple(parsed.columns)))


CHALLENGER_PROB = "challenger_prob"
"""The column a named challenger's score is computed into, beside ``fraud_prob``."""


def ledger_projection(
    threshold: float,
    model_version: str,
    top_features: Column | None = None,
    challenger: tuple[str, float] | None = None,
) -> tuple[Column, ...]:
    """The select list of :func:`ledger_rows` over parsed rows with ``fraud_prob``.

    Build it once per model version and threshold (the writer keeps it) and pass it to
    :func:`ledger_rows`. ``top_features`` (the explanation expression) and the scoring time
    (:data:`SCORED_AT`, which :func:`ledger_rows` adds) are evaluated on alert rows only.
    ``challenger`` (version, threshold) adds its score (:data:`CHALLENGER_PROB`, computed by
    :func:`ledger_rows`) to every valid row.
    """
    valid = F.col("reason").isNull()
    alert = valid & is_alert(F.col("fraud_prob"), F.lit(float(threshold)))
    explanation = F.lit(None).cast(TOP_FEATURES_TYPE) if top_features is None else top_features
    computed = {
        "Amount": F.when(valid, F.col("Amount")),
        "Class": F.when(valid, F.col("Class")),
        "fraud_prob": F.when(valid, F.col("fraud_prob")),
        "threshold": F.when(valid, F.lit(float(threshold))),
        "model_version": F.when(valid, F.lit(model_version)),
        "is_alert": F.when(valid, alert),
        "scored_at": F.when(alert, F.col(SCORED_AT)),
        "top_features": F.when(alert, explanation),
        "reason": F.col("reason"),
    }
    if challenger is None:
        for shadow in SHADOW_SCORE_FIELDS:
            computed[shadow.name] = F.lit(None).cast(shadow.dataType)
    else:
        version, challenger_threshold = challenger
        computed["challenger_version"] = F.when(valid, F.lit(version))
        computed["challenger_prob"] = F.when(valid, F.col(CHALLENGER_PROB))
        computed["challenger_threshold"] = F.when(valid, F.lit(float(challenger_threshold)))
    rejected_only = set(field_names(DEAD_LETTER_SCHEMA)) - {"reason", "event_time"}
    for name in rejected_only:
        computed[name] = F.when(~valid, F.col(name))
    return tuple(computed.get(name, F.col(name)).alias(name) for name in field_names(LEDGER_SCHEMA))


def ledger_rows(
    parsed: DataFrame,
    model: PipelineModel,
    projection: tuple[Column, ...],
    challenger: PipelineModel | None = None,
    scored_at_ms: int | None = None,
) -> DataFrame:
    """Every parsed message once, scored or rejected, with :data:`LEDGER_SCHEMA`.

    ``parsed`` is :func:`parse_transactions` output, ``projection`` the model version's
    :func:`ledger_projection`. One projection over it: no row is dropped and nothing is
    cached, so a micro-batch reads Kafka and parses once, in the one Spark job that writes
    this. A ``challenger`` (whose version and threshold the projection names) scores the
    same parsed rows in the same pass.

    Every alert's ``scored_at`` is ``scored_at_ms`` (epoch milliseconds; None: now): one
    value per micro-batch, which the writer records with the batch's model choice, so the
    same batch computed again (a replay, or the early alerts of a small batch) gives
    byte-identical rows.
    """
    models = [model] if challenger is None else [model, challenger]
    compiled = all(compiled_fraud_probability(m) is not None for m in models)
    # A compiled logistic regression gives null for null features; Spark ML stages fail.
    scored = with_fraud_prob(model, parsed if compiled else _scoreable(parsed))
    if challenger is not None:
        scored = with_fraud_prob(challenger, scored, CHALLENGER_PROB)
    if scored_at_ms is None:
        scored_at_ms = int(time.time() * 1000)
    return scored.withColumn(SCORED_AT, scoring_time(scored_at_ms)).select(*projection)


@per_application
def _alert_columns() -> tuple[Column, ...]:
    computed = {
        "alert_id": alert_id_of(F.col("model_version"), F.col("transaction_id")),
        "prediction": F.lit(1),
    }
    return tuple(computed.get(name, F.col(name)).alias(name) for name in field_names(ALERT_SCHEMA))


def ledger_alerts(ledger: DataFrame) -> DataFrame:
    """The alerts of a committed ledger, with :data:`ALERT_SCHEMA`."""
    return ledger.where(F.col("is_alert")).select(*_alert_columns(ledger.sparkSession))


@per_application
def _shadow_columns() -> tuple[Column, ...]:
    computed = {
        "challenger_alert": is_alert(F.col("challenger_prob"), F.col("challenger_threshold"))
    }
    return tuple(computed.get(name, F.col(name)).alias(name) for name in field_names(SHADOW_SCHEMA))


def ledger_shadow(ledger: DataFrame) -> DataFrame:
    """The challenger's scores of a committed ledger, with :data:`SHADOW_SCHEMA`."""
    scored = F.col("reason").isNull() & F.col("challenger_version").isNotNull()
    return ledger.where(scored).select(*_shadow_columns(ledger.sparkSession))


@per_application
def _dead_letter_columns() -> tuple[Column, ...]:
    return tuple(F.col(name) for name in field_names(DEAD_LETTER_SCHEMA))


def ledger_dead_letters(ledger: DataFrame) -> DataFrame:
    """The rejected messages of a committed ledger, with :data:`DEAD_LETTER_SCHEMA`."""
    return ledger.where(F.col("reason").isNotNull()).select(
        *_dead_letter_columns(ledger.sparkSession)
    )


@per_application
def _record_columns(key: str, schema_name: str, topic: str | None) -> tuple[Column, ...]:
    schema = {"alert": ALERT_SCHEMA, "dead_letter": DEAD_LETTER_SCHEMA}[schema_name]
    columns = (
        F.col(key).alias("key"),
        F.to_json(F.struct(*field_names(schema)), JSON_KEEP_NULLS).alias("value"),
    )
    return columns if topic is None else (*columns, F.lit(topic).alias("topic"))


def alert_kafka_records(alert_rows: DataFrame, topic: str | None = None) -> DataFrame:
    """Alerts as Kafka records: key ``transaction_id``, value the JSON alert.

    With ``topic``, each record also names its topic (one Kafka write to several topics).
    """
    return alert_rows.select(
        *_record_columns(alert_rows.sparkSession, "transaction_id", "alert", topic)
    )


def dead_letter_kafka_records(letters: DataFrame, topic: str | None = None) -> DataFrame:
    """Dead letters as Kafka records: the original key, value JSON with reason and source."""
    return letters.select(*_record_columns(letters.sparkSession, "key", "dead_letter", topic))
