"""The load generator: pre-serialized transaction messages, produced with confluent-kafka.

Messages are encoded once, before any timing, with the producer's own
:func:`~fraud_assets.kafka.producer.transaction_message` and
:func:`~fraud_assets.kafka.producer.encode_message` (the ``transactions`` contract), so
the generator only hands bytes to librdkafka (~1-2 µs a message) and is never the
bottleneck. A paced run sets each record's CreateTime itself and records it for the
messages whose alerts are timed, so latency is measured between two Kafka timestamps.

Paced runs execute in their own process (``python -m fraud_assets.bench.generator``) so
that they neither share the GIL with the pipeline under test nor count in its CPU.
"""

import argparse
import json
import pickle
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fraud_assets.kafka.producer import encode_message, transaction_message

Message = tuple[bytes, bytes]


class GeneratorError(RuntimeError):
    """Messages were not acknowledged by the broker."""


@dataclass(frozen=True)
class GeneratorResult:
    """What one generator run delivered."""

    sent: int
    seconds: float
    rate_tps: float
    offered_tps: float = 0.0
    """The pacing target (0: as fast as possible)."""


def encode_rows(rows: Iterable[Mapping[str, Any]], transaction_ids: Iterable[str] | None = None):
    """``(key, value)`` bytes of audited rows, optionally under new transaction ids."""
    if transaction_ids is None:
        return [encode_message(transaction_message(row)) for row in rows]
    return [
        encode_message(transaction_message({**row, "transaction_id": tid}))
        for row, tid in zip(rows, transaction_ids, strict=True)
    ]


def _producer(bootstrap_servers: str, low_latency: bool) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "fraud-assets-bench-generator",
            "acks": "all",
            # Paced runs measure latency: a message waits at most 1 ms in the client.
            "linger.ms": 1 if low_latency else 20,
            "batch.size": 256 * 1024 if low_latency else 1024 * 1024,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1024 * 1024,
        }
    )


class _Deliveries:
    def __init__(self) -> None:
        self.failed = 0
        self.first_error: str | None = None

    def __call__(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failed += 1
            self.first_error = self.first_error or str(error)


def _send(producer: Any, topic: str, key: bytes, value: bytes, on_delivery: Any, **kw: Any):
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery, **kw)
            return
        except BufferError:  # the client queue is full: let librdkafka drain it
            producer.poll(0.01)


def _finish(producer: Any, deliveries: _Deliveries, topic: str, sent: int) -> None:
    remaining = producer.flush(120)
    if remaining or deliveries.failed:
        raise GeneratorError(
            f"{deliveries.failed + remaining} of {sent} messages to {topic!r} were not "
            f"acknowledged; first error: {deliveries.first_error}"
        )


def produce_all(bootstrap_servers: str, topic: str, messages: list[Message]) -> GeneratorResult:
    """Produce ``messages`` as fast as the broker takes them (the pre-loaded backlog)."""
    producer = _producer(bootstrap_servers, low_latency=False)
    deliveries = _Deliveries()
    started = time.monotonic()
    for key, value in messages:
        _send(producer, topic, key, value, deliveries)
        producer.poll(0)
    _finish(producer, deliveries, topic, len(messages))
    seconds = time.monotonic() - started
    return GeneratorResult(len(messages), seconds, len(messages) / max(seconds, 1e-9))


def produce_paced(
    bootstrap_servers: str,
    topic: str,
    messages: list[Message],
    rate: float,
    timed_keys: set[bytes],
) -> tuple[GeneratorResult, dict[str, int]]:
    """Produce ``messages`` at ``rate`` per second; the CreateTime (ms) of ``timed_keys``.

    The schedule is absolute (message ``i`` is due at ``i / rate`` seconds), so a late
    wake-up is caught up at once instead of lowering the offered rate.
    """
    producer = _producer(bootstrap_servers, low_latency=True)
    deliveries = _Deliveries()
    created: dict[str, int] = {}
    total = len(messages)
    started = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            key, value = messages[sent]
            create_ms = int(time.time() * 1000)
            _send(producer, topic, key, value, deliveries, timestamp=create_ms)
            if key in timed_keys:
                created[key.decode()] = create_ms
            sent += 1
        producer.poll(0)
        time.sleep(0.0005)
    _finish(producer, deliveries, topic, total)
    seconds = time.monotonic() - started
    return GeneratorResult(total, seconds, total / max(seconds, 1e-9), rate), created


# --- the paced generator process ---------------------------------------------------------


def write_job(path: Path, messages: list[Message], timed_keys: set[bytes]) -> None:
    """Save the messages of one paced run for :func:`main` (a private temporary file)."""
    with path.open("wb") as handle:
        pickle.dump({"messages": messages, "timed_keys": timed_keys}, handle, protocol=5)


def main(argv: list[str] | None = None) -> int:
    """``python -m fraud_assets.bench.generator``: one paced run, its result as JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--job", type=Path, required=True, help="file from write_job()")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    with args.job.open("rb") as handle:
        job = pickle.load(handle)  # noqa: S301  (our own file, written by write_job)
    result, created = produce_paced(
        args.bootstrap_servers, args.topic, job["messages"], args.rate, job["timed_keys"]
    )
    args.result.write_text(json.dumps({"result": asdict(result), "create_ms": created}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
