"""Pytest fixtures for a real Kafka broker, started once per test session.

Import them into ``conftest.py``::

    from fraud_assets_tests.kafka_fixtures import kafka_broker, unique_topics  # noqa: F401

(or load this module with ``-p fraud_assets_tests.kafka_fixtures``). The broker runs on
free ports in a temporary folder, has the project topics, and is stopped at the end of the
session even if tests fail; its JVM is also tied to the pytest process, so a killed pytest
leaves no broker behind.
"""

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fraud_assets.core.paths import ProjectPaths
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.admin import TopicSpec, delete_topics, ensure_topics, project_topics
from fraud_assets.kafka.broker import (
    FAST_START_JVM_OPTIONS,
    BrokerSettings,
    EmbeddedKafka,
    free_port,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
BROKER_JARS_DIR = ProjectPaths(REPO_ROOT).kafka_jars_dir


def free_port_pair(host: str = "127.0.0.1") -> tuple[int, int]:
    """Two distinct free ports (client and controller listeners)."""
    first = free_port(host)
    second = free_port(host)
    while second == first:
        second = free_port(host)
    return first, second


def broker_settings(state_dir: Path, **overrides: object) -> BrokerSettings:
    """Settings for a test broker on free ports, with a small heap and a fast JVM start."""
    port, controller_port = free_port_pair()
    values: dict[str, object] = {
        "state_dir": state_dir,
        "jars_dir": BROKER_JARS_DIR,
        "port": port,
        "controller_port": controller_port,
        "heap": "384m",
        "jvm_options": FAST_START_JVM_OPTIONS,
    }
    values.update(overrides)
    return BrokerSettings(**values)  # type: ignore[arg-type]


def new_topic(broker: EmbeddedKafka, partitions: int = 2, prefix: str = "test") -> str:
    """Create a topic with a unique name on ``broker`` and return its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(name, partitions=partitions)])
    return name


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    """A running broker with the project topics (``transactions`` has 2 partitions)."""
    broker = EmbeddedKafka(broker_settings(tmp_path_factory.mktemp("kafka")), tie_to_parent=True)
    broker.start(timeout_s=90)
    try:
        ensure_topics(
            broker.bootstrap_servers,
            project_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers)),
        )
        yield broker
    finally:
        _close_spark_kafka_producers()
        broker.stop()


def _close_spark_kafka_producers() -> None:
    """Spark's cached Kafka producers would warn every second once the broker is gone."""
    from pyspark.sql import SparkSession

    from fraud_assets.core.spark import close_cached_kafka_producers

    session = SparkSession.getActiveSession()
    if session is not None:
        close_cached_kafka_producers(session)


@pytest.fixture
def kafka_settings(kafka_broker: EmbeddedKafka) -> KafkaSettings:
    """``KafkaSettings`` pointing at the session broker (default topic names)."""
    return KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)


@pytest.fixture
def unique_topics(kafka_broker: EmbeddedKafka) -> Iterator[Callable[..., str]]:
    """A factory of fresh topics owned by one test: ``unique_topics(partitions=2)``.

    The topics are deleted after the test, so the session broker stays small.
    """
    created: list[str] = []

    def make(partitions: int = 2, prefix: str = "test") -> str:
        name = new_topic(kafka_broker, partitions=partitions, prefix=prefix)
        created.append(name)
        return name

    yield make
    if created and kafka_broker.is_running():
        delete_topics(kafka_broker.bootstrap_servers, created)


def audited_rows(count: int, *, start: int = 0) -> list[dict[str, object]]:
    """Deterministic rows with the audited transactions columns (awkward floats included)."""
    from datetime import UTC, timedelta

    from fraud_assets.core.contracts import EVENT_TIME_BASE, PCA_COLUMNS

    rows: list[dict[str, object]] = []
    for index in range(start, start + count):
        seconds = index * 7.5
        row: dict[str, object] = {
            "transaction_id": f"tx-{index:06d}",
            "row_index": index,
            "event_time": (EVENT_TIME_BASE + timedelta(seconds=seconds)).astimezone(UTC),
            "Time": seconds,
        }
        for position, name in enumerate(PCA_COLUMNS, start=1):
            row[name] = (-1) ** position * (0.1 * position + index / 3.0)
        row["Amount"] = round(index * 1.37 + 0.01, 2)
        row["Class"] = 1 if index % 5 == 0 else 0
        rows.append(row)
    return rows


def write_audited_table(folder: Path, rows: list[dict[str, object]], files: int = 2) -> Path:
    """Write ``rows`` as a Spark-like Parquet folder (part files + ``_SUCCESS``).

    Rows are spread over ``files`` part files in reverse order, so readers must sort by
    ``row_index`` themselves.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fraud_assets.core.contracts import PCA_COLUMNS

    schema = pa.schema(
        [
            pa.field("transaction_id", pa.string(), nullable=False),
            pa.field("row_index", pa.int64(), nullable=False),
            pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
        + [pa.field(name, pa.float64()) for name in ("Time", *PCA_COLUMNS, "Amount")]
        + [pa.field("Class", pa.int32())]
    )
    folder.mkdir(parents=True, exist_ok=True)
    ordered = list(reversed(rows))
    for part in range(files):
        chunk = ordered[part::files]
        table = pa.Table.from_pylist(chunk, schema=schema)
        pq.write_table(table, folder / f"part-{part:05d}-fixture.snappy.parquet")
    (folder / "_SUCCESS").write_text("")
    return folder
