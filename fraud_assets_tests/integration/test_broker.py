import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraud_assets.cli import main
from fraud_assets.kafka.admin import TopicError, TopicSpec, ensure_topics, topic_partitions
from fraud_assets.kafka.broker import BrokerStartError, EmbeddedKafka, find_broker_pids
from fraud_assets.kafka.io import end_offsets, produce_messages, read_topic, total_messages
from fraud_assets_tests.kafka_fixtures import BROKER_JARS_DIR, broker_settings, free_port_pair

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

EMPTY_READ_TIMEOUT_S = 30.0
"""The timeout of the empty-topic read. A read that waited for messages instead of stopping
at the end offsets would take all of it (and raise), so the bound is the timeout itself: the
real work (reachability, metadata, end offsets) takes about a second here, which leaves a slow
machine 29 s of margin."""

START_TIMEOUT_S = 60.0
"""The start timeout given to a broker whose port is taken."""

PORT_CHECK_MARGIN_S = 5.0
"""What a refused start may take past its timeout: the port check itself binds two sockets,
well under a second even on a loaded machine. A start that waited for a JVM to come up (or
hung) would still overshoot ``START_TIMEOUT_S + PORT_CHECK_MARGIN_S``."""


def wait_until_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)
    return False


def test_session_broker_has_the_project_topics(kafka_broker):
    partitions = topic_partitions(kafka_broker.bootstrap_servers)
    assert partitions["transactions"] == 2
    assert partitions["fraud_alerts"] == 1
    assert partitions["transactions_dlq"] == 1
    assert partitions["fraud_kpis"] == 1
    status = kafka_broker.status()
    assert status["running"] is True
    assert {"transactions", "fraud_alerts", "transactions_dlq", "fraud_kpis"} <= set(
        status["topics"]
    )


def test_ensure_topics_is_idempotent_and_refuses_fewer_partitions(kafka_broker, unique_topics):
    topic = unique_topics(partitions=2)
    assert ensure_topics(kafka_broker.bootstrap_servers, [TopicSpec(topic, partitions=2)]) == []
    with pytest.raises(TopicError, match=f"{topic} has 2 partition"):
        ensure_topics(kafka_broker.bootstrap_servers, [TopicSpec(topic, partitions=3)])


def test_produced_keys_are_read_back_exactly(kafka_broker, unique_topics):
    topic = unique_topics(partitions=2)
    messages = [(f"k{i}".encode(), f'{{"i":{i}}}'.encode()) for i in range(300)]
    assert produce_messages(kafka_broker.bootstrap_servers, topic, messages) == 300

    records = read_topic(kafka_broker.bootstrap_servers, topic, timeout_s=30)
    assert sorted(r.key for r in records) == sorted(k for k, _ in messages)
    assert {r.key: r.value for r in records} == dict(messages)
    assert [(r.partition, r.offset) for r in records] == sorted(
        (r.partition, r.offset) for r in records
    )
    assert {r.partition for r in records} == {0, 1}, "keys should spread over both partitions"
    offsets = end_offsets(kafka_broker.bootstrap_servers, topic)
    assert set(offsets) == {0, 1} and sum(offsets.values()) == 300
    assert total_messages(kafka_broker.bootstrap_servers, topic) == 300


def test_read_topic_of_an_empty_topic_returns_nothing(kafka_broker, unique_topics):
    topic = unique_topics(partitions=2)
    started = time.monotonic()
    assert read_topic(kafka_broker.bootstrap_servers, topic, timeout_s=EMPTY_READ_TIMEOUT_S) == []
    assert time.monotonic() - started < EMPTY_READ_TIMEOUT_S


def test_start_then_stop_leaves_no_process(tmp_path):
    settings = broker_settings(tmp_path / "kafka")
    broker = EmbeddedKafka(settings)
    try:
        broker.start(timeout_s=90)
        pid = broker.pid()
        assert pid is not None and settings.pid_file.read_text().strip() == str(pid)
        assert broker.status()["running"] is True
        # A second object on the same folder sees the broker and refuses a second start.
        twin = EmbeddedKafka(settings)
        assert twin.pid() == pid
        with pytest.raises(BrokerStartError, match="already running"):
            twin.start()
    finally:
        assert broker.stop() is True
    assert wait_until_gone(pid, 5), f"broker pid {pid} still exists after stop()"
    assert not settings.pid_file.exists()
    assert find_broker_pids(settings.server_properties) == []
    assert broker.stop() is False
    assert broker.status()["running"] is False


def test_port_in_use_fails_quickly_and_leaves_no_jvm(tmp_path):
    # The port is checked before the JVM is launched: a clear error at once instead of a JVM
    # dying with "Address already in use" after its start-up. Checked on what a launch leaves
    # (the broker's config and data folder are written just before the storage is formatted),
    # not on the clock, which a slow machine could fail.
    port, controller_port = free_port_pair()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        settings = broker_settings(tmp_path / "kafka", port=port, controller_port=controller_port)
        started = time.monotonic()
        with pytest.raises(BrokerStartError, match="in use") as error:
            EmbeddedKafka(settings).start(timeout_s=START_TIMEOUT_S)
        assert time.monotonic() - started < START_TIMEOUT_S + PORT_CHECK_MARGIN_S
    assert "--port" in str(error.value)
    assert not settings.server_properties.exists()
    assert not settings.data_dir.exists()
    assert not settings.pid_file.exists()
    assert find_broker_pids(settings.server_properties) == []


def test_jvm_that_exits_during_start_is_reported_with_its_log(tmp_path):
    # A heap too small for the JVM itself: the storage formats, then the broker JVM dies.
    settings = broker_settings(tmp_path / "kafka", heap="1k")
    with pytest.raises(BrokerStartError, match="exited with code") as error:
        EmbeddedKafka(settings).start(timeout_s=60)
    assert "heap" in str(error.value)
    assert "console.log" in str(error.value)
    assert not settings.pid_file.exists()
    assert find_broker_pids(settings.server_properties) == []


def test_tied_broker_dies_with_its_parent_even_on_kill_9(tmp_path):
    settings = broker_settings(tmp_path / "kafka")
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from fraud_assets.kafka.broker import BrokerSettings, EmbeddedKafka\n"
        f"s = BrokerSettings(state_dir=Path({str(settings.state_dir)!r}), "
        f"jars_dir=Path({str(BROKER_JARS_DIR)!r}), port={settings.port}, "
        f"controller_port={settings.controller_port}, heap='384m', "
        f"jvm_options={settings.jvm_options!r})\n"
        "k = EmbeddedKafka(s, tie_to_parent=True).start(timeout_s=90)\n"
        "print(k.pid(), flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    broker_pid = None
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"child did not start a broker: {line!r}"
        broker_pid = int(line)
        assert Path(f"/proc/{broker_pid}").exists()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert wait_until_gone(broker_pid, 30), "the JVM outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in find_broker_pids(settings.server_properties):
            os.kill(pid, signal.SIGKILL)


def cli_home(tmp_path: Path) -> Path:
    """A fraud_assets home whose broker jars are the repository's."""
    home = tmp_path / "home"
    (home / "var" / "jars").mkdir(parents=True)
    (home / "var" / "jars" / "kafka-broker").symlink_to(BROKER_JARS_DIR)
    return home


def test_cli_start_status_stop_round_trip(tmp_path, capsys):
    home = cli_home(tmp_path)
    port, controller_port = free_port_pair()
    state = home / "var" / "kafka"
    try:
        # A separate process: the detached broker must outlive the command that started it.
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "fraud_assets",
                "--home",
                str(home),
                "kafka",
                "start",
                "--port",
                str(port),
                "--controller-port",
                str(controller_port),
            ],
            capture_output=True,
            text=True,
            timeout=150,
            cwd=REPO_ROOT,
        )
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        pids = find_broker_pids(state / "server.properties")
        assert len(pids) == 1, "the detached broker should outlive the start command"

        # The other commands run in-process (a CLI process start costs seconds here).
        assert main(["--home", str(home), "kafka", "start", "--port", str(port)]) == 0
        assert "already running" in capsys.readouterr().out

        assert main(["--home", str(home), "kafka", "status"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["running"] is True and report["pid"] == pids[0]
        assert report["bootstrap_servers"] == f"127.0.0.1:{port}"
        assert set(report["topics"]) == {
            "transactions",
            "fraud_alerts",
            "transactions_dlq",
            "fraud_kpis",
            "fraud_kpi_partials",
        }

        assert main(["--home", str(home), "kafka", "stop"]) == 0
        assert "stopped" in capsys.readouterr().out
        assert wait_until_gone(pids[0], 5)

        assert main(["--home", str(home), "kafka", "status"]) == 3
        assert json.loads(capsys.readouterr().out)["running"] is False
    finally:
        for pid in find_broker_pids(state / "server.properties"):
            os.kill(pid, signal.SIGKILL)


def test_cli_start_on_a_taken_port_is_one_clear_line(tmp_path, capsys):
    home = cli_home(tmp_path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = main(["--home", str(home), "kafka", "start", "--port", str(port)])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert f"port {port} on 127.0.0.1 is in use" in error


def test_cli_foreground_broker_stops_on_sigterm(tmp_path):
    home = cli_home(tmp_path)
    port, controller_port = free_port_pair()
    state = home / "var" / "kafka"
    command = [
        sys.executable,
        "-m",
        "fraud_assets",
        "--home",
        str(home),
        "kafka",
        "start",
        "--foreground",
        "--port",
        str(port),
        "--controller-port",
        str(controller_port),
    ]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        lines = []
        for line in cli.stdout:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        assert any(f"127.0.0.1:{port}" in line for line in lines), lines
        pids = find_broker_pids(state / "server.properties")
        assert len(pids) == 1

        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=40) == 0, cli.stdout.read()
        assert wait_until_gone(pids[0], 5), "the foreground command left its broker running"
        assert not (state / "broker.pid").exists()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        for pid in find_broker_pids(state / "server.properties"):
            os.kill(pid, signal.SIGKILL)
