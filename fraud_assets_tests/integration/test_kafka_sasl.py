"""Kafka security settings against a real SASL_PLAINTEXT/PLAIN listener.

A second broker (not the session one) gets a SASL listener beside its PLAINTEXT one (which
the readiness check and topic setup use). Our kafka-python functions and Spark's batch
Kafka reader/writer both go through ``KafkaSettings``: they work with the right password
and fail, clearly and without the password in the message, with a wrong one.
"""

import dataclasses
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fraud_assets.core.settings import KafkaSettings
from fraud_assets.kafka.admin import (
    BrokerAuthenticationError,
    TopicSpec,
    ensure_topics,
    list_topics,
)
from fraud_assets.kafka.broker import EmbeddedKafka, free_port
from fraud_assets.kafka.io import produce_messages, read_topic
from fraud_assets_tests.kafka_fixtures import broker_settings

pytestmark = pytest.mark.integration

USER = "alice"
PASSWORD = "alice-s3cret-pw"
WRONG_PASSWORD = "not-alices-password"
LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def sasl_listener_properties(port: int, controller_port: int, sasl_port: int):
    """``server.properties`` entries adding a SASL_PLAINTEXT/PLAIN listener with one user."""
    host = "127.0.0.1"
    return (
        (
            "listeners",
            f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port},"
            f"SASL_PLAINTEXT://{host}:{sasl_port}",
        ),
        ("advertised.listeners", f"PLAINTEXT://{host}:{port},SASL_PLAINTEXT://{host}:{sasl_port}"),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        ),
        ("sasl.enabled.mechanisms", "PLAIN"),
        (
            "listener.name.sasl_plaintext.plain.sasl.jaas.config",
            f'{LOGIN_MODULE} required user_{USER}="{PASSWORD}";',
        ),
    )


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory) -> Iterator[tuple[EmbeddedKafka, int]]:
    """A broker with PLAINTEXT (admin, readiness) and SASL_PLAINTEXT listeners."""
    base = broker_settings(tmp_path_factory.mktemp("kafka-sasl"))
    sasl_port = free_port()
    settings = dataclasses.replace(
        base,
        extra_properties=sasl_listener_properties(base.port, base.controller_port, sasl_port),
    )
    broker = EmbeddedKafka(settings, tie_to_parent=True)
    broker.start(timeout_s=90)
    try:
        yield broker, sasl_port
    finally:
        broker.stop()


def sasl_settings(sasl_port: int, password: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{sasl_port}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=USER,
        sasl_password=password,
    )


def test_kafka_python_clients_authenticate_with_sasl(sasl_broker):
    broker, sasl_port = sasl_broker
    topic = "sasl-python"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, partitions=2)])
    good = sasl_settings(sasl_port, PASSWORD)

    assert topic in list_topics(good)
    messages = [(f"k{i}".encode(), f'{{"n":{i}}}'.encode()) for i in range(50)]
    assert produce_messages(good, topic, messages) == 50
    records = read_topic(good, topic, timeout_s=30)
    assert sorted((r.key, r.value) for r in records) == sorted(messages)


def test_kafka_python_with_a_wrong_password_fails_clearly(sasl_broker):
    _, sasl_port = sasl_broker
    bad = sasl_settings(sasl_port, WRONG_PASSWORD)
    with pytest.raises(BrokerAuthenticationError) as raised:
        produce_messages(bad, "sasl-python", [(b"k", b"v")], timeout_s=10)
    text = str(raised.value)
    assert "rejected this client" in text and "FRAUD_KAFKA_SASL_PASSWORD" in text
    assert "password=***" in text
    assert WRONG_PASSWORD not in text and PASSWORD not in text
    with pytest.raises(BrokerAuthenticationError):
        read_topic(bad, "sasl-python", timeout_s=10)


def _spark_write(spark: SparkSession, kafka: KafkaSettings, topic: str, count: int) -> None:
    rows = spark.range(count).select(
        F.concat(F.lit("s"), F.col("id").cast("string")).alias("key"),
        F.to_json(F.struct(F.col("id").alias("n"))).alias("value"),
    )
    (
        rows.write.format("kafka")
        .options(**kafka.spark_options())
        # Fail in seconds, not the default minute, when the broker refuses the client.
        .option("kafka.max.block.ms", "15000")
        .option("topic", topic)
        .save()
    )


def _spark_read(spark: SparkSession, kafka: KafkaSettings, topic: str):
    return (
        spark.read.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .option("kafka.default.api.timeout.ms", "15000")
        .option("kafka.request.timeout.ms", "10000")
        .option("fetchOffset.numRetries", "1")
        .load()
    )


def test_spark_batch_reads_and_writes_through_sasl(spark, sasl_broker):
    broker, sasl_port = sasl_broker
    topic = "sasl-spark"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, partitions=2)])
    good = sasl_settings(sasl_port, PASSWORD)

    _spark_write(spark, good, topic, 40)
    frame = _spark_read(spark, good, topic)
    keys = sorted(row.key.decode() for row in frame.select("key").collect())
    assert keys == sorted(f"s{i}" for i in range(40))
    # Spark redacts the JAAS config (it holds the password) in its plans.
    assert PASSWORD not in frame._jdf.queryExecution().toString()
    # And our own client reads what Spark wrote, through the same settings.
    assert len(read_topic(good, topic, timeout_s=30)) == 40


def test_spark_with_a_wrong_password_fails(spark, sasl_broker):
    broker, sasl_port = sasl_broker
    topic = "sasl-spark-denied"
    ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, partitions=1)])
    bad = sasl_settings(sasl_port, WRONG_PASSWORD)

    with pytest.raises(Exception, match="(?i)authentication"):
        _spark_write(spark, bad, topic, 5)
    with pytest.raises(Exception, match="(?i)authentication"):
        _spark_read(spark, bad, topic).count()
    assert read_topic(broker.bootstrap_servers, topic, timeout_s=30) == []
