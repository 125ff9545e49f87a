"""Every service fraud_assets starts listens on 127.0.0.1 unless told otherwise.

Checked on the rendered configurations: the broker's server.properties, the Spark conf and
the ``dagster dev`` command lines of the Makefile and the test harness.
"""

import re
import shlex
from pathlib import Path

from fraud_assets.core.settings import KafkaSettings, SparkSettings
from fraud_assets.core.spark import spark_conf
from fraud_assets.kafka.broker import BrokerSettings, read_properties, render_server_properties

REPO_ROOT = Path(__file__).resolve().parents[2]


def _listener_hosts(listeners: str) -> dict[str, str]:
    """``NAME://host:port,...`` as ``{NAME: host}``."""
    hosts = {}
    for listener in listeners.split(","):
        name, _, address = listener.partition("://")
        hosts[name] = address.rpartition(":")[0]
    return hosts


def test_broker_listens_and_advertises_on_loopback_by_default(tmp_path):
    settings = BrokerSettings(state_dir=tmp_path / "kafka", jars_dir=tmp_path)
    path = tmp_path / "server.properties"
    path.write_text(render_server_properties(settings, 9093))
    properties = read_properties(path)
    for key in ("listeners", "advertised.listeners"):
        hosts = _listener_hosts(properties[key])
        assert hosts and set(hosts.values()) == {"127.0.0.1"}, (key, properties[key])
    assert properties["controller.quorum.voters"].split("@")[1].startswith("127.0.0.1:")
    assert KafkaSettings().bootstrap_servers.startswith("127.0.0.1:")


def test_spark_driver_binds_loopback_and_the_ui_is_off_by_default():
    conf = spark_conf(SparkSettings())
    assert conf["spark.driver.host"] == "127.0.0.1"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    # The UI, when enabled, binds SPARK_LOCAL_IP (0.0.0.0 when unset): it stays off.
    assert conf["spark.ui.enabled"] == "false"


def _dagster_dev_commands(text: str) -> list[list[str]]:
    commands = []
    for line in text.splitlines():
        # Recipe lines (tab-indented) that run the webserver: `dagster dev`/`dagster-webserver`.
        if line.startswith("\t") and re.search(r"dagster(\s+dev\b|-webserver\s)", line):
            commands.append(shlex.split(line.strip()))
    return commands


def _host_of(argv: list[str]) -> str | None:
    for flag in ("-h", "--host"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    return None


def test_makefile_runs_dagster_dev_on_loopback():
    makefile = (REPO_ROOT / "Makefile").read_text()
    commands = _dagster_dev_commands(makefile)
    assert commands, "the Makefile has a `dagster dev` target"
    for argv in commands:
        assert _host_of(argv) == "127.0.0.1", argv
    assert re.search(r"^export SPARK_LOCAL_IP := 127\.0\.0\.1$", makefile, re.MULTILINE)


def test_test_harness_runs_dagster_dev_on_loopback():
    source = (REPO_ROOT / "fraud_assets_tests" / "dagster_dev.py").read_text()
    assert re.search(r'"-h",\s*\n?\s*"127\.0\.0\.1"|"-h",\s*host', source), (
        "dagster_dev.py passes -h 127.0.0.1 (or a host parameter) to dagster dev"
    )
    assert "0.0.0.0" not in source
