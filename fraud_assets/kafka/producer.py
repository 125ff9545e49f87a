"""The replay producer: audited transactions, in source order, into the ``transactions`` topic.

Each row of the audited table becomes one JSON message (the contract in
``fraud_assets.core.contracts``) keyed by its ``transaction_id``. A replay either reports
every message as acknowledged by the broker or raises: it never reports success with lost
messages.
"""

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraud_assets.core.contracts import PCA_COLUMNS
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.admin import check_broker_reachable, list_topics

log = logging.getLogger(__name__)

MESSAGE_FIELDS: tuple[str, ...] = (
    "transaction_id",
    "event_time",
    "Time",
    *PCA_COLUMNS,
    "Amount",
    "Class",
)
"""Fields of a ``transactions`` message, in the order they are written."""

NUMBER_FIELDS: tuple[str, ...] = ("Time", *PCA_COLUMNS, "Amount")
_AUDITED_COLUMNS: tuple[str, ...] = (
    "row_index",
    "transaction_id",
    "event_time",
    *NUMBER_FIELDS,
    "Class",
)


class ReplayError(RuntimeError):
    """The replay could not run, or some messages were not acknowledged."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay delivered: acknowledged messages, wall time and achieved rate."""

    sent: int
    seconds: float
    rate_tps: float


# --- messages -------------------------------------------------------------------------------


def format_event_time(value: datetime) -> str:
    """ISO-8601 UTC text ending in ``Z``; microseconds only when non-zero.

    Raises:
        ValueError: ``value`` is naive (its time zone would be a guess).
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"event_time must be time-zone aware (UTC), got naive {value!r}")
    utc = value.astimezone(UTC)
    # A plain datetime of the whole seconds: a pandas Timestamp would add its nanoseconds.
    whole_seconds = datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
    text = whole_seconds.isoformat()
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{name} is {number}, which JSON cannot carry")
    return number


def transaction_message(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``transactions`` message of one audited row.

    ``Time``, ``V1``..``V28`` and ``Amount`` become Python floats (their JSON text is
    ``repr(float)``, which parses back to the same double); ``Class`` an int. ``Class``
    is the label, known only later in production: it is left out when absent or null.

    Raises:
        ValueError: A missing id, a naive or missing ``event_time``, or a NaN/infinite number.
    """
    transaction_id = row.get("transaction_id")
    if transaction_id is None or str(transaction_id) == "":
        raise ValueError(f"row has no transaction_id: {dict(row)!r}")
    event_time = row.get("event_time")
    if not isinstance(event_time, datetime):
        raise ValueError(f"event_time of {transaction_id} is not a datetime: {event_time!r}")
    message: dict[str, Any] = {
        "transaction_id": str(transaction_id),
        "event_time": format_event_time(event_time),
    }
    for name in NUMBER_FIELDS:
        message[name] = _number(name, row.get(name))
    label = row.get("Class")
    if label is not None and not (isinstance(label, float) and math.isnan(label)):
        message["Class"] = int(label)
    return message


def encode_message(message: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """``(key, value)`` bytes of a message: key = transaction_id, value = compact JSON."""
    key = str(message["transaction_id"]).encode("utf-8")
    value = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return key, value


# --- pacing ---------------------------------------------------------------------------------


class TokenBucket:
    """Paces sends to ``rate`` per second, allowing bursts of up to ``capacity`` sends.

    The bucket starts full. ``rate <= 0`` means unlimited. The clock is injectable so the
    maths is testable without sleeping.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.capacity = max(1.0, capacity if capacity is not None else rate / 10.0)
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock()

    def delay(self) -> float:
        """Take one token; the seconds the caller must wait before sending (0 if none)."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        # In debt: the token is borrowed and paid back after -tokens / rate seconds.
        return -self._tokens / self.rate

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Take one token, sleeping as long as needed."""
        seconds = self.delay()
        if seconds > 0:
            sleep(seconds)


# --- reading the audited table ----------------------------------------------------------------


def read_audited_rows(
    audited_parquet: Path,
    *,
    limit: int | None = None,
    transaction_ids: set[str] | None = None,
    batch_size: int = 10_000,
    offset: int = 0,
) -> tuple[int, Iterator[dict[str, Any]]]:
    """The audited rows to replay, ordered by ``row_index``: ``(count, rows)``.

    Reads a Parquet folder written by Spark (``_SUCCESS`` and hidden files are ignored).
    ``offset`` skips the first rows (after the id filter), ``limit`` keeps the next ones.

    Raises:
        ReplayError: The folder does not exist, or lacks the audited columns.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if not Path(audited_parquet).exists():
        raise ReplayError(f"the audited transactions table {audited_parquet} does not exist")
    dataset = ds.dataset(str(audited_parquet), format="parquet")
    present = set(dataset.schema.names)
    absent = [name for name in _AUDITED_COLUMNS if name not in present]
    if absent:
        raise ReplayError(f"{audited_parquet} is not an audited transactions table: no {absent}")
    row_filter = None
    if transaction_ids is not None:
        row_filter = ds.field("transaction_id").isin(sorted(transaction_ids))
    table = dataset.to_table(columns=list(_AUDITED_COLUMNS), filter=row_filter)
    table = table.take(pc.sort_indices(table, sort_keys=[("row_index", "ascending")]))
    table = table.slice(max(0, offset), None if limit is None else max(0, limit))

    def rows() -> Iterator[dict[str, Any]]:
        for batch in table.to_batches(max_chunksize=batch_size):
            yield from batch.to_pylist()

    return table.num_rows, rows()


# --- the replay -------------------------------------------------------------------------------


def _compression_type() -> str | None:
    """``lz4`` when kafka-python can compress with it (needs the optional ``lz4`` package)."""
    from kafka.codec import has_lz4

    return "lz4" if has_lz4() else None


class _DeliveryTracker:
    """Acknowledged and failed sends of one replay.

    The callbacks run on the producer's I/O thread, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acknowledged = 0
        self.failed = 0
        self.errors: list[BaseException] = []

    def on_success(self, _metadata: Any) -> None:
        with self._lock:
            self.acknowledged += 1

    def on_error(self, error: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(error)


def replay(
    audited_parquet: Path,
    bootstrap_servers: str | KafkaSettings,
    topic: str,
    *,
    limit: int | None = None,
    rate: float = 0.0,
    progress: bool = True,
    transaction_ids: set[str] | None = None,
    flush_timeout_s: float = 120.0,
    offset: int = 0,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> ReplayResult:
    """Send the audited transactions to ``topic``, in ``row_index`` order.

    Args:
        audited_parquet: The audited transactions table (a Parquet folder).
        bootstrap_servers: ``host:port[,host:port...]`` (plaintext), or the whole
            :class:`KafkaSettings` (with its TLS/SASL settings).
        topic: Destination topic; it must exist (topics are created explicitly).
        limit: Send only the first ``limit`` rows (after the id filter).
        rate: Transactions per second; 0 sends as fast as possible.
        progress: Show a progress bar (only when stderr is a terminal).
        transaction_ids: Send only these transactions.
        flush_timeout_s: How long to wait for the last acknowledgements.
        offset: Skip the first ``offset`` rows (after the id filter): resume a replay.
        transform: Applied to each row before it becomes a message (the live replay's
            laps give the rows fresh ids and later event times).
        stop_requested: Checked before each send; once true, the replay stops early and
            returns what was acknowledged so far.

    Returns:
        Counts and timing of the acknowledged messages.

    Raises:
        BrokerUnreachableError: No broker answers (within a few seconds).
        ReplayError: The table or topic is missing, or any message was not acknowledged.
    """
    from kafka import KafkaProducer
    from tqdm import tqdm

    check_broker_reachable(bootstrap_servers)
    if topic not in list_topics(bootstrap_servers):
        raise ReplayError(
            f"topic {topic!r} does not exist at {bootstrap_servers}: create it "
            "(`fraud-assets kafka start` creates the project topics)"
        )
    total, rows = read_audited_rows(
        Path(audited_parquet), limit=limit, transaction_ids=transaction_ids, offset=offset
    )
    producer = KafkaProducer(
        **KafkaSettings.of(bootstrap_servers).client_kwargs(),
        client_id="fraud-assets-replay",
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        compression_type=_compression_type(),
        # A broker that disappears mid-replay fails the sends instead of blocking forever.
        max_block_ms=30_000,
    )
    tracker = _DeliveryTracker()
    bucket = TokenBucket(rate)
    show_bar = progress and sys.stderr.isatty()
    started = time.monotonic()
    sent = 0
    try:
        with tqdm(total=total, unit="tx", disable=not show_bar, desc=f"replay -> {topic}") as bar:
            for row in rows:
                if tracker.failed:
                    break  # stop early: the result will be an error anyway
                if stop_requested():
                    break
                bucket.wait()
                if transform is not None:
                    row = transform(row)
                key, value = encode_message(transaction_message(row))
                future = producer.send(topic, key=key, value=value)
                future.add_callback(tracker.on_success)
                future.add_errback(tracker.on_error)
                sent += 1
                bar.update(1)
            producer.flush(timeout=flush_timeout_s)
    finally:
        producer.close(timeout=10)
    seconds = time.monotonic() - started
    if tracker.failed or tracker.acknowledged != sent:
        raise ReplayError(
            f"replay to {topic!r} lost messages: {tracker.acknowledged} of {sent} sent were "
            f"acknowledged, {tracker.failed} failed; first errors: {tracker.errors!r}"
        )
    rate_tps = sent / seconds if seconds > 0 else float(sent)
    log.info("Replayed %s transactions to %s in %.1f s (%.0f tx/s)", sent, topic, seconds, rate_tps)
    return ReplayResult(sent=sent, seconds=seconds, rate_tps=rate_tps)
