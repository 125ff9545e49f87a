"""A challenger in shadow: its pointer and log, its scores in the ledger, the comparison.

Real local Spark on tiny data, no broker (the stream end to end is
``integration/test_shadow_scoring.py``).
"""

import pandas as pd
import pytest

from fraud_assets.core.contracts import LEDGER_SCHEMA, SHADOW_SCHEMA, field_names
from fraud_assets.core.registry import ModelRegistry, ModelRegistryError
from fraud_assets.core.scoring import (
    ledger_projection,
    ledger_rows,
    ledger_shadow,
    parse_transactions,
    score_transactions,
)
from fraud_assets.core.shadow import (
    EvidenceRule,
    NotEnoughEvidenceError,
    compare,
    promote_challenger,
    read_shadow,
)
from fraud_assets.core.sinks import commit_batch_partition
from fraud_assets.core.train import TrainingConfig, fit
from fraud_assets.kafka.producer import encode_message, transaction_message
from fraud_assets_tests.factories import (
    audited_df,
    json_bytes,
    kafka_record,
    kafka_records_df,
    separable_model,
    separable_transactions,
)

CHAMPION = "lr-20260101T000000Z"
CHALLENGER = "rf-20260102T000000Z"
ROWS = separable_transactions(60)


@pytest.fixture(scope="module")
def champion(spark):
    return separable_model(spark)


@pytest.fixture(scope="module")
def challenger(spark):
    training = audited_df(spark, separable_transactions(200))
    return fit(training, TrainingConfig(algorithm="rf", num_trees=5))


@pytest.fixture
def registry(tmp_path, champion):
    registry = ModelRegistry(tmp_path / "models")
    registry.save(CHAMPION, champion, {"threshold": 0.5, "policy": "max_f1"})
    registry.save(CHALLENGER, champion, {"threshold": 0.3, "policy": "max_f1"})
    registry.promote(CHAMPION, 0.5, "max_f1", 0.9, changed_by="selection")
    return registry


def _records(spark):
    valid = [
        kafka_record(value, key, offset=i)
        for i, (key, value) in enumerate(encode_message(transaction_message(r)) for r in ROWS)
    ]
    bad = [kafka_record(json_bytes({"transaction_id": "x"}), b"bad", offset=1000)]
    return kafka_records_df(spark, valid + bad)


# --- the challenger pointer -------------------------------------------------------------------


def test_naming_a_challenger_takes_its_recommended_threshold_and_is_logged(registry):
    named = registry.name_challenger(CHALLENGER, changed_by="carol", reason="try the forest")
    assert (named.version, named.threshold, named.policy) == (CHALLENGER, 0.3, "max_f1")
    assert registry.challenger() == named
    assert registry.promoted().version == CHAMPION  # the champion is untouched
    last = registry.change_log().iloc[-1]
    assert (last["action"], last["new_version"], last["new_threshold"]) == (
        "name_challenger",
        CHALLENGER,
        0.3,
    )
    assert (last["changed_by"], last["reason"]) == ("carol", "try the forest")

    again = registry.name_challenger(CHALLENGER, 0.7, changed_by="carol", reason="stricter")
    assert again.threshold == 0.7
    assert registry.change_log().iloc[-1]["old_threshold"] == 0.3


def test_the_champion_or_an_unknown_version_cannot_be_the_challenger(registry):
    with pytest.raises(ModelRegistryError, match="is the promoted model"):
        registry.name_challenger(CHAMPION, changed_by="c", reason="r")
    with pytest.raises(ModelRegistryError):
        registry.name_challenger("rf-19990101T000000Z", changed_by="c", reason="r")
    with pytest.raises(ModelRegistryError, match="threshold"):
        registry.name_challenger(CHALLENGER, 1.5, changed_by="c", reason="r")
    assert registry.challenger() is None


def test_clearing_and_promoting_the_challenger_clear_the_pointer(registry):
    assert registry.clear_challenger(changed_by="c", reason="nothing named") is None
    registry.name_challenger(CHALLENGER, changed_by="c", reason="try")
    assert registry.clear_challenger(changed_by="c", reason="enough").version == CHALLENGER
    assert registry.challenger() is None

    registry.name_challenger(CHALLENGER, changed_by="c", reason="try again")
    registry.promote(CHALLENGER, 0.3, "max_f1", 0.9, changed_by="dave", reason="it won")
    assert registry.challenger() is None
    actions = list(registry.change_log()["action"])
    assert actions == [
        "promote",
        "name_challenger",
        "clear_challenger",
        "name_challenger",
        "promote",
        "clear_challenger",
    ]


# --- shadow scores in the ledger ---------------------------------------------------------------


def test_the_ledger_holds_both_scores_and_the_shadow_rows_equal_batch_scoring(
    spark, champion, challenger
):
    projection = ledger_projection(0.5, CHAMPION, None, (CHALLENGER, 0.3))
    ledger = ledger_rows(parse_transactions(_records(spark)), champion, projection, challenger)
    assert ledger.columns == field_names(LEDGER_SCHEMA)
    shadow = ledger_shadow(ledger)
    assert shadow.columns == field_names(SHADOW_SCHEMA)
    rows = {r["transaction_id"]: r for r in shadow.collect()}
    audited = audited_df(spark, ROWS)
    champion_scores = score_transactions(champion, audited, 0.5, CHAMPION).collect()
    challenger_scores = score_transactions(challenger, audited, 0.3, CHALLENGER).collect()
    assert set(rows) == {r["transaction_id"] for r in champion_scores}  # no rejected row
    for expected in champion_scores:
        row = rows[expected["transaction_id"]]
        assert (row["fraud_prob"], row["is_alert"], row["model_version"]) == (
            expected["fraud_prob"],
            expected["is_alert"],
            CHAMPION,
        )
    for expected in challenger_scores:
        row = rows[expected["transaction_id"]]
        assert (row["challenger_prob"], row["challenger_alert"]) == (
            expected["fraud_prob"],
            expected["is_alert"],
        )
        assert (row["challenger_version"], row["challenger_threshold"]) == (CHALLENGER, 0.3)
    rejected = ledger.where("reason IS NOT NULL").collect()
    assert len(rejected) == 1 and rejected[0]["challenger_prob"] is None


def test_without_a_challenger_the_shadow_columns_are_null_and_no_shadow_row_exists(spark, champion):
    ledger = ledger_rows(
        parse_transactions(_records(spark)), champion, ledger_projection(0.5, CHAMPION)
    )
    assert ledger.where("challenger_version IS NOT NULL").count() == 0
    assert ledger_shadow(ledger).count() == 0


# --- the comparison ------------------------------------------------------------------------------


def _shadow_frame(**columns) -> pd.DataFrame:
    base = {
        "transaction_id": ["a", "b", "c", "d", "e", "f"],
        "event_time": pd.to_datetime(["2026-01-01"] * 6),
        "Amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "Class": [1, 1, 0, 0, 0, None],
        "model_version": [CHAMPION] * 6,
        "fraud_prob": [0.9, 0.2, 0.8, 0.1, 0.1, 0.95],
        "threshold": [0.5] * 6,
        "is_alert": [True, False, True, False, False, True],
        "challenger_version": [CHALLENGER] * 6,
        "challenger_prob": [0.7, 0.6, 0.1, 0.2, 0.1, 0.1],
        "challenger_threshold": [0.5] * 6,
        "challenger_alert": [True, True, False, False, False, False],
        "batch_id": [0, 0, 1, 1, 2, 2],
    }
    return pd.DataFrame(base | columns)


def test_compare_counts_alerts_precision_recall_and_disagreements():
    comparison = compare(_shadow_frame())
    assert comparison.challenger_version == CHALLENGER
    assert (comparison.rows, comparison.labelled, comparison.frauds) == (6, 5, 2)
    assert comparison.batches == 3
    champion, challenger = comparison.models.to_dict(orient="records")
    # Champion: alerts a, c, f; on labelled rows a (fraud) and c (not).
    assert (champion["alerts"], champion["labelled_alerts"], champion["true_alerts"]) == (3, 2, 1)
    assert (champion["precision"], champion["recall"]) == (0.5, 0.5)
    # Challenger: alerts a and b, both frauds.
    assert (challenger["alerts"], challenger["true_alerts"]) == (2, 2)
    assert (challenger["precision"], challenger["recall"]) == (1.0, 1.0)
    assert challenger["average_precision"] == 1.0
    assert champion["average_precision"] < 1.0
    # b, c and f are alerted by one model only; the labelled fraud b is listed first.
    assert comparison.disagreements == 3
    shown = comparison.disagreement_rows
    assert list(shown["transaction_id"]) == ["b", "f", "c"]
    assert list(shown["alerted_by"]) == ["challenger", "champion", "champion"]


def test_evidence_rule_and_promotion_need_enough_labelled_rows(registry, spark, tmp_path):
    registry.name_challenger(CHALLENGER, changed_by="c", reason="try")
    shadow_table = tmp_path / "shadow"
    frame = _shadow_frame().drop(columns="batch_id")
    frame["Class"] = frame["Class"].astype("Int32")
    commit_batch_partition(spark.createDataFrame(frame, schema=SHADOW_SCHEMA), shadow_table, 0)
    assert len(read_shadow(shadow_table)) == 6

    with pytest.raises(NotEnoughEvidenceError, match="5 labelled rows with 2 frauds"):
        promote_challenger(
            registry, shadow_table, EvidenceRule(10, 1), changed_by="d", reason="early"
        )
    assert registry.promoted().version == CHAMPION

    promotion, _ = promote_challenger(
        registry, shadow_table, EvidenceRule(5, 2), changed_by="d", reason="it won"
    )
    assert (promotion.version, promotion.threshold) == (CHALLENGER, 0.3)
    assert registry.challenger() is None
    assert "5 labelled rows with 2 frauds" in registry.change_log().iloc[-2]["reason"]
