"""Where fraud_assets keeps its files.

Everything a run produces lives under ``<home>/var`` (git-ignored); the dataset lives in
``<home>/data``. ``home`` is the repository checkout by default; Dagster resources and the
CLI pass it explicitly, nothing here reads the environment.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    """The folder layout of one fraud_assets installation."""

    home: Path
    state: Path | None = None
    """Folder for run state (broker data, tables, models, checkpoints); ``var`` if None.
    The demo and the tests give each run its own, so runs never share checkpoints."""
    dataset: Path | None = None
    """The source CSV; ``data/creditcard.csv`` if None."""

    @classmethod
    def at(
        cls, home: str | Path, state: str | Path | None = None, dataset: str | Path | None = None
    ) -> "ProjectPaths":
        """Layout rooted at ``home`` (paths made absolute; empty strings mean "default")."""

        def resolve(path: str | Path | None) -> Path | None:
            return Path(path).expanduser().resolve() if path else None

        return cls(Path(home).expanduser().resolve(), resolve(state), resolve(dataset))

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def dataset_csv(self) -> Path:
        return self.dataset or self.data_dir / "creditcard.csv"

    @property
    def var(self) -> Path:
        return self.home / "var"

    @property
    def downloads_dir(self) -> Path:
        return self.var / "downloads"

    @property
    def jars_dir(self) -> Path:
        return self.var / "jars"

    @property
    def spark_jars_dir(self) -> Path:
        """Spark's Kafka connector and its dependencies (not already in PySpark)."""
        return self.jars_dir / "spark-kafka"

    @property
    def kafka_jars_dir(self) -> Path:
        """The Apache Kafka broker and its logging binding."""
        return self.jars_dir / "kafka-broker"

    @property
    def state_dir(self) -> Path:
        return self.state or self.var

    @property
    def kafka_dir(self) -> Path:
        """Embedded broker state: config, KRaft log dirs, pid file, logs."""
        return self.state_dir / "kafka"

    @property
    def tables_dir(self) -> Path:
        return self.state_dir / "tables"

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"

    @property
    def checkpoints_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    @property
    def stream_paths(self) -> "StreamPaths":
        """The scoring stream's tables and checkpoints in this state."""
        return StreamPaths.under(self.tables_dir, self.checkpoints_dir)


@dataclass(frozen=True)
class StreamPaths:
    """Where the streaming queries keep their checkpoints and write their tables."""

    checkpoint_dir: Path
    kpi_checkpoint_dir: Path
    realtime_checkpoint_dir: Path
    ledger_table: Path
    alerts_table: Path
    quarantine_table: Path
    kpi_table: Path
    batch_log_dir: Path
    shadow_table: Path

    @classmethod
    def under(cls, tables_dir: Path, checkpoints_dir: Path) -> "StreamPaths":
        return cls(
            checkpoint_dir=checkpoints_dir / "scoring",
            kpi_checkpoint_dir=checkpoints_dir / "kpis",
            realtime_checkpoint_dir=checkpoints_dir / "realtime_alerts",
            ledger_table=tables_dir / "ledger",
            alerts_table=tables_dir / "alerts",
            quarantine_table=tables_dir / "quarantine",
            kpi_table=tables_dir / "kpis",
            batch_log_dir=tables_dir / "stream_batches",
            shadow_table=tables_dir / "shadow",
        )

    @property
    def batch_models_dir(self) -> Path:
        """One JSON per micro-batch: the promotion (version, threshold) it was scored with."""
        return self.batch_log_dir / "models"
