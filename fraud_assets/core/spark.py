"""The one Spark session of a process, configured the same way everywhere."""

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from fraud_assets.core.settings import SparkSettings

SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
"""Partitions of a shuffle, and the state partitions of a stateful query whose checkpoint is
new (:attr:`fraud_assets.core.kpis.KpiSettings.state_partitions`)."""

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
"""The driver JVM's log configuration (a file of this package)."""


class SparkSetupError(RuntimeError):
    """Spark cannot be configured as asked (for example the connector jars are missing)."""


def require_connector_jars(jars_dir: Path) -> list[Path]:
    """The Kafka connector jars resolved by ``make setup``, failing fast when absent."""
    jars = sorted(jars_dir.glob("*.jar")) if jars_dir.is_dir() else []
    if not any(jar.name.startswith("spark-sql-kafka-0-10") for jar in jars):
        raise SparkSetupError(
            f"The Spark Kafka connector is missing from {jars_dir}. "
            "Run `make setup` (or `fraud-assets setup`) to resolve it from Maven Central."
        )
    return jars


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def master_url(settings: SparkSettings) -> str:
    """The master URL, with ``local[*]`` widened by the reserved task slots.

    A real-time query's tasks hold their slots while mostly waiting on Kafka, so on one
    machine they are extra threads, not extra cores.
    """
    if settings.master == "local[*]" and settings.reserved_task_slots > 0:
        return f"local[{(os.cpu_count() or 1) + settings.reserved_task_slots}]"
    return settings.master


def spark_conf(settings: SparkSettings) -> dict[str, str]:
    """Every Spark setting fraud_assets relies on, as one dict.

    Shared by :func:`get_spark` and the Dagster ``PySparkResource`` so batch assets,
    the stream and the tests run with identical semantics.
    """
    conf = {
        "spark.master": master_url(settings),
        "spark.app.name": settings.app_name,
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.session.timeZone": "UTC",
        # Standard UTC-adjusted Parquet timestamps (not legacy INT96), so pyarrow and other
        # readers see tz-aware UTC event times.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        SHUFFLE_PARTITIONS: str(settings.shuffle_partitions),
        # The default optimizer rule can re-run from_json once per extracted field
        # (apache/spark PR #42376): 61 parses of one message instead of 1.
        "spark.sql.optimizer.enableJsonExpressionOptimization": "false",
        # Constraint propagation re-derives every predicate through every alias: over the
        # scoring expression (a 30-term sum referenced by fraud_prob, is_alert and the alert
        # filter) it grew to millions of expression copies and filled a 4 GB heap within one
        # micro-batch. The plans here have no joins for inferred filters to help.
        "spark.sql.constraintPropagation.enabled": "false",
        # query.stop() during a Python foreachBatch can overflow the default thread stack
        # inside Spark's interruption check; 32 MiB made every stop clean. The log
        # configuration is Spark's default at WARN, without its start-up banner.
        "spark.driver.extraJavaOptions": f"-Xss32m -Dlog4j2.configurationFile={LOG4J_CONFIG}",
        # Plans name 30+ feature columns: print them whole rather than warn that the text
        # of a plan was truncated (only logs and explain() use it).
        "spark.sql.debug.maxToStringFields": "200",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.streaming.stopTimeout": "60s",
        # PySpark 4 records the Python call site of every DataFrame and Column call for
        # error messages: four more JVM round trips per call, which made up most of a
        # micro-batch's driver time (docs/performance.md). Errors still say what failed.
        "spark.python.sql.dataFrameDebugging.enabled": "false",
        # Executors (local or on a cluster) reach the driver at this address. Loopback binds
        # to loopback only; any other address binds every interface, so the name a
        # container or a multi-homed host advertises is served whatever it resolves to.
        "spark.driver.host": settings.driver_host,
        "spark.driver.bindAddress": (
            settings.driver_host if is_loopback(settings.driver_host) else "0.0.0.0"
        ),
        # Python workers must be this environment's interpreter, not the system Python.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    # Cluster sizing: unset keys keep Spark's defaults (ignored in local mode).
    for key, value in (
        ("spark.executor.memory", settings.executor_memory),
        ("spark.executor.cores", settings.executor_cores),
        ("spark.cores.max", settings.cores_max),
    ):
        if value:
            conf[key] = str(value)
    jars_dir = settings.connector_jars_dir
    if jars_dir is not None and jars_dir.is_dir():
        # Listed one by one: SparkContext does not expand globs in spark.jars. Batch work
        # runs without them; require_connector_jars() fails fast before a Kafka query.
        conf["spark.jars"] = ",".join(str(jar) for jar in sorted(jars_dir.glob("*.jar")))
    conf.update(dict(settings.extra_conf))
    return conf


def point_python_workers(conf: dict[str, str]) -> None:
    """Make Python workers (xgboost's training task) run ``conf``'s interpreter.

    PySpark's ``SparkContext`` takes the workers' interpreter from ``PYSPARK_PYTHON`` in this
    process's environment, not from ``spark.pyspark.python`` (which only ``spark-submit``
    reads): without this, workers start the system ``python3``, which lacks this project's
    packages. Call it before the session is created.
    """
    os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]


def get_spark(settings: SparkSettings) -> SparkSession:
    """The process-wide Spark session (created on first use, reused afterwards)."""
    builder = SparkSession.builder
    conf = spark_conf(settings)
    point_python_workers(conf)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def close_cached_kafka_producers(session: SparkSession) -> bool:
    """Close the Kafka producers Spark keeps for its Kafka sinks; whether it could.

    Spark caches one producer per configuration for the life of the JVM (closed only after
    10 idle minutes), and stopping the session does not close them: once their broker is
    gone, each warns every second that it cannot connect. Call this before stopping a broker
    this process wrote to with Spark. Spark offers no public API for it: this calls
    ``InternalKafkaProducerPool.reset()`` (Spark 3.1-4.x) and returns False if it is absent.
    """
    try:
        producer_package = session.sparkContext._jvm.org.apache.spark.sql.kafka010.producer
        pool = getattr(getattr(producer_package, "InternalKafkaProducerPool$"), "MODULE$")
        pool.reset()
    except Exception:  # another Spark version, or no connector: nothing to close
        return False
    return True


JVM_EXIT_TIMEOUT_S = 30.0
"""How long :func:`stop_spark` waits for the driver JVM to exit before killing it."""


def stop_spark(timeout_s: float = JVM_EXIT_TIMEOUT_S) -> int | None:
    """Stop this process's Spark session and its driver JVM; the JVM's PID, if one ran.

    ``SparkSession.stop()`` leaves PySpark's gateway JVM running until this Python process
    exits, and the JVM then exits on its own a moment *after* it (it watches its stdin): a
    command that promises to leave no process behind (the benchmark, the demo) calls this
    last, so the JVM is gone when the command returns. The JVM is the one this process
    launched (``SparkContext._gateway.proc``), so nothing else is signalled. A later
    :func:`get_spark` launches a new JVM.
    """
    import subprocess

    from pyspark import SparkContext

    session = SparkSession.getActiveSession()
    if session is not None:
        close_cached_kafka_producers(session)
        session.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return None
    process = getattr(gateway, "proc", None)
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if process is None:  # a JVM this process did not launch (PYSPARK_GATEWAY_PORT)
        return None
    if process.stdin is not None:
        process.stdin.close()  # the gateway's signal to exit
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.pid
