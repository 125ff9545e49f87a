"""Kafka security settings: one mapping to Spark options and kafka-python kwargs, checked
combinations, and a password that never shows in reprs, summaries, logs or resources."""

import dataclasses
import logging

import dagster as dg
import pytest

from fraud_assets.core.settings import (
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    KafkaSecurityError,
    KafkaSettings,
)
from fraud_assets.defs.resources import KafkaResource, build_resources
from fraud_assets.kafka.admin import BrokerUnreachableError, check_broker_reachable
from fraud_assets.kafka.broker import free_port

PASSWORD = "pa$$-W0rd-never-shown"


def settings_for(protocol: str, **overrides: str) -> KafkaSettings:
    """Complete settings for ``protocol`` (credentials for SASL, a CA file for TLS)."""
    values: dict[str, str] = {"bootstrap_servers": "h1:9093,h2:9093", "security_protocol": protocol}
    if protocol.startswith("SASL_"):
        values.update(sasl_username="alice", sasl_password=PASSWORD)
    if protocol in ("SSL", "SASL_SSL"):
        values["ssl_cafile"] = "/etc/kafka/ca.pem"
    values.update(overrides)
    return KafkaSettings(**values)


def test_plaintext_is_the_default_and_adds_nothing():
    settings = KafkaSettings(bootstrap_servers="h1:9092,h2:9092")
    assert settings.spark_options() == {"kafka.bootstrap.servers": "h1:9092,h2:9092"}
    assert settings.client_kwargs() == {"bootstrap_servers": ["h1:9092", "h2:9092"]}


@pytest.mark.parametrize("protocol", SECURITY_PROTOCOLS)
def test_every_protocol_maps_to_both_clients_consistently(protocol):
    settings = settings_for(protocol)
    spark = settings.spark_options()
    client = settings.client_kwargs()
    assert spark["kafka.bootstrap.servers"] == "h1:9093,h2:9093"
    assert client["bootstrap_servers"] == ["h1:9093", "h2:9093"]
    if protocol == "PLAINTEXT":
        assert "kafka.security.protocol" not in spark and "security_protocol" not in client
    else:
        assert spark["kafka.security.protocol"] == client["security_protocol"] == protocol

    sasl = protocol.startswith("SASL_")
    assert ("kafka.sasl.mechanism" in spark) is sasl
    assert ("kafka.sasl.jaas.config" in spark) is sasl
    assert ("sasl_mechanism" in client) is sasl
    if sasl:
        assert spark["kafka.sasl.mechanism"] == client["sasl_mechanism"] == "PLAIN"
        assert spark["kafka.sasl.jaas.config"] == (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="alice" password="{PASSWORD}";'
        )
        assert client["sasl_plain_username"] == "alice"
        assert client["sasl_plain_password"] == PASSWORD

    tls = protocol in ("SSL", "SASL_SSL")
    assert ("kafka.ssl.truststore.location" in spark) is tls
    assert ("ssl_cafile" in client) is tls
    if tls:
        assert spark["kafka.ssl.truststore.type"] == "PEM"
        assert spark["kafka.ssl.truststore.location"] == client["ssl_cafile"] == "/etc/kafka/ca.pem"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_uses_the_scram_login_module(mechanism):
    settings = settings_for("SASL_SSL", sasl_mechanism=mechanism)
    spark = settings.spark_options()
    assert spark["kafka.sasl.mechanism"] == mechanism
    assert spark["kafka.sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
    )
    assert settings.client_kwargs()["sasl_mechanism"] == mechanism


def test_jaas_values_are_quoted_so_a_password_cannot_break_the_config():
    settings = settings_for("SASL_PLAINTEXT", sasl_username='bo"b', sasl_password='a"b\\c;d')
    jaas = settings.spark_options()["kafka.sasl.jaas.config"]
    assert jaas.endswith('username="bo\\"b" password="a\\"b\\\\c;d";')


def test_tls_without_a_ca_file_uses_the_system_trust_store():
    settings = settings_for("SSL", ssl_cafile="")
    assert "kafka.ssl.truststore.location" not in settings.spark_options()
    assert "ssl_cafile" not in settings.client_kwargs()


def test_client_certificate_is_one_pem_file_for_both_clients():
    settings = settings_for("SSL", ssl_certfile="/etc/kafka/client.pem")
    spark = settings.spark_options()
    assert spark["kafka.ssl.keystore.type"] == "PEM"
    assert spark["kafka.ssl.keystore.location"] == "/etc/kafka/client.pem"
    client = settings.client_kwargs()
    assert client["ssl_certfile"] == client["ssl_keyfile"] == "/etc/kafka/client.pem"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"security_protocol": "TLS"}, "unknown Kafka security protocol 'TLS'"),
        ({"security_protocol": "sasl_ssl"}, "unknown Kafka security protocol"),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_username": "a",
                "sasl_password": "b",
                "sasl_mechanism": "GSSAPI",
            },
            "unsupported SASL mechanism 'GSSAPI'",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_password": "b"},
            "needs a SASL user name and password: set FRAUD_KAFKA_SASL_USERNAME$",
        ),
        (
            {"security_protocol": "SASL_SSL"},
            "set FRAUD_KAFKA_SASL_USERNAME and FRAUD_KAFKA_SASL_PASSWORD",
        ),
        (
            {"sasl_username": "a", "sasl_password": "b"},
            "SASL credentials are set but the security protocol is PLAINTEXT",
        ),
        (
            {"security_protocol": "SSL", "sasl_username": "a"},
            "SASL credentials are set but the security protocol is SSL",
        ),
        ({"ssl_cafile": "/ca.pem"}, r"TLS files \(ssl_cafile\) are set .* PLAINTEXT"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "a",
                "sasl_password": "b",
                "ssl_cafile": "/ca.pem",
            },
            "security protocol is SASL_PLAINTEXT, which would ignore them",
        ),
        ({"security_protocol": "SSL", "ssl_keyfile": "/k.pem"}, "without ssl_certfile"),
        (
            {"security_protocol": "SSL", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"},
            "one PEM file",
        ),
    ],
)
def test_contradictory_or_incomplete_settings_fail_fast(overrides, message):
    with pytest.raises(KafkaSecurityError, match=message):
        KafkaSettings(**overrides)


LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
"""The JAAS login module Kafka's Java client needs for each mechanism (written out here, not
read from the settings module, so a wrong mapping there fails)."""


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
def test_every_supported_mechanism_is_accepted(mechanism, protocol):
    settings = settings_for(protocol, sasl_mechanism=mechanism)
    spark = settings.spark_options()
    assert spark["kafka.security.protocol"] == protocol
    assert spark["kafka.sasl.mechanism"] == mechanism
    assert spark["kafka.sasl.jaas.config"] == (
        f'{LOGIN_MODULES[mechanism]} required username="alice" password="{PASSWORD}";'
    )
    client = settings.client_kwargs()
    assert client["security_protocol"] == protocol
    assert client["sasl_mechanism"] == mechanism
    assert (client["sasl_plain_username"], client["sasl_plain_password"]) == ("alice", PASSWORD)


def test_a_replaced_setting_is_validated_again():
    with pytest.raises(KafkaSecurityError, match="user name and password"):
        dataclasses.replace(KafkaSettings(), security_protocol="SASL_SSL")


def test_of_wraps_a_bootstrap_string_and_passes_settings_through():
    settings = settings_for("SASL_SSL")
    assert KafkaSettings.of(settings) is settings
    assert KafkaSettings.of("h:1") == KafkaSettings(bootstrap_servers="h:1")


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_password_never_in_repr_str_summary_or_logs(protocol, caplog):
    settings = settings_for(protocol)
    texts = [repr(settings), str(settings), settings.describe(), f"{settings}", f"{settings!r}"]
    with caplog.at_level(logging.INFO):
        logging.getLogger("fraud_assets.test").info("kafka %s / %r", settings, settings)
    texts.append(caplog.text)
    for text in texts:
        assert PASSWORD not in text
    assert "password=***" in settings.describe()
    assert "alice" in settings.describe() and protocol in settings.describe()


def test_resource_maps_its_fields_to_settings_and_hides_the_password():
    resource = KafkaResource(
        bootstrap_servers="h:9094",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password=PASSWORD,
        ssl_cafile="/etc/kafka/ca.pem",
    )
    assert PASSWORD not in repr(resource) and PASSWORD not in str(resource)
    settings = resource.settings
    assert settings.client_kwargs()["sasl_plain_password"] == PASSWORD
    assert settings.spark_options()["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert settings.client_kwargs()["ssl_cafile"] == "/etc/kafka/ca.pem"


def test_resource_binds_security_from_the_environment_as_env_vars(monkeypatch):
    environment = {
        "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FRAUD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "FRAUD_KAFKA_SASL_USERNAME": "alice",
        "FRAUD_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FRAUD_KAFKA_SSL_CAFILE", raising=False)
    kafka = build_resources()["kafka"]
    # The unresolved resource holds the variable's name, not its value (what the UI shows).
    assert PASSWORD not in repr(kafka)

    seen: dict[str, object] = {}

    @dg.asset
    def probe(kafka: KafkaResource) -> None:
        seen["settings"] = kafka.settings
        seen["repr"] = repr(kafka)

    assert dg.materialize([probe], resources={"kafka": kafka}).success
    settings = seen["settings"]
    assert isinstance(settings, KafkaSettings)
    assert settings.security_protocol == "SASL_PLAINTEXT"
    assert settings.sasl_mechanism == "SCRAM-SHA-256"
    assert settings.client_kwargs()["sasl_plain_password"] == PASSWORD
    assert PASSWORD not in str(seen["repr"])


def test_resource_defaults_stay_plaintext(monkeypatch):
    for name in (
        "FRAUD_KAFKA_SECURITY_PROTOCOL",
        "FRAUD_KAFKA_SASL_MECHANISM",
        "FRAUD_KAFKA_SASL_USERNAME",
        "FRAUD_KAFKA_SASL_PASSWORD",
        "FRAUD_KAFKA_SSL_CAFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = build_resources()["kafka"].settings
    assert settings.security_protocol == "PLAINTEXT"
    assert set(settings.client_kwargs()) == {"bootstrap_servers"}


def test_unreachable_error_with_secured_settings_does_not_leak_the_password():
    settings = settings_for("SASL_PLAINTEXT", bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(BrokerUnreachableError) as raised:
        check_broker_reachable(settings, timeout_s=1.0)
    assert PASSWORD not in str(raised.value)
    assert settings.bootstrap_servers in str(raised.value)
