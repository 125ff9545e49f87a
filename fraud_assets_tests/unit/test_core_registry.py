"""The file-based model registry: versions, atomic saves, promotion pointer, clear errors."""

import json
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from fraud_assets.core.registry import (
    CHANGE_LOG_COLUMNS,
    MODEL_FAMILY,
    ModelRegistry,
    ModelRegistryError,
    Promotion,
    new_version,
)
from fraud_assets.core.scoring import with_fraud_prob
from fraud_assets_tests.factories import audited_df, separable_model, separable_transactions

V1 = "lr-20260101T000000Z"
V2 = "lr-20260102T000000Z"
METADATA = {"features": ["V1", "Amount"], "metrics": {"pr_auc": 0.9}}


@pytest.fixture(scope="module")
def transactions(spark):
    return audited_df(spark, separable_transactions(60)).cache()


@pytest.fixture(scope="module")
def model(spark):
    return separable_model(spark)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model) -> ModelRegistry:
    """A registry holding V1 (saved once for the module: saving costs a Spark job)."""
    registry = ModelRegistry(tmp_path_factory.mktemp("models"))
    registry.save(V1, model, METADATA)
    return registry


def _probabilities(model, df) -> dict[str, float]:
    return {r["transaction_id"]: r["fraud_prob"] for r in with_fraud_prob(model, df).collect()}


def test_new_version_is_algorithm_and_utc_stamp():
    assert new_version("lr", datetime(2026, 11, 25, 10, 15, 0, tzinfo=UTC)) == (
        "lr-20261125T101500Z"
    )


def test_save_and_load_round_trip_scores_identically(saved, model, transactions):
    loaded = saved.load(V1)
    assert _probabilities(loaded, transactions) == _probabilities(model, transactions)
    assert saved.metadata(V1) == {"version": V1, **METADATA}
    assert (saved.version_dir(V1) / "pipeline").is_dir()


def test_save_leaves_no_staging_folder(saved):
    assert [p.name for p in (saved.models_dir / MODEL_FAMILY).iterdir()] == [V1]


def test_saving_an_existing_version_is_refused_and_keeps_the_original(saved, model):
    with pytest.raises(ModelRegistryError, match="already exists"):
        saved.save(V1, model, {"metrics": {"pr_auc": 0.1}})
    assert saved.metadata(V1)["metrics"] == {"pr_auc": 0.9}


def test_versions_are_listed_oldest_first_and_skip_incomplete_folders(tmp_path, model):
    registry = ModelRegistry(tmp_path)
    assert registry.versions() == []
    registry.save(V2, model, METADATA)
    registry.save(V1, model, METADATA)
    # A folder without metadata.json (an interrupted copy) is not a version.
    (tmp_path / MODEL_FAMILY / "lr-20260103T000000Z").mkdir()
    assert registry.versions() == [V1, V2]


def test_versions_are_oldest_first_across_algorithms(tmp_path):
    registry = ModelRegistry(tmp_path)
    for version in ("rf-20260101T000000Z", "lr-20260102T000000Z"):
        # metadata.json alone makes a listed version; no Spark write needed for ordering.
        folder = registry.version_dir(version)
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps({"version": version}))
    assert registry.versions() == ["rf-20260101T000000Z", "lr-20260102T000000Z"]


def test_unknown_version_metadata_says_what_exists_and_what_to_do(saved):
    with pytest.raises(ModelRegistryError) as error:
        saved.metadata("lr-19990101T000000Z")
    message = str(error.value)
    assert "lr-19990101T000000Z not found" in message
    assert V1 in message  # the known versions
    assert "materialize fraud_model" in message


def test_loading_an_unknown_version_raises_the_registry_error(saved):
    with pytest.raises(ModelRegistryError, match="not found"):
        saved.load("lr-19990101T000000Z")


def test_a_version_whose_pipeline_is_unreadable_asks_for_a_retrain(tmp_path):
    registry = ModelRegistry(tmp_path)
    folder = registry.version_dir(V1)
    (folder / "pipeline").mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"version": V1}))
    with pytest.raises(ModelRegistryError, match="retrain it"):
        registry.load(V1)


def test_promote_and_promoted_round_trip(tmp_path, saved):
    registry = ModelRegistry(saved.models_dir)
    assert ModelRegistry(tmp_path).promoted() is None
    promotion = registry.promote(V1, 0.73, "max_f1", 0.91)
    assert isinstance(promotion, Promotion)
    assert (promotion.version, promotion.threshold, promotion.policy, promotion.pr_auc) == (
        V1,
        0.73,
        "max_f1",
        0.91,
    )
    assert datetime.fromisoformat(promotion.promoted_at).tzinfo is not None
    assert registry.promoted() == promotion
    assert registry.require_promoted() == promotion
    # A new registry object reads the same pointer from disk.
    assert ModelRegistry(saved.models_dir).promoted() == promotion


def test_require_promoted_without_promotion_says_what_to_do(tmp_path):
    with pytest.raises(ModelRegistryError) as error:
        ModelRegistry(tmp_path).require_promoted()
    assert "no promoted model" in str(error.value)
    assert "materialize model_selection" in str(error.value)
    assert "make demo" in str(error.value)


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_promoting_a_threshold_outside_0_1_is_refused(tmp_path, threshold):
    registry = ModelRegistry(tmp_path)
    folder = registry.version_dir(V1)
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"version": V1}))
    with pytest.raises(ModelRegistryError, match="threshold must be in"):
        registry.promote(V1, threshold, "manual", None)
    assert registry.promoted() is None


def test_promoting_an_unknown_version_is_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(ModelRegistryError, match="not found"):
        registry.promote("lr-19990101T000000Z", 0.5, "manual", None)
    assert not registry.promotion_path.exists()


# --- change log and runtime threshold ------------------------------------------------------


def _known_version(registry: ModelRegistry, version: str) -> None:
    """Make ``version`` known to the registry (metadata only; promotion needs no Spark)."""
    folder = registry.version_dir(version)
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"version": version}))


def test_every_change_is_logged_with_who_when_and_what(tmp_path):
    registry = ModelRegistry(tmp_path)
    _known_version(registry, V1)
    _known_version(registry, V2)
    assert registry.change_log().empty
    assert list(registry.change_log().columns) == list(CHANGE_LOG_COLUMNS)

    before = datetime.now(UTC)
    registry.promote(V1, 0.7, "max_f1", 0.9)  # changed_by and reason are optional
    raised = registry.set_threshold(0.95, changed_by="alice", reason="too many alerts")
    registry.promote(V2, 0.8, "min_precision", 0.92, changed_by="bob", reason="better AP")
    after = datetime.now(UTC)

    assert (raised.version, raised.threshold, raised.policy, raised.pr_auc) == (
        V1,
        0.95,
        "manual",
        0.9,
    )
    assert registry.promoted().version == V2 and registry.promoted().threshold == 0.8
    log = registry.change_log()
    rows = log.drop(columns="changed_at").to_dict(orient="records")
    # No threshold before the first promotion: a missing value in a float column.
    assert math.isnan(rows[0].pop("old_threshold"))
    assert rows == [
        {
            "changed_by": "unknown",
            "action": "promote",
            "old_version": None,
            "new_version": V1,
            "new_threshold": 0.7,
            "policy": "max_f1",
            "reason": "",
        },
        {
            "changed_by": "alice",
            "action": "set_threshold",
            "old_version": V1,
            "new_version": V1,
            "old_threshold": 0.7,
            "new_threshold": 0.95,
            "policy": "manual",
            "reason": "too many alerts",
        },
        {
            "changed_by": "bob",
            "action": "promote",
            "old_version": V1,
            "new_version": V2,
            "old_threshold": 0.95,
            "new_threshold": 0.8,
            "policy": "min_precision",
            "reason": "better AP",
        },
    ]
    assert all(before <= t <= after for t in log["changed_at"])
    assert str(log["changed_at"].dt.tz) == "UTC"


def test_set_threshold_without_promotion_or_out_of_range_changes_nothing(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(ModelRegistryError, match="no promoted model"):
        registry.set_threshold(0.9, changed_by="alice", reason="r")
    _known_version(registry, V1)
    registry.promote(V1, 0.7, "max_f1", None)
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ModelRegistryError, match="threshold must be in"):
            registry.set_threshold(bad, changed_by="alice", reason="r")
    assert registry.promoted().threshold == 0.7
    assert len(registry.change_log()) == 1


def test_concurrent_changes_are_all_logged(tmp_path):
    registry = ModelRegistry(tmp_path)
    _known_version(registry, V1)
    registry.promote(V1, 0.5, "max_f1", None)
    thresholds = [round(0.6 + i / 100, 2) for i in range(20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda t: ModelRegistry(tmp_path).set_threshold(t, changed_by="x", reason="r"),
                thresholds,
            )
        )
    log = registry.change_log()
    assert sorted(log["new_threshold"].iloc[1:]) == thresholds
    # Each change saw the one before it: the chain of old -> new thresholds is unbroken.
    assert list(log["old_threshold"].iloc[1:]) == list(log["new_threshold"].iloc[:-1])
    assert registry.promoted().threshold == log["new_threshold"].iloc[-1]


def test_a_promotion_file_with_unknown_fields_still_reads(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.promotion_path.write_text(
        json.dumps({"version": V1, "threshold": 0.5, "policy": "p", "promoted_at": "t", "new": 1})
    )
    assert registry.promoted() == Promotion(V1, 0.5, "p", "t")
