"""The JVM setup: POM rendering and folder checks; nothing is downloaded."""

import xml.etree.ElementTree as ET

import pyspark
import pytest

from fraud_assets.core.paths import ProjectPaths
from fraud_assets.setup.jvm import (
    KAFKA_VERSION,
    PYSPARK_VERSION_PLACEHOLDER,
    STAMP_NAME,
    JvmSetupError,
    check_jars,
    jar_sets,
    problems,
    render_spark_kafka_pom,
)

NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def test_spark_pom_pins_exactly_the_installed_pyspark():
    pom = render_spark_kafka_pom(pyspark.__version__)
    assert PYSPARK_VERSION_PLACEHOLDER not in pom
    root = ET.fromstring(pom)
    assert root.findtext("m:properties/m:spark.version", namespaces=NS) == pyspark.__version__
    dependency = root.find("m:dependencies/m:dependency", NS)
    assert dependency.findtext("m:artifactId", namespaces=NS) == "spark-sql-kafka-0-10_2.13"
    assert dependency.findtext("m:version", namespaces=NS) == "${spark.version}"


def test_spark_pom_excludes_what_pyspark_ships():
    root = ET.fromstring(render_spark_kafka_pom(pyspark.__version__))
    excluded = {
        e.findtext("m:artifactId", namespaces=NS) for e in root.iterfind(".//m:exclusion", NS)
    }
    assert {
        "hadoop-client-api",
        "hadoop-client-runtime",
        "scala-library",
        "scala-reflect",
        "slf4j-api",
        "jsr305",
        "lz4-java",
        "snappy-java",
        "spark-tags_2.13",
        "scala-parallel-collections_2.13",
    } <= excluded


def test_kafka_broker_pom_matches_module_versions(tmp_path):
    _, broker = jar_sets(ProjectPaths.at(tmp_path), pyspark_version="4.2.0")
    root = ET.fromstring(broker.pom)
    assert root.findtext("m:properties/m:kafka.version", namespaces=NS) == KAFKA_VERSION
    artifacts = {
        d.findtext("m:artifactId", namespaces=NS)
        for d in root.iterfind("m:dependencies/m:dependency", NS)
    }
    assert artifacts == {"kafka_2.13", "log4j-api", "log4j-core", "log4j-slf4j-impl"}


def test_a_different_pyspark_changes_the_stamp(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    current, _ = jar_sets(paths, pyspark_version="4.2.0")
    other, _ = jar_sets(paths, pyspark_version="4.2.1")
    assert current.pom_sha256 != other.pom_sha256
    assert "spark-sql-kafka-0-10_2.13-4.2.1.jar" in other.required_jars


def test_check_jars_reports_missing_folders_and_remedy(tmp_path):
    with pytest.raises(JvmSetupError) as error:
        check_jars(ProjectPaths.at(tmp_path))
    message = str(error.value)
    assert "spark-kafka" in message and "kafka-broker" in message
    assert "make setup" in message


def test_folder_is_current_only_with_jars_and_matching_stamp(tmp_path):
    spark_kafka, _ = jar_sets(ProjectPaths.at(tmp_path), pyspark_version="4.2.0")
    spark_kafka.target.mkdir(parents=True)
    for name in spark_kafka.required_jars:
        (spark_kafka.target / name).write_bytes(b"")
    assert any("no stamp" in p for p in problems(spark_kafka))

    (spark_kafka.target / STAMP_NAME).write_text("stale\n")
    assert any("different POM" in p for p in problems(spark_kafka))

    (spark_kafka.target / STAMP_NAME).write_text(spark_kafka.pom_sha256 + "\n")
    assert problems(spark_kafka) == []

    (spark_kafka.target / spark_kafka.required_jars[0]).unlink()
    assert any(spark_kafka.required_jars[0] in p for p in problems(spark_kafka))
