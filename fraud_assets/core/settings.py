"""Typed settings shared by the CLI, the Dagster resources and the tests.

Plain frozen dataclasses: nothing here reads the environment. Dagster resources
(``fraud_assets/defs/resources.py``) build them from ``dg.EnvVar`` values; the CLI builds
them from its flags.
"""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Topics:
    """Kafka topic names (the contracts are in ``fraud_assets.core.contracts``)."""

    transactions: str = "transactions"
    alerts: str = "fraud_alerts"
    dead_letter: str = "transactions_dlq"
    kpis: str = "fraud_kpis"


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka, for Spark and for kafka-python alike."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: Topics = field(default_factory=Topics)
    transactions_partitions: int = 2

    def spark_options(self) -> dict[str, str]:
        """Options for ``spark.read/readStream/write.format("kafka")``."""
        return {"kafka.bootstrap.servers": self.bootstrap_servers}

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for kafka-python clients."""
        return {"bootstrap_servers": self.bootstrap_servers.split(",")}


@dataclass(frozen=True)
class SparkSettings:
    """How to build the (one per process) Spark session."""

    master: str = "local[*]"
    app_name: str = "fraud_assets"
    driver_memory: str = "4g"
    shuffle_partitions: int = 4
    connector_jars_dir: Path | None = None
    """Folder of the Spark Kafka connector jars (``var/jars/spark-kafka``)."""
    extra_conf: tuple[tuple[str, str], ...] = ()
