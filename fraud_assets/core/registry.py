"""A file-based model registry: versioned Spark PipelineModels and the promoted one.

Layout under ``models_dir``::

    fraud_model/<version>/pipeline/       Spark ML PipelineModel
    fraud_model/<version>/metadata.json   features, metrics, training data, Spark version
    promoted.json                         the version and threshold the stream uses
    model_selection_summary.json          the last selection (sweep and recommendation)

Writes go to a temporary sibling first and are renamed into place, so a reader never sees a
half-written model or pointer.
"""

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.ml import PipelineModel

MODEL_FAMILY = "fraud_model"


class ModelRegistryError(RuntimeError):
    """A model or promotion is missing or unusable; the message says what to do."""


@dataclass(frozen=True)
class Promotion:
    """The model version the stream scores with, and its alert threshold."""

    version: str
    threshold: float
    policy: str
    promoted_at: str
    pr_auc: float | None = None


def new_version(algorithm: str, now: datetime | None = None) -> str:
    """A sortable, unique-per-second version name, e.g. ``lr-20261125T101500Z``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{algorithm}-{stamp}"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(tmp, path)


class ModelRegistry:
    """Versioned models and the promotion pointer under one folder."""

    def __init__(self, models_dir: Path):
        self.models_dir = Path(models_dir)

    def version_dir(self, version: str) -> Path:
        return self.models_dir / MODEL_FAMILY / version

    def versions(self) -> list[str]:
        """Saved versions, oldest first."""
        family = self.models_dir / MODEL_FAMILY
        if not family.is_dir():
            return []
        names = [p.name for p in family.iterdir() if (p / "metadata.json").is_file()]
        # "<algorithm>-<UTC stamp>": order by the stamp, across algorithms.
        return sorted(names, key=lambda name: (name.partition("-")[2], name))

    def save(self, version: str, model: PipelineModel, metadata: dict[str, Any]) -> Path:
        """Save a new version; refuses to overwrite an existing one."""
        target = self.version_dir(version)
        if target.exists():
            raise ModelRegistryError(f"model version {version} already exists at {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        try:
            model.write().save(str(staging / "pipeline"))
            write_json_atomic(staging / "metadata.json", {"version": version, **metadata})
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return target

    def metadata(self, version: str) -> dict[str, Any]:
        path = self.version_dir(version) / "metadata.json"
        if not path.is_file():
            raise ModelRegistryError(
                f"model version {version} not found under {self.models_dir}: "
                f"known versions are {self.versions() or 'none'}; train one first "
                "(materialize fraud_model in Dagster, or run `make demo`)"
            )
        return json.loads(path.read_text())

    def load(self, version: str) -> PipelineModel:
        """Load a saved version's PipelineModel."""
        self.metadata(version)
        try:
            return PipelineModel.load(str(self.version_dir(version) / "pipeline"))
        except Exception as error:  # Spark raises Py4J/Analysis errors of many kinds here.
            raise ModelRegistryError(
                f"model version {version} at {self.version_dir(version)} cannot be loaded "
                f"({type(error).__name__}: {str(error).splitlines()[0]}); retrain it"
            ) from error

    @property
    def promotion_path(self) -> Path:
        return self.models_dir / "promoted.json"

    def promote(
        self, version: str, threshold: float, policy: str, pr_auc: float | None
    ) -> Promotion:
        """Point the stream at ``version`` with ``threshold``."""
        self.metadata(version)
        if not 0.0 < threshold < 1.0:
            raise ModelRegistryError(f"threshold must be in (0, 1), got {threshold}")
        promotion = Promotion(
            version=version,
            threshold=threshold,
            policy=policy,
            promoted_at=datetime.now(UTC).isoformat(),
            pr_auc=pr_auc,
        )
        write_json_atomic(self.promotion_path, asdict(promotion))
        return promotion

    def promoted(self) -> Promotion | None:
        """The current promotion, or None when no model was promoted yet."""
        if not self.promotion_path.is_file():
            return None
        return Promotion(**json.loads(self.promotion_path.read_text()))

    def require_promoted(self) -> Promotion:
        promotion = self.promoted()
        if promotion is None:
            raise ModelRegistryError(
                f"no promoted model in {self.models_dir}: materialize model_selection in "
                "Dagster (or run `make demo`) before starting the stream"
            )
        return promotion
