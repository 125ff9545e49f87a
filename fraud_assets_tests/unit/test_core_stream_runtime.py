"""Which promotion a micro-batch is scored with: the registry's now, the recorded one on replay.

No broker: these exercise :meth:`ScoringBatchWriter.promotion_for`, the rule the writer
applies at the start of every batch (the integration test runs it on Kafka).
"""

import json
import shutil

import pytest

from fraud_assets.core.contracts import FEATURE_COLUMNS
from fraud_assets.core.paths import StreamPaths
from fraud_assets.core.registry import (
    MODEL_FAMILY,
    ModelRegistry,
    ModelRegistryError,
    check_compatible,
)
from fraud_assets.core.settings import KafkaSettings
from fraud_assets.core.stream import ScoringBatchWriter
from fraud_assets_tests.factories import separable_model

V1 = "lr-20260101T000000Z"
V2 = "lr-20260102T000000Z"


@pytest.fixture(scope="module")
def model(spark):
    return separable_model(spark)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, model):
    """V1 and V2 saved once (the same fitted pipeline under two names)."""
    registry = ModelRegistry(tmp_path_factory.mktemp("models"))
    registry.save(V1, model, {"features": list(FEATURE_COLUMNS)})
    registry.save(V2, model, {"features": list(FEATURE_COLUMNS)})
    return registry.models_dir


@pytest.fixture
def registry(models_dir, tmp_path):
    """A fresh promotion pointer over the shared saved versions."""
    registry = ModelRegistry(tmp_path / "models")
    registry.models_dir.mkdir()
    (registry.models_dir / "fraud_model").symlink_to(models_dir / "fraud_model")
    return registry


def writer(spark, tmp_path, model, promotion, registry=None) -> ScoringBatchWriter:
    paths = StreamPaths.under(tmp_path / "tables", tmp_path / "checkpoints")
    return ScoringBatchWriter(spark, KafkaSettings(), paths, model, promotion, registry=registry)


def applied(w: ScoringBatchWriter, batch_id: int) -> tuple[str, float, bool]:
    promotion, replayed = w.promotion_for(batch_id)
    return promotion.version, promotion.threshold, replayed


def test_a_new_batch_takes_the_registrys_promotion_and_a_replay_keeps_the_recorded_one(
    spark, tmp_path, model, registry
):
    first = registry.promote(V1, 0.5, "max_f1", None)
    w = writer(spark, tmp_path, model, first, registry)
    assert applied(w, 0) == (V1, 0.5, False)

    registry.set_threshold(0.9, changed_by="alice", reason="fewer alerts")
    # Batch 0 replayed (after a crash): the threshold it was first scored with.
    assert applied(w, 0) == (V1, 0.5, True)
    assert applied(w, 1) == (V1, 0.9, False)

    # A restarted writer (new process, same tables) replays by the record too.
    restarted = writer(spark, tmp_path, model, registry.promoted(), registry)
    assert applied(restarted, 0) == (V1, 0.5, True)
    assert applied(restarted, 1) == (V1, 0.9, True)
    recorded = json.loads((w.paths.batch_models_dir / "batch-000000000000.json").read_text())
    assert (recorded["batch_id"], recorded["version"], recorded["threshold"]) == (0, V1, 0.5)


def test_a_promoted_version_is_loaded_once_and_applied(spark, tmp_path, model, registry):
    first = registry.promote(V1, 0.5, "max_f1", None)
    w = writer(spark, tmp_path, model, first, registry)
    registry.promote(V2, 0.7, "manual", None, changed_by="bob", reason="switch")
    assert applied(w, 0) == (V2, 0.7, False)
    loaded = w._scorer(V2).model
    assert loaded is not model  # loaded from the registry ...
    assert applied(w, 1) == (V2, 0.7, False)
    assert w._scorer(V2).model is loaded  # ... once
    assert w._scorer(V2).top_features is not None


def test_an_unloadable_promotion_keeps_the_current_model(spark, tmp_path, model, registry):
    first = registry.promote(V1, 0.5, "max_f1", None)
    w = writer(spark, tmp_path, model, first, registry)
    broken = "lr-20260103T000000Z"
    # A corrupt version where the registry reads it: a copy of V1 (valid metadata.json with
    # the contract's features, so it passes the compatibility check and can be promoted)
    # whose stages' saved parameters are overwritten with garbage. The family folder is made
    # this test's own so the shared saved versions stay intact.
    family = registry.models_dir / MODEL_FAMILY
    shared = family.resolve()
    family.unlink()
    family.mkdir()
    for version in (V1, V2):
        (family / version).symlink_to(shared / version)
    shutil.copytree(shared / V1, registry.version_dir(broken))
    metadata = registry.version_dir(broken) / "metadata.json"
    metadata.write_text(json.dumps({**json.loads(metadata.read_text()), "version": broken}))
    stage_data = list(
        (registry.version_dir(broken) / "pipeline" / "stages").glob("*/data/*.parquet")
    )
    assert stage_data
    for path in stage_data:
        path.write_bytes(b"not a parquet file")
    registry.promote(broken, 0.6, "p", None)
    check_compatible(registry.metadata(broken))  # found and compatible ...
    with pytest.raises(ModelRegistryError, match="cannot be loaded"):
        registry.load(broken)  # ... but corrupt
    assert applied(w, 0) == (V1, 0.5, False)
    assert broken not in w._scorers


def test_without_a_registry_the_given_promotion_is_used_and_recorded(
    spark, tmp_path, model, registry
):
    first = registry.promote(V1, 0.5, "max_f1", None)
    w = writer(spark, tmp_path, model, first)
    registry.set_threshold(0.9, changed_by="alice", reason="ignored without a registry")
    assert applied(w, 0) == (V1, 0.5, False)
    assert applied(w, 0) == (V1, 0.5, True)
