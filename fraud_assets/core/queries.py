"""Running streaming queries: checkpoints that belong to them, triggers, waiting, progress.

Shared by the scoring, KPI and real-time alert queries. Nothing here deletes a checkpoint:
a checkpoint is a query's memory of what it already processed.
"""

import json
import logging
from collections.abc import Callable
from pathlib import Path

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


def committed_offsets(checkpoint_dir: Path) -> str | None:
    """The source offsets up to which a micro-batch query has committed its batches.

    Read from Spark's checkpoint: the newest batch with a file in ``commits/`` and the end
    offsets it recorded in ``offsets/`` (a JSON ``{topic: {partition: offset}}``, the
    offsets the next batch starts at). None when the query has committed nothing yet.
    """
    commits = checkpoint_dir / "commits"
    committed = (
        [int(p.name) for p in commits.iterdir() if p.name.isdigit()] if commits.is_dir() else []
    )
    if not committed:
        return None
    lines = (checkpoint_dir / "offsets" / str(max(committed))).read_text().splitlines()
    # Line 1 is the log version, line 2 the batch metadata, then one line per source.
    sources = [line for line in lines[2:] if line.strip()]
    if len(sources) != 1:
        raise ValueError(f"{checkpoint_dir} records {len(sources)} sources, expected 1")
    json.loads(sources[0])  # fail here, not in Spark, on a malformed log
    return sources[0]


def reached(progress: dict | None, topic: str, targets: dict[int, int]) -> bool:
    """Whether a query's last progress has read ``topic`` up to ``targets`` (partition -> end)."""
    if not progress or not progress.get("sources"):
        return False
    consumed = progress["sources"][0].get("endOffset") or {}
    if isinstance(consumed, str):
        consumed = json.loads(consumed)
    read = consumed.get(topic, {})
    return all(int(read.get(str(p), -1)) >= end for p, end in targets.items())
