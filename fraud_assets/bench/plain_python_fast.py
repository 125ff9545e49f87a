"""A fast plain-Python peer: what a user gives up, or not, by choosing Spark on one machine.

One Python process: confluent-kafka (librdkafka) consumes whole batches, orjson parses each
message, numpy scores the batch at once with the same logistic regression as Spark
(:func:`fraud_assets.bench.plain_python.fraud_probabilities`), and the alerts are produced in
batches with ``acks=all``. It validates as little as the plain baseline (a message that does
not parse or lacks a feature is counted invalid and skipped): no dead letters, no tables, no
KPIs, no exactly-once anything. Reported next to the pipelines, never a goal.

``python -m fraud_assets.bench.plain_python_fast`` takes the same arguments as
:mod:`fraud_assets.bench.plain_python` and writes the same result JSON.
"""

import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fraud_assets.bench.plain_python import (
    ConsumerResult,
    LinearModel,
    arguments,
    fraud_probabilities,
    write_result,
)
from fraud_assets.core.contracts import ALERT_SCHEMA, field_names

BATCH = 20_000
"""Messages one ``consume`` call may return."""


def _alert(message: dict[str, Any], probability: float, model: LinearModel, at: str) -> bytes:
    alert: dict[str, Any] = dict.fromkeys(field_names(ALERT_SCHEMA))
    transaction_id = message["transaction_id"]
    alert |= {
        "alert_id": f"{model.model_version}:{transaction_id}",
        "transaction_id": transaction_id,
        "event_time": message["event_time"],
        "Amount": message["Amount"],
        "Class": message.get("Class"),
        "fraud_prob": probability,
        "threshold": model.threshold,
        "model_version": model.model_version,
        "is_alert": True,
        "prediction": 1,
        "scored_at": at,
    }
    return orjson.dumps(alert)


def run(
    bootstrap_servers: str,
    topic: str,
    alerts_topic: str,
    model: LinearModel,
    expect: int | None,
    ready_file: Path | None,
    stop: list[bool],
) -> ConsumerResult:
    """Consume ``topic`` from the beginning and alert until ``expect`` messages or ``stop``."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"bench-fast-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all", "linger.ms": 1})
    result = ConsumerResult()
    names = model.features
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(metadata.partitions)])
        if ready_file is not None:
            ready_file.write_text("ready")
        while not stop[0] and (expect is None or result.consumed < expect):
            records = consumer.consume(num_messages=BATCH, timeout=0.05)
            if not records:
                continue
            if result.first_read_epoch is None:
                result.first_read_epoch = time.time()
            messages, rows = [], []
            for record in records:
                if record.error() is not None:
                    raise RuntimeError(f"consume failed: {record.error()}")
                try:
                    message = orjson.loads(record.value())
                    rows.append([message[name] for name in names])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    result.invalid += 1
                    continue
                messages.append(message)
            result.consumed += len(records)
            if messages:
                features = np.array(rows, dtype=np.float64)
                probabilities = fraud_probabilities(model, features)
                at = datetime.now(UTC).isoformat()
                for index in np.flatnonzero(probabilities >= model.threshold):
                    message = messages[index]
                    producer.produce(
                        alerts_topic,
                        key=message["transaction_id"].encode(),
                        value=_alert(message, float(probabilities[index]), model, at),
                    )
                    result.alerts += 1
                producer.poll(0)
            if producer.flush(60):
                raise RuntimeError("alerts were not acknowledged within 60 s")
            result.last_output_epoch = time.time()
    finally:
        producer.flush(30)
        consumer.close()
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m fraud_assets.bench.plain_python_fast``: the fast peer's consumer process."""
    args = arguments(main.__doc__, argv)
    stop = [False]

    def request_stop(signum: int, frame: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, request_stop)
    model = LinearModel.load(args.model)
    result = run(
        args.bootstrap_servers,
        args.topic,
        args.alerts_topic,
        model,
        args.expect,
        args.ready_file,
        stop,
    )
    write_result(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
