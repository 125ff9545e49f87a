"""JVM artifacts from Maven Central: Spark's Kafka connector and the Kafka broker.

``resolve_jars`` renders the POMs under ``jvm/`` and lets Maven copy their runtime
dependencies into ``var/jars/<name>``. It runs once: each folder keeps a stamp holding the
sha256 of the POM it was resolved from, and is resolved again only when that POM changes
(for example after a PySpark upgrade). After that, nothing needs the network: Spark and the
broker load the jars from these folders.
"""

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fraud_assets.core.paths import ProjectPaths

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka broker version in ``jvm/kafka-broker/pom.xml``."""

LOG4J_VERSION = "2.25.3"
"""The log4j2 version that Kafka 4.x logs through (``jvm/kafka-broker/pom.xml``)."""

PYSPARK_VERSION_PLACEHOLDER = "@PYSPARK_VERSION@"
"""Replaced in ``jvm/spark-kafka/pom.xml.in`` by the installed ``pyspark.__version__``."""

STAMP_NAME = ".pom.sha256"
"""File in each jar folder: the sha256 of the rendered POM the folder was resolved from."""

MAVEN_OUTPUT_TAIL_LINES = 25

# Maven colours its output even in batch mode when jansi is on the classpath.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

DEFAULT_JVM_DIR = Path(__file__).resolve().parents[2] / "jvm"
"""The POM templates of this checkout (``<repository>/jvm``)."""


class JvmSetupError(RuntimeError):
    """The JVM artifacts cannot be resolved or are incomplete; the message says what to do."""


@dataclass(frozen=True)
class JarSet:
    """One folder of jars and the POM it is resolved from.

    Attributes:
        name: Short name, also the folder name under ``var/jars`` and ``jvm``.
        pom: The rendered POM text (placeholders already substituted).
        target: The folder the jars live in (``var/jars/<name>``).
        required_jars: File names that must be present for the folder to be usable.
    """

    name: str
    pom: str
    target: Path
    required_jars: tuple[str, ...]

    @property
    def pom_sha256(self) -> str:
        """Hash of the rendered POM; a different hash means the folder is stale."""
        return hashlib.sha256(self.pom.encode("utf-8")).hexdigest()


def installed_pyspark_version() -> str:
    """The version of the PySpark this interpreter imports (the connector must match it)."""
    import pyspark

    return pyspark.__version__


def render_spark_kafka_pom(pyspark_version: str, jvm_dir: Path = DEFAULT_JVM_DIR) -> str:
    """``jvm/spark-kafka/pom.xml.in`` with the Spark version set to ``pyspark_version``."""
    template = (jvm_dir / "spark-kafka" / "pom.xml.in").read_text(encoding="utf-8")
    if PYSPARK_VERSION_PLACEHOLDER not in template:
        raise JvmSetupError(
            f"{jvm_dir / 'spark-kafka' / 'pom.xml.in'} has no {PYSPARK_VERSION_PLACEHOLDER} "
            "placeholder: restore it from git"
        )
    return template.replace(PYSPARK_VERSION_PLACEHOLDER, pyspark_version)


def jar_sets(
    paths: ProjectPaths,
    *,
    pyspark_version: str | None = None,
    jvm_dir: Path = DEFAULT_JVM_DIR,
) -> tuple[JarSet, JarSet]:
    """The Spark connector and Kafka broker jar sets of this installation.

    Args:
        paths: The installation whose ``var/jars`` holds the folders.
        pyspark_version: Spark version for the connector; the installed PySpark's if None.
        jvm_dir: Folder holding the POM templates.
    """
    spark_version = pyspark_version or installed_pyspark_version()
    spark_kafka = JarSet(
        name="spark-kafka",
        pom=render_spark_kafka_pom(spark_version, jvm_dir),
        target=paths.spark_jars_dir,
        required_jars=(
            f"spark-sql-kafka-0-10_2.13-{spark_version}.jar",
            f"spark-token-provider-kafka-0-10_2.13-{spark_version}.jar",
        ),
    )
    kafka_broker = JarSet(
        name="kafka-broker",
        pom=(jvm_dir / "kafka-broker" / "pom.xml").read_text(encoding="utf-8"),
        target=paths.kafka_jars_dir,
        required_jars=(
            f"kafka_2.13-{KAFKA_VERSION}.jar",
            f"kafka-server-{KAFKA_VERSION}.jar",
            f"kafka-clients-{KAFKA_VERSION}.jar",
            f"log4j-api-{LOG4J_VERSION}.jar",
            f"log4j-core-{LOG4J_VERSION}.jar",
            f"log4j-slf4j-impl-{LOG4J_VERSION}.jar",
        ),
    )
    return spark_kafka, kafka_broker


def problems(jar_set: JarSet) -> list[str]:
    """What is wrong with ``jar_set``'s folder (empty when it is complete and current)."""
    if not jar_set.target.is_dir():
        return [f"{jar_set.target} does not exist"]
    found: list[str] = []
    missing = [name for name in jar_set.required_jars if not (jar_set.target / name).is_file()]
    if missing:
        found.append(f"{jar_set.target} lacks {', '.join(missing)}")
    stamp = jar_set.target / STAMP_NAME
    if not stamp.is_file():
        found.append(f"{jar_set.target} was not resolved by `fraud-assets setup` (no stamp)")
    elif stamp.read_text(encoding="utf-8").strip() != jar_set.pom_sha256:
        found.append(f"{jar_set.target} was resolved from a different POM than jvm/{jar_set.name}")
    return found


def check_jars(paths: ProjectPaths, *, jvm_dir: Path = DEFAULT_JVM_DIR) -> None:
    """Raise :class:`JvmSetupError` unless both jar folders are complete and current."""
    found = [
        problem for jar_set in jar_sets(paths, jvm_dir=jvm_dir) for problem in problems(jar_set)
    ]
    if found:
        raise JvmSetupError(
            "JVM artifacts are missing or stale: "
            + "; ".join(found)
            + ". Run `make setup` (or `fraud-assets setup`) to resolve them from Maven Central."
        )


def require_tool(name: str) -> str:
    """The full path of the executable ``name``, or a clear error naming what to install."""
    found = shutil.which(name)
    if found is None:
        what = {"mvn": "Apache Maven (Debian: apt-get install maven)", "java": "a Java 17 JDK"}
        raise JvmSetupError(
            f"`{name}` is not on PATH: install {what.get(name, name)} and run `make setup` again"
        )
    return found


def java_version() -> str | None:
    """The first line of ``java -version`` (for the setup summary), or None without Java."""
    java = shutil.which("java")
    if java is None:
        return None
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[0] if lines else None


def resolve_jar_set(jar_set: JarSet, *, mvn: str, work_dir: Path) -> None:
    """Let Maven copy ``jar_set``'s runtime dependencies into its target folder.

    The jars land in a temporary sibling folder that replaces the target only once Maven
    succeeded, so a failed or interrupted run never leaves a half-filled folder behind.
    """
    parent = jar_set.target.parent
    parent.mkdir(parents=True, exist_ok=True)
    project_dir = Path(tempfile.mkdtemp(prefix=f"mvn-{jar_set.name}-", dir=work_dir))
    staging = Path(tempfile.mkdtemp(prefix=f".{jar_set.name}.new-", dir=parent))
    try:
        (project_dir / "pom.xml").write_text(jar_set.pom, encoding="utf-8")
        command = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(project_dir / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        logger.info("Resolving %s jars from Maven Central into %s", jar_set.name, jar_set.target)
        result = subprocess.run(
            command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if result.returncode != 0:
            output = ANSI_ESCAPE.sub("", result.stdout + result.stderr).strip().splitlines()
            tail = "\n".join(output[-MAVEN_OUTPUT_TAIL_LINES:])
            raise JvmSetupError(
                f"Maven could not resolve the {jar_set.name} jars (exit {result.returncode}). "
                "Check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml) "
                "and, if an artifact is not found, that its version exists there (the Spark "
                "connector must match the installed PySpark); then run `make setup` again. "
                f"Last lines of Maven's output:\n{tail}"
            )
        missing = [name for name in jar_set.required_jars if not (staging / name).is_file()]
        if missing:
            raise JvmSetupError(
                f"Maven resolved jvm/{jar_set.name} but {', '.join(missing)} is missing: "
                "the POM and fraud_assets.setup.jvm disagree; fix the POM"
            )
        (staging / STAMP_NAME).write_text(jar_set.pom_sha256 + "\n", encoding="utf-8")
        # mkdtemp makes a private (0700) folder; the jars must be readable by whichever
        # user runs Spark or the broker (in the container image, not the one who built it).
        staging.chmod(0o755)
        replace_folder(staging, jar_set.target)
    finally:
        shutil.rmtree(project_dir, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    jars = sorted(p.name for p in jar_set.target.glob("*.jar"))
    logger.info("%s: %d jars in %s", jar_set.name, len(jars), jar_set.target)


def replace_folder(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, moving any previous ``target`` out of the way first."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def resolve_jars(paths: ProjectPaths, *, jvm_dir: Path = DEFAULT_JVM_DIR) -> None:
    """Make ``var/jars/spark-kafka`` and ``var/jars/kafka-broker`` complete and current.

    Idempotent: a folder whose stamp matches its rendered POM and whose jars are present
    is left alone (no Maven, no network).

    Raises:
        JvmSetupError: ``mvn`` or ``java`` is missing, or Maven failed.
    """
    stale: list[JarSet] = []
    for jar_set in jar_sets(paths, jvm_dir=jvm_dir):
        found = problems(jar_set)
        if found:
            logger.info("%s jars need resolving: %s", jar_set.name, "; ".join(found))
            stale.append(jar_set)
        else:
            logger.info("%s jars are up to date in %s", jar_set.name, jar_set.target)
    if not stale:
        return
    require_tool("java")
    mvn = require_tool("mvn")
    work_dir = paths.var / "tmp"
    work_dir.mkdir(parents=True, exist_ok=True)
    for jar_set in stale:
        resolve_jar_set(jar_set, mvn=mvn, work_dir=work_dir)
    try:
        work_dir.rmdir()
    except OSError:
        pass  # not empty: something else uses var/tmp too
