"""The bulk replay: the audited table into the ``transactions`` topic by Spark's Kafka writer.

The paced producer (:mod:`fraud_assets.kafka.producer`, kafka-python) spends ~300 µs of
Python per message; here the JVM builds and sends the messages, about ten times faster
(docs/performance.md, "Replaying the transactions"). What the topic receives is the same:

- **key**: ``transaction_id`` (UTF-8), so Kafka's default partitioner (murmur2, as in
  kafka-python) puts every transaction in the same partition as the producer does;
- **value**: a JSON object with the fields of
  :data:`~fraud_assets.kafka.producer.MESSAGE_FIELDS` in that order, ``event_time`` as the
  producer writes it (``2013-09-01T00:00:00Z``, microseconds only when non-zero), numbers as
  JSON numbers (a null stays ``null``), ``Class`` an integer, left out when null. Numbers are
  written as Java prints a double (``5.0E-4`` where Python writes ``0.0005``): both texts
  parse to the same double, which is what the contract carries; everything else is
  byte-for-byte the producer's (``unit/test_bulk_replay.py`` compares the two);
- **order**: ``row_index`` order within each partition (one writer task per slice, slices
  one after the other), so event time advances as in the source and the KPI watermark drops
  nothing;
- **acknowledgements**: ``acks=all`` with Kafka's idempotent producer; a slice with any
  unacknowledged message fails its Spark job, and the replay raises.

A row the producer refuses (no ``transaction_id``, no ``event_time``, a NaN or infinite
number, which JSON cannot carry) makes the bulk replay refuse the table before sending
anything.
"""

import logging
import math
import sys
import time
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fraud_assets.core.contracts import AUDITED_TRANSACTIONS_SCHEMA
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.sinks import write_kafka
from fraud_assets.core.tables import read_table
from fraud_assets.kafka.admin import check_broker_reachable, list_topics
from fraud_assets.kafka.producer import NUMBER_FIELDS, ReplayError, ReplayResult

log = logging.getLogger(__name__)

SLICE_ROWS = 50_000
"""Rows per Spark job: the progress bar moves per slice; each job costs ~0.2 s."""

# Spark writes the JSON; Kafka's Java producer sends it. Larger batches than its 16 KiB
# default (a message is ~700 bytes); acks=all and idempotence are its defaults, stated here.
PRODUCER_OPTIONS: dict[str, str] = {
    "kafka.acks": "all",
    "kafka.enable.idempotence": "true",
    "kafka.linger.ms": "20",
    "kafka.batch.size": str(1024 * 1024),
}


# --- the message, as Spark columns ------------------------------------------------------------


def event_time_text(event_time: Column) -> Column:
    """ISO-8601 UTC text ending in ``Z``, microseconds only when non-zero (as the producer).

    Rendered in the session time zone, which :func:`bulk_replay` requires to be UTC.
    """
    micros = F.pmod(F.unix_micros(event_time), F.lit(1_000_000))
    return F.concat(
        F.date_format(event_time, "yyyy-MM-dd'T'HH:mm:ss"),
        F.when(micros != 0, F.format_string(".%06d", micros)).otherwise(F.lit("")),
        F.lit("Z"),
    )


def transaction_message_json() -> Column:
    """The ``transactions`` JSON value of an audited row (see the module docstring)."""
    fields = [
        F.col("transaction_id").cast("string").alias("transaction_id"),
        event_time_text(F.col("event_time")).alias("event_time"),
        *(F.col(name).cast("double").alias(name) for name in NUMBER_FIELDS),
    ]
    keep_nulls = {"ignoreNullFields": "false"}
    with_label = F.to_json(F.struct(*fields, F.col("Class").cast("int").alias("Class")), keep_nulls)
    # The label is known only later in production: absent rather than null, as the producer.
    return F.when(F.col("Class").isNull(), F.to_json(F.struct(*fields), keep_nulls)).otherwise(
        with_label
    )


def transaction_messages(audited: DataFrame) -> DataFrame:
    """``key``, ``value`` and ``row_index`` of each audited row's ``transactions`` message."""
    return audited.select(
        F.col("transaction_id").cast("string").alias("key"),
        transaction_message_json().alias("value"),
        F.col("row_index"),
    )


def audited_facts(audited_table: Path) -> tuple[int, int, int | None, int | None]:
    """``(rows, refused, first row_index, last row_index)`` of the audited table.

    ``refused`` counts the rows the producer refuses: no ``transaction_id`` or
    ``event_time``, or a NaN or infinite number. Read with Arrow from the Parquet files (a
    fraction of a second; a Spark job on a cold JVM takes seconds).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    columns = ["transaction_id", "row_index", "event_time", *NUMBER_FIELDS]
    table = ds.dataset(str(audited_table), format="parquet").to_table(columns=columns)
    ids = table["transaction_id"]
    refused = pc.or_(pc.is_null(ids), pc.equal(ids, ""))
    refused = pc.or_(refused, pc.is_null(table["event_time"]))
    for name in NUMBER_FIELDS:
        values = table[name]
        refused = pc.or_(refused, pc.or_(pc.is_nan(values), pc.is_inf(values)))
    refused_count = pc.sum(pc.fill_null(refused, False).cast("int64")).as_py() or 0
    row_index = pc.min_max(table["row_index"]).as_py()
    return table.num_rows, int(refused_count), row_index["min"], row_index["max"]


# --- the replay ---------------------------------------------------------------------------------


def bulk_replay(
    session: SparkSession,
    audited_table: Path,
    kafka: KafkaSettings,
    topic: str | None = None,
    *,
    slice_rows: int = SLICE_ROWS,
    progress: bool = True,
) -> ReplayResult:
    """Send every row of the audited table to ``topic`` in ``row_index`` order.

    Args:
        session: The process's Spark session (its time zone must be UTC, as fraud_assets
            configures it).
        audited_table: The audited transactions table (a Parquet folder).
        kafka: Where to send, with its TLS/SASL settings.
        topic: Destination topic (default: ``kafka.topics.transactions``); it must exist.
        slice_rows: Rows per Spark job.
        progress: Show a progress bar (only when stderr is a terminal).

    Returns:
        Counts and timing of the acknowledged messages.

    Raises:
        BrokerUnreachableError: No broker answers (within a few seconds).
        ReplayError: The table or topic is missing, or a row cannot be sent as a message.
    """
    from tqdm import tqdm

    topic = topic or kafka.topics.transactions
    time_zone = session.conf.get("spark.sql.session.timeZone")
    if time_zone != "UTC":
        raise ReplayError(f"the Spark session's time zone is {time_zone}, not UTC")
    check_broker_reachable(kafka)
    if topic not in list_topics(kafka):
        raise ReplayError(
            f"topic {topic!r} does not exist at {kafka.bootstrap_servers}: create it "
            "(`fraud-assets kafka start` creates the project topics)"
        )
    if not Path(audited_table).exists():
        raise ReplayError(f"the audited transactions table {audited_table} does not exist")
    audited = read_table(session, Path(audited_table), AUDITED_TRANSACTIONS_SCHEMA)
    started = time.monotonic()
    total, refused, first, last = audited_facts(Path(audited_table))
    if refused:
        raise ReplayError(
            f"{refused} rows of {audited_table} cannot be sent as transactions "
            "messages (no transaction_id or event_time, or a NaN/infinite number): audit "
            "the table first"
        )
    messages = transaction_messages(audited)
    slices = _row_index_slices(first, last, total, slice_rows)
    show_bar = progress and sys.stderr.isatty()
    with tqdm(total=total, unit="tx", disable=not show_bar, desc=f"replay -> {topic}") as bar:
        for number, (low, high) in enumerate(slices, start=1):
            slice_started = time.monotonic()
            one_slice = messages.where(F.col("row_index").between(low, high))
            # One task per slice, sorted: Kafka keeps the order of one producer's sends.
            ordered = one_slice.coalesce(1).sortWithinPartitions("row_index")
            write_kafka(ordered.select("key", "value"), kafka, topic, PRODUCER_OPTIONS)
            # Rows per slice are not counted (a job each): row_index is dense, so the share
            # of the index range is close enough for a progress bar.
            bar.update(min(total - bar.n, round(total / len(slices))))
            log.debug(
                "slice %d of %d (row_index %d..%d) sent in %.1f s",
                number,
                len(slices),
                low,
                high,
                time.monotonic() - slice_started,
            )
        bar.update(total - bar.n)
    seconds = time.monotonic() - started
    rate_tps = total / seconds if seconds > 0 else float(total)
    log.info(
        "Replayed %s transactions to %s in %.1f s (%.0f tx/s)", total, topic, seconds, rate_tps
    )
    return ReplayResult(sent=total, seconds=seconds, rate_tps=rate_tps)


def _row_index_slices(
    first: int | None, last: int | None, total: int, slice_rows: int
) -> list[tuple[int, int]]:
    """Inclusive ``row_index`` ranges covering ``first..last`` in about ``slice_rows`` rows."""
    if first is None or last is None or total == 0:
        return []
    count = max(1, math.ceil(total / max(1, slice_rows)))
    width = math.ceil((last - first + 1) / count)
    return [(low, min(last, low + width - 1)) for low in range(first, last + 1, width)]
