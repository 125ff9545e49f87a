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
    kpi_partials: str = "fraud_kpi_partials"
    """Internal: what each scoring micro-batch adds to each KPI window (the KPI query's input,
    ``fraud_assets.core.kpis``); not a contract for consumers."""


SECURITY_PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
"""Kafka's ``security.protocol`` values: TLS or not, SASL authentication or not."""

SASL_MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""The SASL mechanisms both Spark's Kafka client and kafka-python speak with a password."""

_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}

MASK = "***"
"""What a secret looks like in every repr, summary and log line."""


class KafkaSecurityError(ValueError):
    """The Kafka security settings contradict each other or are incomplete."""


def _jaas_quote(value: str) -> str:
    """``value`` as a JAAS option string (quotes and backslashes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka, for Spark and for kafka-python alike.

    The security fields are mapped to both clients in one place (:meth:`spark_options` and
    :meth:`client_kwargs`) and checked when the settings are built, so a contradiction
    (SASL without a user, TLS files with a plaintext protocol) fails before any connection.
    ``sasl_password`` is left out of ``repr``/``str``; :meth:`describe` is the loggable
    summary.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: Topics = field(default_factory=Topics)
    transactions_partitions: int = 2
    security_protocol: str = "PLAINTEXT"
    """One of :data:`SECURITY_PROTOCOLS`."""
    sasl_mechanism: str = "PLAIN"
    """One of :data:`SASL_MECHANISMS`; used only with ``SASL_PLAINTEXT``/``SASL_SSL``."""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    """PEM file of the CA(s) that signed the brokers' certificates; empty means the
    system's default trust store. Used only with ``SSL``/``SASL_SSL``."""
    ssl_certfile: str = ""
    """PEM client certificate (mutual TLS). For Spark the same file must also hold the
    private key (Kafka's PEM key store reads both from one file): give the combined file
    as ``ssl_certfile`` and leave ``ssl_keyfile`` empty or equal to it."""
    ssl_keyfile: str = ""
    """PEM private key of ``ssl_certfile`` (unencrypted), if kept in a separate file."""

    def __post_init__(self) -> None:
        self._validate_security()

    # -- derived facts ------------------------------------------------------------------

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """A one-line summary safe for logs and UIs: the password is masked."""
        text = f"{self.bootstrap_servers} ({self.security_protocol}"
        if self.uses_sasl:
            password = MASK if self.sasl_password else "<none>"
            text += f", {self.sasl_mechanism} user={self.sasl_username} password={password}"
        if self.uses_ssl:
            text += f", ca={self.ssl_cafile or '<system>'}"
            if self.ssl_certfile:
                text += f", cert={self.ssl_certfile}"
        return text + ")"

    def __str__(self) -> str:
        return f"KafkaSettings({self.describe()})"

    # -- client configurations ----------------------------------------------------------

    def spark_options(self) -> dict[str, str]:
        """Options for ``spark.read/readStream/write.format("kafka")``.

        Spark passes ``kafka.``-prefixed options to its Kafka clients and redacts the JAAS
        password in its logs and plans.
        """
        options = {"kafka.bootstrap.servers": self.bootstrap_servers}
        if self.security_protocol == "PLAINTEXT":
            return options
        options["kafka.security.protocol"] = self.security_protocol
        if self.uses_sasl:
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f"{_LOGIN_MODULES[self.sasl_mechanism]} required "
                f"username={_jaas_quote(self.sasl_username)} "
                f"password={_jaas_quote(self.sasl_password)};"
            )
        if self.uses_ssl:
            if self.ssl_cafile:
                options["kafka.ssl.truststore.type"] = "PEM"
                options["kafka.ssl.truststore.location"] = self.ssl_cafile
            if self.ssl_certfile:
                options["kafka.ssl.keystore.type"] = "PEM"
                options["kafka.ssl.keystore.location"] = self.ssl_certfile
        return options

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for kafka-python clients (producer, consumer, admin)."""
        kwargs: dict[str, object] = {"bootstrap_servers": self.bootstrap_servers.split(",")}
        if self.security_protocol == "PLAINTEXT":
            return kwargs
        kwargs["security_protocol"] = self.security_protocol
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        if self.uses_ssl:
            if self.ssl_cafile:
                kwargs["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                kwargs["ssl_certfile"] = self.ssl_certfile
                kwargs["ssl_keyfile"] = self.ssl_keyfile or self.ssl_certfile
        return kwargs

    # -- validation -----------------------------------------------------------------------

    def _validate_security(self) -> None:
        protocol = self.security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise KafkaSecurityError(
                f"unknown Kafka security protocol {protocol!r}: use one of "
                f"{', '.join(SECURITY_PROTOCOLS)} (FRAUD_KAFKA_SECURITY_PROTOCOL)"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise KafkaSecurityError(
                    f"unsupported SASL mechanism {self.sasl_mechanism!r}: use one of "
                    f"{', '.join(SASL_MECHANISMS)} (FRAUD_KAFKA_SASL_MECHANISM)"
                )
            missing = [
                name
                for name, value in (
                    ("FRAUD_KAFKA_SASL_USERNAME", self.sasl_username),
                    ("FRAUD_KAFKA_SASL_PASSWORD", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise KafkaSecurityError(
                    f"{protocol} needs a SASL user name and password: set {' and '.join(missing)}"
                )
        elif self.sasl_username or self.sasl_password:
            raise KafkaSecurityError(
                f"SASL credentials are set but the security protocol is {protocol}, which "
                "would ignore them: use SASL_PLAINTEXT or SASL_SSL, or unset the credentials"
            )
        tls_files = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        if not self.uses_ssl and any(tls_files.values()):
            given = sorted(name for name, value in tls_files.items() if value)
            raise KafkaSecurityError(
                f"TLS files ({', '.join(given)}) are set but the security protocol is "
                f"{protocol}, which would ignore them: use SSL or SASL_SSL"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise KafkaSecurityError("ssl_keyfile is set without ssl_certfile (its certificate)")
        if self.ssl_keyfile and self.ssl_keyfile != self.ssl_certfile:
            raise KafkaSecurityError(
                "Spark's Kafka client reads the TLS client key and certificate from one PEM "
                "file: concatenate them (cat cert.pem key.pem > client.pem) and set "
                "ssl_certfile to it, with ssl_keyfile empty"
            )

    @classmethod
    def of(cls, value: "str | KafkaSettings") -> "KafkaSettings":
        """``value`` itself, or plaintext settings for a bare ``bootstrap_servers`` string."""
        if isinstance(value, KafkaSettings):
            return value
        return cls(bootstrap_servers=value)


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
    executor_memory: str = ""
    """Heap of each executor on a cluster (``spark.executor.memory``); empty: Spark's 1g."""
    executor_cores: int = 0
    """Cores of each executor on a cluster (``spark.executor.cores``); 0: Spark's default
    (all of a standalone worker's cores)."""
    cores_max: int = 0
    """Cores this application may take from a standalone cluster (``spark.cores.max``);
    0: no limit."""
    driver_host: str = "127.0.0.1"
    """Address executors use to reach the driver: loopback for ``local[*]`` and a cluster on
    this machine; a routable name or address when executors run elsewhere."""
    reserved_task_slots: int = 0
    """Task slots held for the life of the application by real-time queries (one per input
    partition). ``local[*]`` then runs that many task threads more than the machine has
    cores, so the micro-batch queries beside them still get every core; an explicit
    ``local[N]`` or a cluster is taken as given (``core.realtime.check_task_slots``)."""
