"""Shared steps of the integration tests of the scoring stream: data, topics, checks."""

import time
from collections.abc import Callable

from pyspark.sql import functions as F

from fraud_assets.core.contracts import KPI_SCHEMA
from fraud_assets.core.kpis import KpiSettings, batch_kpis, committed_events, start_kpi_query
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.queries import await_query
from fraud_assets.core.reconcile import max_event_time, reconcile_kpis
from fraud_assets.core.settings import KafkaSettings, Topics
from fraud_assets.core.stream import ScoringBatchWriter, StreamSettings, start_scoring_query
from fraud_assets.kafka.io import produce_messages, read_topic
from fraud_assets.kafka.producer import encode_message, transaction_message

BAD_MESSAGES = [
    (b"bad-1", b"{not json", "malformed_json"),
    (b"bad-2", b'{"transaction_id": "x", "event_time": "2013-09-01T00:00:00Z"}', None),
    (b"bad-3", None, "empty_message"),
    (b"bad-4", b"x" * 20_000, "oversized"),
]


def messages(rows):
    return [encode_message(transaction_message(row)) for row in rows.to_dict(orient="records")]


def fresh_run(kafka_broker, unique_topics, tmp_path, partitions):
    """New topics on the session's broker, and tables and checkpoints under ``tmp_path``."""
    topics = Topics(
        transactions=unique_topics(partitions=partitions, prefix="tx"),
        alerts=unique_topics(partitions=1, prefix="alerts"),
        dead_letter=unique_topics(partitions=1, prefix="dlq"),
        kpis=unique_topics(partitions=1, prefix="kpis"),
        kpi_partials=unique_topics(partitions=1, prefix="partials"),
    )
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, topics=topics)
    return kafka, StreamPaths.under(tmp_path / "tables", tmp_path / "checkpoints")


# Every window whose end the last partial's window start has passed is closed: the test
# data span a few minutes of event time.
ALL_CLOSED = KpiSettings(watermark_delay="0 seconds")


def kpis_reconciled(spark, kafka, paths, stream_id, settings: KpiSettings = ALL_CLOSED):
    """Run the KPI query bounded over the partials; compare its windows with batch KPIs."""
    query, _ = start_kpi_query(spark, kafka, paths, settings, bounded=True, stream_id=stream_id)
    await_query(query)
    result = reconcile_kpis(
        spark.read.schema(KPI_SCHEMA).parquet(str(paths.kpi_table)),
        batch_kpis(spark, paths),
        max_event_time(committed_events(spark, paths)),
        settings.watermark_delay,
    )
    return result


def open_window_txns(spark, paths) -> int:
    """Transactions of the windows the final watermark leaves open (the newest one here)."""
    newest = batch_kpis(spark, paths).orderBy(F.col("window_start").desc()).first()
    return int(newest["n_txn"])


def letters_match_the_topic(spark, kafka, paths, letters):
    """Dead letters and quarantine rows are exactly the rejected records of the topic.

    Compared with what the broker holds: each letter's partition and offset point at a
    record whose key and bytes are the letter's.
    """
    source = {
        (r.partition, r.offset): r
        for r in read_topic(kafka.bootstrap_servers, kafka.topics.transactions)
    }
    quarantine = spark.read.parquet(str(paths.quarantine_table)).collect()
    for letter in [*letters, *(row.asDict() for row in quarantine)]:
        record = source[(letter["source_partition"], letter["source_offset"])]
        assert letter["source_topic"] == kafka.topics.transactions
        assert letter["key"] == record.key.decode()
        if record.value is None:
            assert letter["value"] is None
        else:
            assert letter["value"] == record.value.decode()
    coordinates = [(x["source_partition"], x["source_offset"]) for x in letters]
    assert sorted(coordinates) == sorted(
        (row["source_partition"], row["source_offset"]) for row in quarantine
    )
    assert len(set(coordinates)) == len(coordinates)


class CrashBeforeDelivery(ScoringBatchWriter):
    """A writer whose process dies right after the ledger commit (before any other output)."""

    def _deliver(self, batch):
        raise SystemExit("killed after the ledger commit")


def wait_until(condition: Callable[[], bool], query, timeout_s: float = 240.0) -> None:
    """Poll ``condition``; re-raise the query's own failure instead of timing out on it."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if query.exception() is not None:
            raise AssertionError(f"the scoring query failed: {query.exception()}")
        assert time.monotonic() < deadline, "the stream did not commit the batch in time"
        time.sleep(0.5)


def score_in_parts(spark, kafka, paths, writer, parts, before_part: Callable[[int], None]):
    """Run the scoring query unbounded and feed it ``parts`` one at a time.

    ``before_part(index)`` runs before part ``index`` is produced (an operator's change); the
    next part is produced once the writer has scored every row so far, so each change applies
    from a micro-batch boundary. The query is stopped and the delivery awaited at the end.
    """
    query = start_scoring_query(
        spark, kafka, paths, writer, StreamSettings(trigger_interval="1 second"), bounded=False
    )
    try:
        scored = 0
        for index, part in enumerate(parts):
            before_part(index)
            produce_messages(kafka.bootstrap_servers, kafka.topics.transactions, messages(part))
            scored += len(part)
            wait_until(lambda total=scored: writer.totals.scored >= total, query)
    finally:
        query.stop()
        writer.wait_for_delivery()
    assert query.exception() is None
