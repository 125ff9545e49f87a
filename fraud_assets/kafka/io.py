"""Reading whole topics and writing a few messages: for the demo, the audits and the tests.

``read_topic`` captures each partition's end offset when it starts and reads up to it, so
it terminates deterministically even while producers keep writing. It joins no consumer
group and commits nothing.

``bootstrap_servers`` is a ``host:port[,...]`` string (plaintext) or a whole
:class:`~fraud_assets.core.settings.KafkaSettings` carrying the TLS/SASL settings.
"""

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.admin import BrokerUnreachableError, check_broker_reachable


class TopicReadError(RuntimeError):
    """A topic could not be read completely (missing topic, or timeout)."""


class ProduceError(RuntimeError):
    """At least one message was not acknowledged by the broker."""


@dataclass(frozen=True)
class Record:
    """One Kafka message as stored: where it is, when it was written, key and value bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@contextlib.contextmanager
def _consumer(bootstrap_servers: str | KafkaSettings, timeout_s: float) -> Iterator[Any]:
    from kafka import KafkaConsumer

    request_timeout_ms = max(5000, int(min(timeout_s, 30.0) * 1000))
    consumer = KafkaConsumer(
        **KafkaSettings.of(bootstrap_servers).client_kwargs(),
        client_id="fraud-assets-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=request_timeout_ms,
        # Must stay below request_timeout_ms (a kafka-python config rule).
        fetch_max_wait_ms=200,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        yield consumer
    finally:
        consumer.close(autocommit=False)


def _partitions(consumer: Any, topic: str, timeout_s: float) -> list[Any]:
    from kafka import TopicPartition

    deadline = time.monotonic() + timeout_s
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        if time.monotonic() >= deadline:
            raise TopicReadError(f"topic {topic!r} does not exist (or has no partitions)")
        time.sleep(0.2)


def end_offsets(
    bootstrap_servers: str | KafkaSettings, topic: str, timeout_s: float = 30.0
) -> dict[int, int]:
    """The next offset to be written in each partition of ``topic``."""
    check_broker_reachable(bootstrap_servers)
    with _consumer(bootstrap_servers, timeout_s) as consumer:
        partitions = _partitions(consumer, topic, min(timeout_s, 5.0))
        ends = consumer.end_offsets(partitions, timeout_ms=int(timeout_s * 1000))
    return {tp.partition: int(offset) for tp, offset in sorted(ends.items())}


def total_messages(
    bootstrap_servers: str | KafkaSettings, topic: str, timeout_s: float = 30.0
) -> int:
    """Messages currently in ``topic`` (end minus beginning offsets, summed over partitions).

    Exact for topics written without transactions and not yet compacted or expired.
    """
    check_broker_reachable(bootstrap_servers)
    with _consumer(bootstrap_servers, timeout_s) as consumer:
        partitions = _partitions(consumer, topic, min(timeout_s, 5.0))
        ends = consumer.end_offsets(partitions, timeout_ms=int(timeout_s * 1000))
        starts = consumer.beginning_offsets(partitions, timeout_ms=int(timeout_s * 1000))
    return sum(int(ends[tp]) - int(starts[tp]) for tp in partitions)


def read_topic(
    bootstrap_servers: str | KafkaSettings, topic: str, timeout_s: float = 60.0
) -> list[Record]:
    """Every message in ``topic`` up to the end offsets seen at the start of the call.

    Returns:
        The records ordered by (partition, offset).

    Raises:
        BrokerUnreachableError: No broker answers (within a few seconds).
        TopicReadError: The topic does not exist, or was not read to its end in time.
    """
    check_broker_reachable(bootstrap_servers)
    deadline = time.monotonic() + timeout_s
    records: list[Record] = []
    with _consumer(bootstrap_servers, timeout_s) as consumer:
        partitions = _partitions(consumer, topic, min(timeout_s, 5.0))
        ends = consumer.end_offsets(partitions, timeout_ms=int(timeout_s * 1000))
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            # position() can be past the end offset captured at the start (new writes);
            # the records beyond it are dropped below so the result is a snapshot.
            for tp in list(pending):
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if not pending:
                break
            if time.monotonic() >= deadline:
                raise TopicReadError(
                    f"reading {topic!r} timed out after {timeout_s:.0f} s with "
                    f"{len(records)} records read; partitions not at their end: "
                    f"{sorted(tp.partition for tp in pending)}"
                )
            batches = consumer.poll(timeout_ms=500, max_records=10_000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset < ends[tp]:
                        records.append(
                            Record(
                                topic=message.topic,
                                partition=message.partition,
                                offset=message.offset,
                                timestamp_ms=message.timestamp,
                                key=message.key,
                                value=message.value,
                            )
                        )
    records.sort(key=lambda record: (record.partition, record.offset))
    return records


def produce_messages(
    bootstrap_servers: str | KafkaSettings,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    timeout_s: float = 60.0,
) -> int:
    """Write ``(key, value)`` messages to ``topic`` and wait until all are acknowledged.

    Returns:
        The number of messages written.

    Raises:
        BrokerUnreachableError: No broker answers (within a few seconds).
        ProduceError: Any message was not acknowledged.
    """
    from kafka import KafkaProducer

    check_broker_reachable(bootstrap_servers)
    producer = KafkaProducer(
        **KafkaSettings.of(bootstrap_servers).client_kwargs(),
        client_id="fraud-assets-writer",
        acks="all",
        linger_ms=5,
        max_block_ms=int(min(timeout_s, 30.0) * 1000),
    )
    futures = []
    try:
        for key, value in messages:
            futures.append(producer.send(topic, key=key, value=value))
        producer.flush(timeout=timeout_s)
        errors = []
        for future in futures:
            try:
                future.get(timeout=max(1.0, timeout_s))
            except Exception as error:  # every delivery failure counts, whatever its type
                errors.append(error)
        if errors:
            raise ProduceError(
                f"{len(errors)} of {len(futures)} messages to {topic!r} were not acknowledged; "
                f"first error: {errors[0]!r}"
            )
    finally:
        producer.close(timeout=10)
    return len(futures)


__all__ = [
    "BrokerUnreachableError",
    "KafkaSettings",
    "ProduceError",
    "Record",
    "TopicReadError",
    "end_offsets",
    "produce_messages",
    "read_topic",
    "total_messages",
]
