"""The plain-Python baseline: kafka-python consume, numpy logistic regression, produce alerts.

It scores with the *same* model as Spark: :func:`linear_model_of` extracts the
StandardScaler mean/std and the logistic-regression coefficients/intercept of the trained
PipelineModel, and :func:`fraud_probabilities` applies them as Spark does
(``(x - mean) / std``, a zero std scaling to 0, then the sigmoid of the margin). It runs in
its own process (``python -m fraud_assets.bench.plain_python``), so its RSS and CPU are its
own, and writes a small JSON result when it stops (after ``--expect`` messages, or on
SIGTERM).
"""

import argparse
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fraud_assets.core.contracts import ALERT_SCHEMA, field_names

POLL_RECORDS = 5000


@dataclass(frozen=True)
class LinearModel:
    """A StandardScaler + LogisticRegression pipeline as plain numbers."""

    features: list[str]
    mean: list[float]
    std: list[float]
    coefficients: list[float]
    intercept: float
    threshold: float
    model_version: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> "LinearModel":
        return cls(**json.loads(path.read_text()))


def linear_model_of(model: Any, threshold: float, model_version: str) -> LinearModel:
    """The numbers of a fitted ``core.train`` PipelineModel (assembler, scaler, LR)."""
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.ml.feature import StandardScalerModel, VectorAssembler

    assembler, scaler, lr = model.stages
    if not (
        isinstance(assembler, VectorAssembler)
        and isinstance(scaler, StandardScalerModel)
        and isinstance(lr, LogisticRegressionModel)
    ):
        raise TypeError(f"not a core.train pipeline: {[type(s).__name__ for s in model.stages]}")
    return LinearModel(
        features=list(assembler.getInputCols()),
        mean=[float(x) for x in scaler.mean] if scaler.getWithMean() else [0.0] * lr.numFeatures,
        std=[float(x) for x in scaler.std] if scaler.getWithStd() else [1.0] * lr.numFeatures,
        coefficients=[float(x) for x in lr.coefficients],
        intercept=float(lr.intercept),
        threshold=float(threshold),
        model_version=model_version,
    )


def fraud_probabilities(model: LinearModel, features: np.ndarray) -> np.ndarray:
    """P(fraud) of each row of ``features`` (columns in ``model.features`` order)."""
    std = np.asarray(model.std)
    inverse_std = np.divide(1.0, std, out=np.zeros_like(std), where=std != 0.0)
    scaled = (features - np.asarray(model.mean)) * inverse_std
    margin = scaled @ np.asarray(model.coefficients) + model.intercept
    return 1.0 / (1.0 + np.exp(-margin))


def alert_value(message: dict[str, Any], probability: float, model: LinearModel) -> bytes:
    """The JSON alert of one message (the ``fraud_alerts`` contract; no explanations)."""
    transaction_id = message["transaction_id"]
    alert: dict[str, Any] = dict.fromkeys(field_names(ALERT_SCHEMA))
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
        "scored_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(alert, separators=(",", ":")).encode()


@dataclass
class ConsumerResult:
    """What the consumer did, with the wall-clock (epoch) bounds of its work."""

    consumed: int = 0
    invalid: int = 0
    alerts: int = 0
    first_read_epoch: float | None = None
    last_output_epoch: float | None = None


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
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","), acks="all", linger_ms=1
    )
    result = ConsumerResult()
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        for tp in partitions:
            consumer.position(tp)
        if ready_file is not None:
            ready_file.write_text("ready")
        names = model.features
        while not stop[0] and (expect is None or result.consumed < expect):
            batches = consumer.poll(timeout_ms=100, max_records=POLL_RECORDS)
            messages = []
            for records in batches.values():
                for record in records:
                    try:
                        message = json.loads(record.value)
                        row = [float(message[name]) for name in names]
                    except (ValueError, KeyError, TypeError):
                        result.invalid += 1
                        continue
                    messages.append((message, row))
            if not messages and not batches:
                continue
            if result.first_read_epoch is None:
                result.first_read_epoch = time.time()
            result.consumed += sum(len(r) for r in batches.values())
            if messages:
                probabilities = fraud_probabilities(model, np.array([m[1] for m in messages]))
                for (message, _), probability in zip(messages, probabilities, strict=True):
                    if probability >= model.threshold:
                        producer.send(
                            alerts_topic,
                            key=message["transaction_id"].encode(),
                            value=alert_value(message, float(probability), model),
                        )
                        result.alerts += 1
            producer.flush()
            result.last_output_epoch = time.time()
    finally:
        producer.close(timeout=10)
        consumer.close(autocommit=False)
    return result


def arguments(description: str | None, argv: list[str] | None) -> argparse.Namespace:
    """The command line of a plain-Python consumer process (this one and the fast peer)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--alerts-topic", required=True)
    parser.add_argument("--model", type=Path, required=True, help="LinearModel JSON")
    parser.add_argument("--expect", type=int, default=None, help="stop after this many")
    parser.add_argument("--ready-file", type=Path, default=None)
    parser.add_argument("--result", type=Path, required=True)
    return parser.parse_args(argv)


def write_result(path: Path, result: ConsumerResult) -> None:
    """Write what the consumer did, for the harness."""
    path.write_text(json.dumps(asdict(result)))


def main(argv: list[str] | None = None) -> int:
    """``python -m fraud_assets.bench.plain_python``: the baseline consumer process."""
    args = arguments(main.__doc__, argv)
    stop = [False]

    def request_stop(signum: int, frame: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, request_stop)
    result = run(
        args.bootstrap_servers,
        args.topic,
        args.alerts_topic,
        LinearModel.load(args.model),
        args.expect,
        args.ready_file,
        stop,
    )
    write_result(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
