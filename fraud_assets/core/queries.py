"""Running streaming queries: checkpoints that belong to them, triggers, waiting, progress.

Shared by the scoring, KPI and real-time alert queries. Nothing here deletes a checkpoint:
a checkpoint is a query's memory of what it already processed.
"""

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from fraud_assets.core.registry import write_json_atomic
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.io import end_offsets

log = logging.getLogger(__name__)


class CheckpointMismatchError(RuntimeError):
    """The checkpoint folder belongs to another query; it is never deleted by code."""


def guard_checkpoint(checkpoint_dir: Path, query_name: str, source_topic: str) -> None:
    """Refuse to start on a checkpoint written by a different query or source topic.

    Spark would otherwise resume from offsets of another topic or fail deep inside the
    state store. The identity is recorded next to Spark's own files on first start.
    """
    identity_path = checkpoint_dir / "fraud_assets_query.json"
    identity = {"query_name": query_name, "source_topic": source_topic}
    if identity_path.is_file():
        recorded = json.loads(identity_path.read_text())
        if recorded != identity:
            raise CheckpointMismatchError(
                f"checkpoint {checkpoint_dir} belongs to {recorded}, not {identity}. "
                "Point the query at its own checkpoint folder, or move this one aside "
                "yourself if you really mean to reprocess (code never deletes checkpoints)."
            )
    elif checkpoint_dir.exists() and any(checkpoint_dir.iterdir()):
        raise CheckpointMismatchError(
            f"checkpoint {checkpoint_dir} holds files of an unknown query; refusing to reuse it"
        )
    else:
        write_json_atomic(identity_path, identity)


@contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """``key`` set to ``value`` in ``spark``'s SQL settings inside the block, then restored.

    A streaming query copies its session's settings when it starts, so a query started in
    the block keeps ``value`` for its life while later work sees the setting as it was.
    """
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def start_with_trigger(
    stream: DataStreamWriter, bounded: bool, trigger_interval: str
) -> StreamingQuery:
    """Start ``stream``, bounded (drain what is available, then stop) or not.

    Unbounded, it runs a micro-batch every ``trigger_interval`` until stopped.
    """
    if bounded:
        return stream.trigger(availableNow=True).start()
    return stream.trigger(processingTime=trigger_interval).start()


def await_queries(
    queries: list[StreamingQuery],
    stop_requested: Callable[[], bool] = lambda: False,
    poll_seconds: float = 1.0,
    on_poll: Callable[[], None] | None = None,
) -> None:
    """Wait until every query has ended (bounded mode), one fails, or ``stop_requested()``.

    A failure stops the other queries and is re-raised. Every query is stopped on the way
    out, also when the wait is interrupted (Ctrl-C, run termination).
    """
    try:
        while active := [q for q in queries if q.isActive]:
            if stop_requested():
                log.info("stop requested: stopping %s", [q.name for q in queries])
                break
            if any(q.exception() is not None for q in queries):
                break
            # One snapshot of the active queries: a bounded query may end between two
            # isActive calls (awaitTermination of an ended query returns at once).
            active[0].awaitTermination(poll_seconds)
            if on_poll is not None:
                on_poll()
        for query in queries:
            error = query.exception()
            if error is not None:
                raise RuntimeError(f"streaming query {query.name} failed: {error}") from None
    finally:
        for query in queries:
            if query.isActive:
                query.stop()


def await_query(
    query: StreamingQuery,
    stop_requested: Callable[[], bool] = lambda: False,
    poll_seconds: float = 1.0,
    on_poll: Callable[[], None] | None = None,
) -> None:
    """:func:`await_queries` for one query."""
    await_queries([query], stop_requested, poll_seconds, on_poll)


def stream_rates(progress: dict | None) -> dict[str, float]:
    """Spark's own throughput figures of the last micro-batch (empty before the first)."""
    if not progress:
        return {}
    return {
        "input_rows_per_second": round(float(progress.get("inputRowsPerSecond") or 0.0), 1),
        "processed_rows_per_second": round(float(progress.get("processedRowsPerSecond") or 0.0), 1),
        "trigger_duration_ms": int(progress.get("durationMs", {}).get("triggerExecution", 0)),
    }


def kafka_lag(progress: dict | None, kafka: KafkaSettings) -> dict[str, int] | None:
    """Messages in ``transactions`` not yet read by the query, per partition."""
    if not progress or not progress.get("sources"):
        return None
    consumed = progress["sources"][0].get("endOffset") or {}
    if isinstance(consumed, str):
        consumed = json.loads(consumed)
    topic = kafka.topics.transactions
    latest = end_offsets(kafka, topic, timeout_s=10.0)
    read = consumed.get(topic, {})
    return {str(p): max(0, end - int(read.get(str(p), 0))) for p, end in sorted(latest.items())}


def _newest_batch(log_dir: Path) -> int | None:
    """The newest batch id in one of Spark's checkpoint logs (``offsets/``, ``commits/``)."""
    if not log_dir.is_dir():
        return None
    return max((int(p.name) for p in log_dir.iterdir() if p.name.isdigit()), default=None)


def _log_entry(checkpoint_dir: Path, log: str, batch_id: int) -> list[str]:
    """One batch's lines in a checkpoint log.

    Line 1 is the log version, line 2 the batch's metadata (JSON), then (``offsets/`` only)
    one line per source.
    """
    return (checkpoint_dir / log / str(batch_id)).read_text().splitlines()


def committed_offsets(checkpoint_dir: Path) -> str | None:
    """The source offsets up to which a micro-batch query has committed its batches.

    Read from Spark's checkpoint: the newest batch with a file in ``commits/`` and the end
    offsets it recorded in ``offsets/`` (a JSON ``{topic: {partition: offset}}``, the
    offsets the next batch starts at). None when the query has committed nothing yet.
    """
    committed = _newest_batch(checkpoint_dir / "commits")
    if committed is None:
        return None
    return json.dumps(_source_offsets(checkpoint_dir, committed))


def _source_offsets(checkpoint_dir: Path, batch_id: int) -> dict[str, dict[str, int]]:
    """The end offsets batch ``batch_id`` of a one-source query reads to (``offsets/``)."""
    sources = [line for line in _log_entry(checkpoint_dir, "offsets", batch_id)[2:] if line.strip()]
    if len(sources) != 1:
        raise ValueError(f"{checkpoint_dir} records {len(sources)} sources, expected 1")
    return json.loads(sources[0])


@dataclass(frozen=True)
class BatchOffsets:
    """The Kafka offsets one micro-batch reads: ``{topic: {partition: offset}}`` from, to."""

    start: dict[str, dict[str, int]]
    end: dict[str, dict[str, int]]
    """Exclusive."""

    @property
    def messages(self) -> int:
        """How many messages that is (a partition new in the batch is read from 0)."""
        return sum(
            int(offset) - int(self.start.get(topic, {}).get(partition, 0))
            for topic, partitions in self.end.items()
            for partition, offset in partitions.items()
        )


def batch_offsets(checkpoint_dir: Path, batch_id: int) -> BatchOffsets | None:
    """The offsets micro-batch ``batch_id`` reads, from its query's offset log.

    Spark writes a batch's end offsets before it runs the batch; its start is the previous
    batch's end. None when that cannot be told from the log: the first batch (it starts at
    the query's starting offsets) or a log without the batch.
    """
    if batch_id < 1:
        return None
    try:
        start = _source_offsets(checkpoint_dir, batch_id - 1)
        end = _source_offsets(checkpoint_dir, batch_id)
    except (OSError, ValueError, IndexError):
        return None
    return BatchOffsets(start, end)


def reached(progress: dict | None, topic: str, targets: dict[int, int]) -> bool:
    """Whether a query's last progress has read ``topic`` up to ``targets`` (partition -> end)."""
    if not progress or not progress.get("sources"):
        return False
    consumed = progress["sources"][0].get("endOffset") or {}
    if isinstance(consumed, str):
        consumed = json.loads(consumed)
    read = consumed.get(topic, {})
    return all(int(read.get(str(p), -1)) >= end for p, end in targets.items())


def owes_no_data_batch(checkpoint_dir: Path) -> bool:
    """Whether a stateful query stopped before the batch that evicts by its last watermark.

    A batch that moves the watermark evicts (emits closed windows) only in the batch after
    it, which Spark runs at once without new data (a "no-data batch"). A query stopped
    between the two has committed a batch whose ``nextBatchWatermarkMs`` (``commits/``) is
    ahead of the watermark that batch ran with (``offsets/``), and nothing planned after it.
    After a restart Spark runs no no-data batch until new input arrives (it decides from the
    previous batch's plan, which a new run does not have), so the windows stay open: a
    bounded run ends at once, an unbounded one waits for the next input.
    """
    committed = _newest_batch(checkpoint_dir / "commits")
    if committed is None or _newest_batch(checkpoint_dir / "offsets") != committed:
        return False  # nothing committed yet, or a planned batch that a restart re-runs
    ran_with = json.loads(_log_entry(checkpoint_dir, "offsets", committed)[1])
    next_watermark = json.loads(_log_entry(checkpoint_dir, "commits", committed)[1])
    return int(next_watermark.get("nextBatchWatermarkMs", 0)) > int(
        ran_with.get("batchWatermarkMs", 0)
    )
