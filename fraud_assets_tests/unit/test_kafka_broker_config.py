import socket
import subprocess
from pathlib import Path

import pytest

from fraud_assets.kafka.broker import (
    BrokerSettings,
    BrokerStartError,
    EmbeddedKafka,
    is_port_free,
    read_properties,
    render_log4j_config,
    render_server_properties,
)
from fraud_assets_tests.kafka_fixtures import BROKER_JARS_DIR, broker_settings


def rendered(settings: BrokerSettings, controller_port: int, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "server.properties"
    path.write_text(render_server_properties(settings, controller_port))
    return read_properties(path)


def test_server_properties_bind_loopback_with_both_ports(tmp_path):
    settings = BrokerSettings(state_dir=tmp_path / "kafka", jars_dir=tmp_path, port=19092)
    props = rendered(settings, 19093, tmp_path)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["node.id"] == "1"


def test_server_properties_fit_a_single_node(tmp_path):
    settings = BrokerSettings(state_dir=tmp_path / "kafka", jars_dir=tmp_path, num_partitions=3)
    props = rendered(settings, 9093, tmp_path)
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.partitions"] == "3"


def test_extra_properties_override_defaults(tmp_path):
    settings = BrokerSettings(
        state_dir=tmp_path,
        jars_dir=tmp_path,
        extra_properties=(("auto.create.topics.enable", "true"), ("log.retention.ms", "1000")),
    )
    text = render_server_properties(settings, 9093)
    props = rendered(settings, 9093, tmp_path)
    assert props["auto.create.topics.enable"] == "true"
    assert props["log.retention.ms"] == "1000"
    assert text.count("auto.create.topics.enable") == 1


def test_log4j_config_writes_server_log_in_state_dir(tmp_path):
    settings = BrokerSettings(state_dir=tmp_path / "kafka", jars_dir=tmp_path)
    config = render_log4j_config(settings)
    assert f"fileName = {tmp_path / 'kafka' / 'logs' / 'server.log'}" in config
    assert "rootLogger.level = INFO" in config
    assert "logger.state.name = state.change.logger" in config


def test_port_probe_sees_a_listening_socket():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not is_port_free("127.0.0.1", port)
    assert is_port_free("127.0.0.1", port)


def test_missing_jars_say_which_folder_and_what_to_run(tmp_path):
    broker = EmbeddedKafka(BrokerSettings(state_dir=tmp_path / "kafka", jars_dir=tmp_path / "no"))
    with pytest.raises(BrokerStartError, match=r"run `make setup`") as error:
        broker.start()
    assert str(tmp_path / "no") in str(error.value)


def test_missing_java_is_a_clear_error(tmp_path):
    settings = broker_settings(tmp_path / "kafka", java="java-that-does-not-exist")
    with pytest.raises(BrokerStartError, match="Java was not found"):
        EmbeddedKafka(settings).start()


def test_storage_of_another_node_is_refused(tmp_path):
    settings = broker_settings(tmp_path / "kafka")
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "meta.properties").write_text("node.id=7\ncluster.id=abc\nversion=1\n")
    with pytest.raises(BrokerStartError, match="belongs to node 7"):
        EmbeddedKafka(settings).start()
    assert not settings.pid_file.exists()


def test_never_signals_a_pid_that_is_not_our_broker(tmp_path):
    settings = BrokerSettings(state_dir=tmp_path, jars_dir=BROKER_JARS_DIR)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        settings.pid_file.write_text(f"{bystander.pid}\n")
        broker = EmbeddedKafka(settings)
        assert broker.pid() is None
        assert broker.status()["running"] is False
        assert broker.stop(timeout_s=1) is False
        assert bystander.poll() is None, "stop() signalled a process that is not our broker"
        assert not settings.pid_file.exists(), "a stale pid file should be removed"
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_without_a_broker_is_a_no_op(tmp_path):
    broker = EmbeddedKafka(BrokerSettings(state_dir=tmp_path, jars_dir=BROKER_JARS_DIR))
    assert broker.stop() is False
    assert broker.stop() is False
    assert broker.status() == {
        "running": False,
        "pid": None,
        "bootstrap_servers": "127.0.0.1:9092",
        "state_dir": str(tmp_path),
    }
