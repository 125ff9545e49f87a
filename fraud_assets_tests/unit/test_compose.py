"""docker-compose.yml, as a real compose parser reads it: pinned, loopback-only, our names.

There is no Docker engine where the tests run, so the file is validated and resolved by
Debian's ``docker-compose`` (``docker-compose config``: the compose schema, anchors and
merge keys, defaults filled in), and the checks below run on what it prints, the file
Docker itself would run. Without the binary the tests fail: ``make setup-system`` installs
it.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fraud_assets_tests.config_names import env_bindings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

EXPECTED_SERVICES = {"kafka", "kafka-init", "postgres", "code", "webserver", "daemon"}
DAGSTER_SERVICES = ("code", "webserver", "daemon")
LONG_RUNNING = ("kafka", "postgres", "code", "webserver", "daemon")
REQUIRED_NAMES = {
    "FRAUD_HOME",
    "FRAUD_KAFKA_BOOTSTRAP_SERVERS",
    "FRAUD_SPARK_MASTER",
    "FRAUD_SPARK_DRIVER_MEMORY",
    "FRAUD_KAFKA_TRANSACTIONS_PARTITIONS",
    "FRAUD_TOPIC_TRANSACTIONS",
    "FRAUD_TOPIC_ALERTS",
    "FRAUD_TOPIC_DEAD_LETTER",
    "FRAUD_TOPIC_KPIS",
}
"""What a container must set itself (the code's defaults are for a laptop: 127.0.0.1)."""
DAGSTER_NAMES = {
    "DAGSTER_HOME",
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_DB",
    "DAGSTER_POSTGRES_HOST",
}
DATA_FOLDERS = ("data", "var/models", "var/tables", "var/checkpoints")


def run_compose_config() -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yml cannot be validated: "
            "run make setup-system (Debian package docker-compose)"
        )
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as ``docker-compose config`` resolves it."""
    result = run_compose_config()
    assert result.returncode == 0, f"docker-compose rejects the file:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def services(compose: dict) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def test_docker_compose_accepts_the_file():
    result = run_compose_config()
    assert result.returncode == 0, result.stderr
    assert "services:" in result.stdout


def test_expected_services_are_present(compose):
    assert EXPECTED_SERVICES <= set(services(compose))


def test_every_image_is_pinned(compose):
    for name, service in services(compose).items():
        image = service.get("image")
        assert image, f"{name} has no image tag (a built service still names its image)"
        reference = image.split("@", 1)[0]
        repository, _, tag = reference.rpartition(":")
        assert repository and tag and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        # A version, not a floating name like "stable" or "lts".
        assert re.match(r"^v?\d+(\.\d+)+", tag), f"{name}: tag {tag!r} is not a version"


def test_kafka_uses_the_official_image_in_kraft_mode(compose):
    kafka = services(compose)["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert services(compose)["kafka-init"]["image"] == kafka["image"]
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert "ZOOKEEPER" not in " ".join(env)


def test_every_published_port_is_bound_to_loopback(compose):
    published = set()
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip, target = port.get("host_ip"), port.get("published")
            else:
                parts = str(port).split(":")
                host_ip, target = (parts[0], parts[1]) if len(parts) == 3 else (None, parts[0])
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} is not bound to 127.0.0.1"
            published.add((name, str(target)))
    assert ("webserver", "3000") in published
    assert ("kafka", "9092") in published


def test_compose_uses_only_names_the_code_reads(compose):
    known = {binding.env for binding in env_bindings()}
    for name, service in services(compose).items():
        used = {key for key in environment(service) if key.startswith("FRAUD_")}
        unknown = used - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which build_resources() never reads"


def test_dagster_services_get_every_name_a_container_needs(compose):
    for name in DAGSTER_SERVICES:
        env = environment(services(compose)[name])
        missing = (REQUIRED_NAMES | DAGSTER_NAMES) - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert env["FRAUD_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
    envs = [environment(services(compose)[name]) for name in DAGSTER_SERVICES]
    assert all(env == envs[0] for env in envs), "the Dagster services disagree on settings"


def test_long_running_services_have_healthchecks(compose):
    for name in LONG_RUNNING:
        check = services(compose)[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
    assert "grpc-health-check" in services(compose)["code"]["healthcheck"]["test"]
    assert "liveness-check" in services(compose)["daemon"]["healthcheck"]["test"]


def test_services_wait_for_what_they_need(compose):
    depends = {name: service.get("depends_on", {}) for name, service in services(compose).items()}
    assert depends["kafka-init"]["kafka"]["condition"] == "service_healthy"
    assert depends["code"]["kafka-init"]["condition"] == "service_completed_successfully"
    for name in DAGSTER_SERVICES:
        assert depends[name]["postgres"]["condition"] == "service_healthy"
    for name in ("webserver", "daemon"):
        assert depends[name]["code"]["condition"] == "service_healthy"
        command = services(compose)[name]["command"]
        assert "-w" in command and command[command.index("-w") + 1].endswith(".yaml")


def test_kafka_init_creates_the_topics_the_code_uses(compose):
    init = services(compose)["kafka-init"]
    script = "\n".join(init["command"])
    env = environment(init)
    code_env = environment(services(compose)["code"])
    for name in (
        "FRAUD_TOPIC_TRANSACTIONS",
        "FRAUD_TOPIC_ALERTS",
        "FRAUD_TOPIC_DEAD_LETTER",
        "FRAUD_TOPIC_KPIS",
        "FRAUD_KAFKA_TRANSACTIONS_PARTITIONS",
    ):
        assert name in script, f"kafka-init does not use {name}"
        assert env[name] == code_env[name], f"kafka-init and code disagree on {name}"
    assert "--if-not-exists" in script


def test_named_volumes_keep_data_models_tables_and_checkpoints(compose):
    mounts = {}
    for volume in services(compose)["code"]["volumes"]:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            mounts[target] = source
    declared = set(compose["volumes"])
    for folder in DATA_FOLDERS:
        target = f"/opt/fraud_assets/{folder}"
        assert target in mounts, f"{target} is not on a volume"
        assert mounts[target] in declared, f"{mounts[target]} is not a named volume"
    for name in ("kafka", "postgres"):
        sources = [str(v).split(":")[0] for v in services(compose)[name]["volumes"]]
        assert all(source in declared for source in sources), name


def test_dockerfile_installs_pinned_dependencies_java_17_and_the_jars():
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), "the base image is not pinned"
    assert "openjdk-17" in dockerfile
    assert re.search(r"pip install -c constraints\.txt", dockerfile)
    assert "COPY pyproject.toml constraints.txt" in dockerfile
    assert "setup --skip-data" in dockerfile  # the Maven jars are resolved at build time
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    for folder in (".venv/", "var/", "data/", ".git/"):
        assert folder in ignored, f"{folder} would be sent to the Docker build"
