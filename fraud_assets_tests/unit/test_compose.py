"""docker-compose.yml: pinned images, loopback-only ports, the configuration names we read.

There is no Docker engine where the tests run, so the file is checked as data; when a
``docker-compose`` binary is installed, its own validation runs too.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

EXPECTED_SERVICES = {"kafka", "kafka-init", "postgres", "code", "webserver", "daemon"}
CONFIG_NAMES = {
    "FRAUD_HOME",
    "FRAUD_KAFKA_BOOTSTRAP_SERVERS",
    "FRAUD_SPARK_MASTER",
    "FRAUD_SPARK_DRIVER_MEMORY",
    "DAGSTER_HOME",
}
DAGSTER_SERVICES = ("code", "webserver", "daemon")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def services(compose: dict) -> dict:
    return compose["services"]


def test_expected_services_are_present(compose):
    assert EXPECTED_SERVICES <= set(services(compose))


def test_every_image_is_pinned(compose):
    for name, service in services(compose).items():
        image = service.get("image")
        assert image, f"{name} has no image tag (a built service still names its image)"
        reference = image.split("@", 1)[0]
        repository, _, tag = reference.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"


def test_kafka_uses_the_official_image(compose):
    assert services(compose)["kafka"]["image"].startswith("apache/kafka:4.")
    assert services(compose)["kafka-init"]["image"] == services(compose)["kafka"]["image"]


def test_every_published_port_is_bound_to_loopback(compose):
    published = []
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} is not bound to 127.0.0.1"
            published.append(port)
    assert "127.0.0.1:3000:3000" in published
    assert "127.0.0.1:9092:9092" in published


def test_dagster_services_get_every_configuration_name(compose):
    for name in DAGSTER_SERVICES:
        environment = services(compose)[name]["environment"]
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        assert CONFIG_NAMES <= set(environment), f"{name} lacks {CONFIG_NAMES - set(environment)}"
        assert environment["FRAUD_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"


def test_services_with_state_have_healthchecks(compose):
    for name in ("kafka", "postgres"):
        assert services(compose)[name]["healthcheck"]["test"], name


def test_kafka_init_creates_the_project_topics(compose):
    script = "\n".join(services(compose)["kafka-init"]["command"])
    for spec in ("transactions:2", "fraud_alerts:", "transactions_dlq:", "fraud_kpis:"):
        assert spec in script


def test_named_volumes_keep_data_and_var(compose):
    mounts = {volume.split(":")[1] for volume in services(compose)["code"]["volumes"]}
    for folder in ("data", "var/models", "var/tables", "var/checkpoints"):
        assert f"/opt/fraud_assets/{folder}" in mounts
    declared = set(compose["volumes"])
    for volume in services(compose)["code"]["volumes"]:
        assert volume.split(":")[0] in declared


def test_docker_compose_accepts_the_file():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed; the structure tests above still ran")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
