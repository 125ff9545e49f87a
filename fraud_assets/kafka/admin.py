"""Topic administration and reachability checks for the project's Kafka topics.

kafka-python waits 30 s by default when no broker answers; every call here first tries a
raw TCP connection with a short timeout and then bounds the client's own timeouts, so an
operator learns within seconds that Kafka is down.

Every function takes ``bootstrap_servers`` as either a ``host:port[,host:port...]`` string
(a plaintext cluster) or a whole :class:`~fraud_assets.core.settings.KafkaSettings`, whose
security settings (TLS, SASL) then reach the client through ``client_kwargs()``.
"""

import contextlib
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fraud_assets.core.settings import KafkaSettings

log = logging.getLogger(__name__)

REACHABILITY_TIMEOUT_S = 5.0
"""How long :func:`check_broker_reachable` waits by default before saying Kafka is down."""

ADMIN_TIMEOUT_S = 10.0
"""The default bound of one admin call (listing topics, their partitions)."""


class BrokerUnreachableError(RuntimeError):
    """No Kafka broker answers at the configured bootstrap servers."""


class BrokerAuthenticationError(BrokerUnreachableError):
    """A broker accepts TCP connections but refuses this client.

    With TLS or SASL configured this almost always means wrong credentials, mechanism or CA
    file (the broker just closes the connection, so the client cannot tell for sure).
    """


class TopicError(RuntimeError):
    """A topic cannot be made to match its spec (e.g. it exists with fewer partitions)."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the project needs, with its partition count and topic-level config."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    config: tuple[tuple[str, str], ...] = ()


def project_topics(settings: KafkaSettings) -> list[TopicSpec]:
    """The topics of the pipeline: the four of the contracts and the KPI query's input.

    ``transactions`` has at least 2 partitions so the stream's parallelism and per-partition
    ordering are exercised everywhere; alerts, dead letters and KPIs are low volume; the KPI
    partials are a few records per micro-batch, read by one query.
    """
    topics = settings.topics
    return [
        TopicSpec(topics.transactions, partitions=max(2, settings.transactions_partitions)),
        TopicSpec(topics.alerts, partitions=1),
        TopicSpec(topics.dead_letter, partitions=1),
        TopicSpec(topics.kpis, partitions=1),
        TopicSpec(topics.kpi_partials, partitions=1),
    ]


def parse_bootstrap_servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9093"`` as ``[("h1", 9092), ("h2", 9093)]``."""
    addresses = []
    for server in bootstrap_servers.split(","):
        server = server.strip()
        if not server:
            continue
        host, sep, port = server.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"bad bootstrap server {server!r}: expected host:port")
        addresses.append((host.strip("[]") or "127.0.0.1", int(port)))
    if not addresses:
        raise ValueError("no bootstrap servers given")
    return addresses


def _is_authentication_failure(detail: str) -> bool:
    """Whether a client failure text means bad credentials or TLS, not a missing broker."""
    markers = ("Authentication", "SaslAuth", "SSLError", "CERTIFICATE_VERIFY_FAILED")
    return any(marker in detail for marker in markers)


def _authentication_message(settings: KafkaSettings, detail: str) -> str:
    return (
        f"Kafka at {settings.describe()} accepts connections but rejected this client "
        f"({detail}); the credentials, SASL mechanism or TLS settings are probably wrong: "
        "check FRAUD_KAFKA_SECURITY_PROTOCOL, FRAUD_KAFKA_SASL_MECHANISM, "
        "FRAUD_KAFKA_SASL_USERNAME, FRAUD_KAFKA_SASL_PASSWORD and FRAUD_KAFKA_SSL_CAFILE"
    )


def _unreachable_message(bootstrap_servers: str, detail: str) -> str:
    return (
        f"Kafka is not reachable at {bootstrap_servers} ({detail}): start it with "
        "`fraud-assets kafka start` or set FRAUD_KAFKA_BOOTSTRAP_SERVERS"
    )


def _tcp_problem(bootstrap_servers: str, timeout_s: float) -> str | None:
    """``None`` if some bootstrap server accepts TCP, else what went wrong."""
    problems = []
    for host, port in parse_bootstrap_servers(bootstrap_servers):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return None
        except OSError as error:
            problems.append(f"{host}:{port}: {error.strerror or error}")
    return "; ".join(problems)


@contextlib.contextmanager
def admin_client(
    bootstrap_servers: str | KafkaSettings, timeout_s: float = ADMIN_TIMEOUT_S
) -> Iterator[Any]:
    """A kafka-python ``KafkaAdminClient`` whose waits are bounded by ``timeout_s``."""
    from kafka import KafkaAdminClient

    timeout_ms = max(1000, int(timeout_s * 1000))
    client = KafkaAdminClient(
        **KafkaSettings.of(bootstrap_servers).client_kwargs(),
        client_id="fraud-assets-admin",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        reconnect_backoff_max_ms=1000,
    )
    try:
        yield client
    finally:
        client.close()


def broker_serves_metadata(bootstrap_servers: str | KafkaSettings, timeout_s: float) -> str | None:
    """``None`` if the cluster answers a metadata request listing a broker, else why not."""
    try:
        with admin_client(bootstrap_servers, timeout_s) as client:
            cluster = client.describe_cluster()
    except Exception as error:  # any client failure means "not (yet) serving"
        return f"metadata request failed: {type(error).__name__}: {error}"
    if not cluster.get("brokers"):
        return "metadata lists no broker yet"
    return None


def check_broker_reachable(
    bootstrap_servers: str | KafkaSettings, timeout_s: float = REACHABILITY_TIMEOUT_S
) -> None:
    """Fail fast if no broker serves metadata at ``bootstrap_servers``.

    Raises:
        BrokerAuthenticationError: A broker answers but rejects the credentials or TLS.
        BrokerUnreachableError: Within about ``timeout_s`` seconds, with what to do.
    """
    settings = KafkaSettings.of(bootstrap_servers)
    servers = settings.bootstrap_servers
    deadline = time.monotonic() + timeout_s
    problem = _tcp_problem(servers, timeout_s=min(2.0, timeout_s))
    if problem is not None:
        raise BrokerUnreachableError(_unreachable_message(servers, problem))
    remaining = max(1.0, deadline - time.monotonic())
    problem = broker_serves_metadata(settings, remaining)
    secured = settings.security_protocol != "PLAINTEXT"
    if problem is not None and (secured or _is_authentication_failure(problem)):
        # TCP works but the client is refused: a broker rejecting a SASL login or a TLS
        # handshake just closes the connection, so kafka-python reports a timeout.
        raise BrokerAuthenticationError(_authentication_message(settings, problem))
    if problem is not None:
        raise BrokerUnreachableError(_unreachable_message(servers, problem))


def wait_for_broker(bootstrap_servers: str | KafkaSettings, timeout_s: float = 60.0) -> None:
    """Block until a broker serves metadata at ``bootstrap_servers``.

    Raises:
        BrokerUnreachableError: Still unreachable after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            check_broker_reachable(bootstrap_servers, timeout_s=max(1.0, min(5.0, remaining)))
            return
        except BrokerUnreachableError as error:
            if time.monotonic() + 0.5 >= deadline:
                raise BrokerUnreachableError(f"after waiting {timeout_s:.0f} s: {error}") from None
        time.sleep(0.5)


def list_topics(
    bootstrap_servers: str | KafkaSettings, timeout_s: float = ADMIN_TIMEOUT_S
) -> list[str]:
    """Names of the non-internal topics, sorted."""
    with admin_client(bootstrap_servers, timeout_s) as client:
        return sorted(name for name in client.list_topics() if not name.startswith("__"))


def topic_partitions(
    bootstrap_servers: str | KafkaSettings, timeout_s: float = ADMIN_TIMEOUT_S
) -> dict[str, int]:
    """Partition count of every non-internal topic."""
    with admin_client(bootstrap_servers, timeout_s) as client:
        return _partition_counts(client)


def _partition_counts(client: Any, names: Iterable[str] | None = None) -> dict[str, int]:
    described = client.describe_topics(list(names) if names is not None else None)
    counts = {}
    for topic in described:
        if topic.get("error_code", 0) != 0 or topic["name"].startswith("__"):
            continue
        counts[topic["name"]] = len(topic.get("partitions") or [])
    return counts


def ensure_topics(
    bootstrap_servers: str | KafkaSettings, specs: Iterable[TopicSpec], timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics of ``specs`` and wait until all are usable.

    Idempotent: existing topics are left as they are if they have at least the requested
    partitions. Returns the names of the topics this call created.

    Raises:
        BrokerUnreachableError: No broker answers.
        TopicError: A topic exists with fewer partitions than its spec, or creation failed.
    """
    specs = list(specs)
    if not specs:
        return []
    check_broker_reachable(bootstrap_servers, timeout_s=min(5.0, timeout_s))
    import kafka.errors as kafka_errors

    with admin_client(bootstrap_servers, timeout_s) as client:
        existing = _partition_counts(client)
        too_small = [
            f"{spec.name} has {existing[spec.name]} partition(s), needs {spec.partitions}"
            for spec in specs
            if spec.name in existing and existing[spec.name] < spec.partitions
        ]
        if too_small:
            raise TopicError(
                "existing topics have too few partitions: "
                + "; ".join(too_small)
                + ". Delete them (or the broker state folder) so they are re-created."
            )
        missing = [spec for spec in specs if spec.name not in existing]
        created = []
        if missing:
            response = client.create_topics(
                {
                    spec.name: {
                        "num_partitions": spec.partitions,
                        "replication_factor": spec.replication_factor,
                        "configs": dict(spec.config),
                    }
                    for spec in missing
                },
                timeout_ms=int(timeout_s * 1000),
                raise_errors=False,
            )
            failures = []
            for topic in response["topics"]:
                error = kafka_errors.for_code(topic["error_code"])
                if error is kafka_errors.NoError:
                    created.append(topic["name"])
                elif error is not kafka_errors.TopicAlreadyExistsError:  # lost a race: fine
                    failures.append(
                        f"{topic['name']}: {error.__name__} {topic.get('error_message')}"
                    )
            if failures:
                raise TopicError("could not create topics: " + "; ".join(failures))
        try:
            client.wait_for_topics([spec.name for spec in specs], timeout_ms=int(timeout_s * 1000))
        except kafka_errors.KafkaTimeoutError as error:
            raise TopicError(f"topics not ready after {timeout_s:.0f} s: {error}") from error
        counts = _partition_counts(client, [spec.name for spec in specs])
    wrong = [spec.name for spec in specs if counts.get(spec.name, 0) < spec.partitions]
    if wrong:
        raise TopicError(f"topics without their partitions after creation: {wrong} ({counts})")
    if created:
        log.info("Created Kafka topics %s", created)
    return created


def delete_topics(
    bootstrap_servers: str | KafkaSettings, names: Iterable[str], timeout_s: float = 30.0
) -> None:
    """Delete topics (tests clean up with it); missing topics are ignored."""
    names = list(names)
    if not names:
        return
    with admin_client(bootstrap_servers, timeout_s) as client:
        client.delete_topics(names, timeout_ms=int(timeout_s * 1000), raise_errors=False)
