"""Resources: the one place fraud_assets reads its environment.

Each setting is a typed field of a ``dg.ConfigurableResource``; the binding below uses
``dg.EnvVar`` when the variable is set (the UI then shows where a value came from) and the
documented default otherwise. Assets and ops receive these resources as typed parameters.
"""

import os
import signal
import threading
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import SparkSession

from fraud_assets.core.kpis import KpiSettings
from fraud_assets.core.paths import ProjectPaths, StreamPaths
from fraud_assets.core.registry import ModelRegistry
from fraud_assets.core.settings import KafkaSettings, SparkSettings, Topics
from fraud_assets.core.spark import point_python_workers, spark_conf
from fraud_assets.setup.dataset import DATASET_SHA256


class ProjectResource(dg.ConfigurableResource):
    """Where data, models, tables and checkpoints live."""

    home: str = "."
    state_dir: str = ""
    """Run state (tables, models, checkpoints); empty means ``<home>/var``."""
    dataset_csv: str = ""
    """The source CSV; empty means ``<home>/data/creditcard.csv``."""
    dataset_sha256: str = DATASET_SHA256
    """Expected SHA-256 of the source CSV; empty to check only its header."""
    fraud_rate_min: float = 0.0005
    fraud_rate_max: float = 0.01
    """The audit's fraud-rate band: frauds are 0.17% of the ULB data; far outside it the
    input is not what the model was built for (a subset for tests sets its own band)."""

    @property
    def paths(self) -> ProjectPaths:
        return ProjectPaths.at(self.home, self.state_dir, self.dataset_csv)

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.paths.models_dir)

    @property
    def stream_paths(self) -> StreamPaths:
        return self.paths.stream_paths

    def table(self, name: str) -> Path:
        return self.paths.tables_dir / name


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster the stream reads from and writes to."""

    bootstrap_servers: str = "127.0.0.1:9092"
    transactions_partitions: int = 2
    transactions_topic: str = Topics.transactions
    alerts_topic: str = Topics.alerts
    dead_letter_topic: str = Topics.dead_letter
    kpis_topic: str = Topics.kpis
    kpi_partials_topic: str = Topics.kpi_partials
    """Internal input of the KPI query (per-micro-batch window counts)."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str = "PLAIN"
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only)."""
    sasl_username: str = ""
    # Bound from dg.EnvVar, so the UI shows the variable's name, never the value; repr=False
    # keeps a directly given value out of reprs and logs too.
    sasl_password: str = Field(default="", repr=False)
    ssl_cafile: str = ""
    """PEM file of the CA that signed the brokers' certificates (SSL protocols only)."""

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            transactions_partitions=self.transactions_partitions,
            topics=Topics(
                transactions=self.transactions_topic,
                alerts=self.alerts_topic,
                dead_letter=self.dead_letter_topic,
                kpis=self.kpis_topic,
                kpi_partials=self.kpi_partials_topic,
            ),
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            ssl_cafile=self.ssl_cafile,
        )


class StreamResource(dg.ConfigurableResource):
    """How the scoring stream delivers alerts (``docs/operations.md``, real-time delivery)."""

    alert_delivery: str = "microbatch"
    """``microbatch``: alerts reach Kafka from each committed micro-batch (seconds);
    ``realtime``: through Spark's real-time mode (milliseconds, at-least-once), the
    micro-batch query still owning the tables, dead letters and KPIs."""
    realtime_checkpoint_interval: str = "60 seconds"
    """How often the real-time query commits its offsets (each commit stalls delivery for
    about half a second; after a crash up to this much is delivered again)."""
    kpi_trigger_interval: str = KpiSettings.trigger_interval
    """How often the KPI query runs: closed windows reach the table and ``fraud_kpis`` at
    most this much later (``make live``, whose replay compresses event time ~120x, uses
    2 s: 10 s there is 20 minutes of event time)."""


class DriftResource(dg.ConfigurableResource):
    """How the drift audit compares live traffic with the promoted model's training data."""

    psi_threshold: float = 0.2
    """PSI above which a feature (or the score) counts as shifted: the usual reading is
    below 0.1 stable, 0.1-0.2 moderate, above 0.2 significant."""
    live_rows: int = 50_000
    """The live sample: about this many of the newest messages of ``transactions``."""
    min_live_rows: int = 1_000
    """Fewer valid live transactions than this: too few to measure, the check passes."""
    bins: int = 10
    """Quantile bins per feature, cut on the training data (deciles)."""
    reference_rows: int = 50_000
    """At most about this many training rows summarise the training distribution."""


class SparkResource(dg.ConfigurableResource):
    """The process's Spark session, built by dagster-pyspark from fraud_assets' conf."""

    master: str = "local[*]"
    """``local[*]``, or a cluster: ``spark://host:7077``, ``k8s://https://...``, ``yarn``."""
    driver_memory: str = "4g"
    shuffle_partitions: int = 4
    home: str = "."
    executor_memory: str = ""
    """Heap of each executor on a cluster; empty: Spark's default (1g)."""
    executor_cores: int = 0
    """Cores of each executor on a cluster; 0: Spark's default."""
    cores_max: int = 0
    """Cores the application may take from a standalone cluster; 0: no limit."""
    driver_host: str = "127.0.0.1"
    """Address executors use to reach the driver (routable when they run elsewhere)."""

    @property
    def settings(self) -> SparkSettings:
        return self.settings_reserving(0)

    def settings_reserving(self, task_slots: int) -> SparkSettings:
        """The settings, with ``task_slots`` held by real-time queries (see SparkSettings)."""
        return SparkSettings(
            master=self.master,
            reserved_task_slots=task_slots,
            driver_memory=self.driver_memory,
            shuffle_partitions=self.shuffle_partitions,
            connector_jars_dir=ProjectPaths.at(self.home).spark_jars_dir,
            executor_memory=self.executor_memory,
            executor_cores=self.executor_cores,
            cores_max=self.cores_max,
            driver_host=self.driver_host,
        )

    def session(self, reserved_task_slots: int = 0) -> SparkSession:
        """The process's session; a new one reserves ``reserved_task_slots`` (real-time).

        An existing session is returned as it is (``core.realtime.check_task_slots`` then
        says whether it can run real-time delivery).
        """
        # Creating the SparkContext replaces the SIGINT handler with PySpark's (cancel all
        # jobs, raise KeyboardInterrupt). In a run, the handler in place is Dagster's: keep
        # it, so terminating the run raises DagsterExecutionInterruptedError in the op (which
        # stops its queries) instead of a KeyboardInterrupt chained to a failed py4j call.
        previous = signal.getsignal(signal.SIGINT)
        conf = spark_conf(self.settings_reserving(reserved_task_slots))
        point_python_workers(conf)
        session = LazyPySparkResource(spark_config=conf).spark_session
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
        return session


def _env(name: str, default: str) -> str | dg.EnvVar:
    return dg.EnvVar(name) if name in os.environ else default


def _env_int(name: str, default: int) -> int | dg.EnvVar:
    return dg.EnvVar.int(name) if name in os.environ else default


def _env_float(name: str, default: float) -> float:
    # dg.EnvVar has a text and an integer form only (a float field refuses it): the value
    # is read here, so the UI shows the number rather than the variable's name.
    return float(os.environ[name]) if name in os.environ else default


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources bound from the environment (see the README's configuration table)."""
    home = _env("FRAUD_HOME", ".")
    return {
        "project": ProjectResource(home=home, state_dir=_env("FRAUD_STATE_DIR", "")),
        "kafka": KafkaResource(
            bootstrap_servers=_env("FRAUD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            transactions_partitions=_env_int("FRAUD_KAFKA_TRANSACTIONS_PARTITIONS", 2),
            transactions_topic=_env("FRAUD_TOPIC_TRANSACTIONS", Topics.transactions),
            alerts_topic=_env("FRAUD_TOPIC_ALERTS", Topics.alerts),
            dead_letter_topic=_env("FRAUD_TOPIC_DEAD_LETTER", Topics.dead_letter),
            kpis_topic=_env("FRAUD_TOPIC_KPIS", Topics.kpis),
            kpi_partials_topic=_env("FRAUD_TOPIC_KPI_PARTIALS", Topics.kpi_partials),
            security_protocol=_env("FRAUD_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            sasl_mechanism=_env("FRAUD_KAFKA_SASL_MECHANISM", "PLAIN"),
            sasl_username=_env("FRAUD_KAFKA_SASL_USERNAME", ""),
            sasl_password=_env("FRAUD_KAFKA_SASL_PASSWORD", ""),
            ssl_cafile=_env("FRAUD_KAFKA_SSL_CAFILE", ""),
        ),
        "stream": StreamResource(
            alert_delivery=_env("FRAUD_ALERT_DELIVERY", "microbatch"),
            realtime_checkpoint_interval=_env("FRAUD_REALTIME_CHECKPOINT_INTERVAL", "60 seconds"),
            kpi_trigger_interval=_env("FRAUD_KPI_TRIGGER_INTERVAL", KpiSettings.trigger_interval),
        ),
        "drift": DriftResource(
            psi_threshold=_env_float("FRAUD_DRIFT_PSI_THRESHOLD", 0.2),
            live_rows=_env_int("FRAUD_DRIFT_LIVE_ROWS", 50_000),
            min_live_rows=_env_int("FRAUD_DRIFT_MIN_LIVE_ROWS", 1_000),
        ),
        "spark": SparkResource(
            master=_env("FRAUD_SPARK_MASTER", "local[*]"),
            driver_memory=_env("FRAUD_SPARK_DRIVER_MEMORY", "4g"),
            shuffle_partitions=_env_int("FRAUD_SPARK_SHUFFLE_PARTITIONS", 4),
            home=home,
            executor_memory=_env("FRAUD_SPARK_EXECUTOR_MEMORY", ""),
            executor_cores=_env_int("FRAUD_SPARK_EXECUTOR_CORES", 0),
            cores_max=_env_int("FRAUD_SPARK_CORES_MAX", 0),
            driver_host=_env("FRAUD_SPARK_DRIVER_HOST", "127.0.0.1"),
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    # One Spark session per run: every step of a job runs in the run's process instead of
    # a process per step, each paying 5-14 s of Spark start-up.
    return dg.Definitions(resources=build_resources(), executor=dg.in_process_executor)
