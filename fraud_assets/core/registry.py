"""A file-based model registry: versioned Spark PipelineModels and the promoted one.

Layout under ``models_dir``::

    fraud_model/<version>/pipeline/       Spark ML PipelineModel
    fraud_model/<version>/metadata.json   features, metrics, training data, Spark version
    promoted.json                         the version and threshold the stream uses
    changes.jsonl                         every promotion and threshold change (who/when/what)
    model_selection_summary.json          the last selection (sweep and recommendation)

Writes go to a temporary sibling first and are renamed into place, so a reader never sees a
half-written model, pointer or change log. Changes of the pointer are serialised by an
exclusive lock on ``.registry.lock``, so two operators cannot lose each other's change.
"""

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.ml import PipelineModel

MODEL_FAMILY = "fraud_model"


class ModelRegistryError(RuntimeError):
    """A model or promotion is missing or unusable; the message says what to do."""


def check_compatible(metadata: dict[str, Any]) -> None:
    """Refuse a model whose input features are not the transaction contract's.

    The stream assembles :data:`~fraud_assets.core.contracts.FEATURE_COLUMNS` in that
    order; a model saved with other features would score garbage (or fail mid-stream).

    Raises:
        ModelRegistryError: The metadata's ``features`` differ, with what to do.
    """
    from fraud_assets.core.contracts import FEATURE_COLUMNS

    features = metadata.get("features")
    if features != list(FEATURE_COLUMNS):
        raise ModelRegistryError(
            f"model version {metadata.get('version', '?')} is incompatible: it was trained on "
            f"features {features!r}, the stream scores {len(FEATURE_COLUMNS)} features "
            f"({FEATURE_COLUMNS[0]}..{FEATURE_COLUMNS[-1]}); train a new version and promote "
            "it (materialize fraud_model and model_selection in Dagster)"
        )


@dataclass(frozen=True)
class Promotion:
    """The model version the stream scores with, and its alert threshold."""

    version: str
    threshold: float
    policy: str
    promoted_at: str
    pr_auc: float | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Promotion":
        """The promotion in ``values``; unknown keys (written by a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


CHANGE_LOG_COLUMNS: tuple[str, ...] = (
    "changed_at",
    "changed_by",
    "action",
    "old_version",
    "new_version",
    "old_threshold",
    "new_threshold",
    "policy",
    "reason",
)
"""One row per change of the promotion or the challenger pointer: when (UTC), who, what
(``promote``, ``set_threshold``, ``name_challenger``, ``clear_challenger``), the version and
threshold before and after (the challenger's, for its two actions), the policy that chose
the new threshold (``manual`` for an operator's threshold) and the operator's reason."""


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

    def recorded_pr_auc(self, version: str) -> float | None:
        """The PR-AUC ``version``'s metadata records (None if it records none)."""
        return (self.metadata(version).get("metrics") or {}).get("pr_auc")

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

    @property
    def change_log_path(self) -> Path:
        return self.models_dir / "changes.jsonl"

    @property
    def challenger_path(self) -> Path:
        return self.models_dir / "challenger.json"

    def promote(
        self,
        version: str,
        threshold: float,
        policy: str,
        pr_auc: float | None,
        *,
        changed_by: str = "unknown",
        reason: str = "",
    ) -> Promotion:
        """Point the stream at ``version`` with ``threshold``, and log the change.

        A running stream applies it from its next micro-batch (no restart).
        """
        self.metadata(version)
        _check_threshold(threshold)
        with self._locked():
            return self._change(
                "promote", version, threshold, policy, pr_auc, changed_by=changed_by, reason=reason
            )

    def set_threshold(self, threshold: float, *, changed_by: str, reason: str) -> Promotion:
        """Keep the promoted version, alert at ``threshold`` from now on, and log the change.

        The policy becomes ``manual``: an operator chose the threshold, not a selection policy.
        """
        _check_threshold(threshold)
        with self._locked():
            current = self.require_promoted()
            return self._change(
                "set_threshold",
                current.version,
                threshold,
                "manual",
                current.pr_auc,
                changed_by=changed_by,
                reason=reason,
            )

    def name_challenger(
        self,
        version: str,
        threshold: float | None = None,
        *,
        changed_by: str,
        reason: str,
    ) -> Promotion:
        """Score ``version`` in shadow beside the promoted model, and log the change.

        ``threshold`` defaults to the one its selection recommended (its metadata). A running
        stream scores every valid message with it from its next micro-batch, into the shadow
        table only (never to ``fraud_alerts``).

        Raises:
            ModelRegistryError: ``version`` is not saved, is the promoted version, or has no
                recorded threshold and none was given.
        """
        metadata = self.metadata(version)
        if threshold is None:
            threshold = metadata.get("threshold")
            if threshold is None:
                raise ModelRegistryError(
                    f"{version} records no recommended threshold: name it with --threshold"
                )
        _check_threshold(threshold)
        with self._locked():
            champion = self.promoted()
            if champion is not None and champion.version == version:
                raise ModelRegistryError(
                    f"{version} is the promoted model: a challenger must be another version"
                )
            old = self.challenger()
            now = datetime.now(UTC).isoformat()
            challenger = Promotion(
                version=version,
                threshold=float(threshold),
                policy=str(metadata.get("policy") or "manual"),
                promoted_at=now,
                pr_auc=(metadata.get("metrics") or {}).get("pr_auc"),
            )
            self._append_change(
                _log_entry(now, changed_by, "name_challenger", old, challenger, reason)
            )
            write_json_atomic(self.challenger_path, asdict(challenger))
            return challenger

    def clear_challenger(self, *, changed_by: str, reason: str) -> Promotion | None:
        """Stop shadow scoring (from the stream's next micro-batch); the cleared challenger."""
        with self._locked():
            return self._clear_challenger(changed_by, reason)

    def _clear_challenger(self, changed_by: str, reason: str) -> Promotion | None:
        old = self.challenger()
        if old is None:
            return None
        now = datetime.now(UTC).isoformat()
        entry = _log_entry(now, changed_by, "clear_challenger", old, None, reason)
        self._append_change(entry)
        self.challenger_path.unlink()
        return old

    def challenger(self) -> Promotion | None:
        """The challenger scored in shadow, or None."""
        if not self.challenger_path.is_file():
            return None
        return Promotion.from_dict(json.loads(self.challenger_path.read_text()))

    def _change(
        self,
        action: str,
        version: str,
        threshold: float,
        policy: str,
        pr_auc: float | None,
        *,
        changed_by: str,
        reason: str,
    ) -> Promotion:
        """Log, then move the pointer (the caller holds the lock)."""
        old = self.promoted()
        now = datetime.now(UTC).isoformat()
        promotion = Promotion(
            version=version,
            threshold=float(threshold),
            policy=policy,
            promoted_at=now,
            pr_auc=pr_auc,
        )
        entry = _log_entry(now, changed_by, action, old, promotion, reason)
        # The log first: a crash in between leaves a logged change not yet applied (visible
        # as a last entry that disagrees with promoted.json), never an unlogged one.
        self._append_change(entry)
        write_json_atomic(self.promotion_path, asdict(promotion))
        challenger = self.challenger()
        if challenger is not None and challenger.version == version:
            # The challenger won: it scores as the champion now, not twice.
            self._clear_challenger(changed_by, f"promoted: {reason}")
        return promotion

    def _append_change(self, entry: dict[str, Any]) -> None:
        # Rewritten whole through a temporary file and a rename: an append interrupted
        # mid-line would leave a torn record; changes are rare, so the copy costs nothing.
        path = self.change_log_path
        previous = path.read_text() if path.is_file() else ""
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(previous)
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with open(self.models_dir / ".registry.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def change_log(self) -> pd.DataFrame:
        """Every promotion and threshold change, oldest first (:data:`CHANGE_LOG_COLUMNS`).

        ``changed_at`` is a UTC timestamp; an empty frame with those columns before the first
        change.
        """
        path = self.change_log_path
        rows = (
            [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if path.is_file()
            else []
        )
        table = pd.DataFrame(rows, columns=list(CHANGE_LOG_COLUMNS))
        table["changed_at"] = pd.to_datetime(table["changed_at"], utc=True)
        return table

    def promoted(self) -> Promotion | None:
        """The current promotion, or None when no model was promoted yet."""
        if not self.promotion_path.is_file():
            return None
        return Promotion.from_dict(json.loads(self.promotion_path.read_text()))

    def require_promoted(self) -> Promotion:
        promotion = self.promoted()
        if promotion is None:
            raise ModelRegistryError(
                f"no promoted model in {self.models_dir}: materialize model_selection in "
                "Dagster (or run `make demo`) before starting the stream"
            )
        return promotion


def _log_entry(
    now: str,
    changed_by: str,
    action: str,
    old: Promotion | None,
    new: Promotion | None,
    reason: str,
) -> dict[str, Any]:
    """One change-log entry (:data:`CHANGE_LOG_COLUMNS`)."""
    return {
        "changed_at": now,
        "changed_by": changed_by,
        "action": action,
        "old_version": old.version if old else None,
        "new_version": new.version if new else None,
        "old_threshold": old.threshold if old else None,
        "new_threshold": new.threshold if new else None,
        "policy": new.policy if new else None,
        "reason": reason,
    }


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ModelRegistryError(f"threshold must be in (0, 1), got {threshold}")
