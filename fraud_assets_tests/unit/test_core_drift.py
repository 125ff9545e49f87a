"""Drift: PSI per column against the reference's quantile bins, on tiny data and real Spark."""

import math

import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.drift import (
    EMPTY_SHARE,
    ReferenceProfile,
    bin_counts,
    drift_table,
    load_profile,
    measure_drift,
    population_stability_index,
    recent_offsets,
    reference_profile,
    save_profile,
    training_reference,
)

COLUMNS = ("x", "amount")


def frame(spark, x: np.ndarray, amount: np.ndarray):
    return spark.createDataFrame(pd.DataFrame({"x": x, "amount": amount}))


@pytest.fixture(scope="module")
def samples():
    """Two independent draws of the same distributions, 4000 rows each."""
    rng = np.random.default_rng(17)
    draw = lambda: (rng.normal(0.0, 1.0, 4000), rng.lognormal(3.0, 1.0, 4000))  # noqa: E731
    return draw(), draw()


@pytest.fixture(scope="module")
def profile(spark, samples):
    (x, amount), _ = samples
    return reference_profile(frame(spark, x, amount), COLUMNS, bins=10)


def test_profile_cuts_at_deciles_and_every_bin_holds_a_tenth(profile):
    for column in COLUMNS:
        assert len(profile.edges[column]) == 9
        assert profile.edges[column] == sorted(profile.edges[column])
        assert profile.shares[column] == pytest.approx([0.1] * 10, abs=0.01)
    assert profile.rows == 4000
    assert profile.means["x"] == pytest.approx(0.0, abs=0.05)


def test_the_reference_itself_has_psi_zero(spark, samples, profile):
    (x, amount), _ = samples
    table = drift_table(profile, frame(spark, x, amount))
    assert table["psi"].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert set(table["live_rows"]) == {4000}


def test_another_sample_of_the_same_distribution_stays_far_below_the_threshold(
    spark, samples, profile
):
    _, (x, amount) = samples
    table = drift_table(profile, frame(spark, x, amount))
    # Sampling noise alone: about (bins - 1) * (1/4000 + 1/4000) = 0.0045.
    assert table["psi"].max() < 0.02


def test_a_shifted_or_scaled_distribution_gives_a_large_psi_sorted_first(spark, samples, profile):
    _, (x, amount) = samples
    table = drift_table(profile, frame(spark, x + 1.0, amount * 3.0))
    psi = dict(zip(table["feature"], table["psi"], strict=True))
    # A one-standard-deviation shift of a normal is a PSI of about 1; tripled amounts more.
    assert psi["x"] > 0.5
    assert psi["amount"] > 1.0
    assert table["feature"].tolist() == ["amount", "x"]  # largest first
    assert table.loc[table["feature"] == "x", "live_mean"].item() == pytest.approx(1.0, abs=0.1)


def test_only_one_column_drifting_leaves_the_other_near_zero(spark, samples, profile):
    _, (x, amount) = samples
    table = drift_table(profile, frame(spark, x, amount * 3.0)).set_index("feature")
    assert table.loc["amount", "psi"] > 1.0
    assert table.loc["x", "psi"] < 0.02


def test_values_outside_the_reference_range_fall_in_the_open_end_bins(spark, profile):
    live = frame(spark, np.full(100, 50.0), np.full(100, -1.0))
    shares = measure_drift(profile, live).bin_shares("x")
    assert shares["live_share"].tolist() == [0.0] * 9 + [1.0]
    assert shares["low"].iloc[0] == -math.inf and shares["high"].iloc[-1] == math.inf
    assert drift_table(profile, live)["psi"].min() > 2.0


def test_nulls_are_in_no_bin_and_a_column_without_values_has_no_psi(spark, profile):
    live = spark.createDataFrame(
        [(0.5, None), (None, None), (-0.5, None)], "x double, amount double"
    )
    counts, means = bin_counts(live, profile.edges)
    assert sum(counts["x"]) == 2
    assert sum(counts["amount"]) == 0
    assert means["amount"] is None
    table = drift_table(profile, live).set_index("feature")
    assert math.isnan(table.loc["amount", "psi"])
    assert table.index[-1] == "amount"  # no PSI sorts last


def test_ties_merge_quantiles_into_fewer_bins(spark):
    # 80% of the scores are exactly 0: the first eight deciles are one cut point.
    values = np.concatenate([np.zeros(800), np.linspace(0.1, 1.0, 200)])
    reference = spark.createDataFrame(pd.DataFrame({"fraud_prob": values}))
    tied = reference_profile(reference, ["fraud_prob"], bins=10)
    assert len(tied.edges["fraud_prob"]) < 9
    assert sum(tied.shares["fraud_prob"]) == pytest.approx(1.0)
    assert drift_table(tied, reference)["psi"].item() == pytest.approx(0.0, abs=1e-12)


def test_population_stability_index_by_hand():
    assert population_stability_index([0.5, 0.5], [0.5, 0.5]) == 0.0
    by_hand = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert population_stability_index([0.5, 0.5], [0.9, 0.1]) == pytest.approx(by_hand)
    # An empty live bin counts as EMPTY_SHARE, so the PSI is large but finite.
    empty = population_stability_index([0.5, 0.5], [1.0, 0.0])
    assert empty == pytest.approx(
        (1.0 - 0.5) * math.log(2.0) + (EMPTY_SHARE - 0.5) * math.log(EMPTY_SHARE / 0.5)
    )
    with pytest.raises(ValueError, match="bins"):
        population_stability_index([1.0], [0.5, 0.5])


def test_reference_needs_rows_and_two_bins(spark):
    empty = spark.createDataFrame([], "x double")
    with pytest.raises(ValueError, match="no rows"):
        reference_profile(empty, ["x"])
    with pytest.raises(ValueError, match="bins"):
        reference_profile(empty, ["x"], bins=1)


def test_a_saved_profile_is_reused_only_for_the_same_provenance(tmp_path, profile):
    path = tmp_path / "drift" / "v1.json"
    save_profile(path, profile, model_version="v1", bins=10)
    assert load_profile(path, model_version="v1", bins=10) == profile
    assert load_profile(path, model_version="v1", bins=20) is None
    assert load_profile(tmp_path / "missing.json", model_version="v1") is None
    assert ReferenceProfile.from_dict(profile.as_dict()) == profile


def test_recent_offsets_take_the_last_rows_spread_over_partitions():
    assert recent_offsets({0: 1000, 1: 30}, rows=200) == {0: 900, 1: 0}
    assert recent_offsets({0: 0}, rows=10) == {0: 0}


def test_training_reference_is_the_time_ordered_training_part_sampled_the_same_way(spark):
    audited = spark.range(1000).withColumnRenamed("id", "row_index")
    whole = training_reference(audited, holdout_fraction=0.2, max_rows=10_000)
    assert whole.count() == 800
    assert whole.agg({"row_index": "max"}).first()[0] == 799
    sampled = training_reference(audited, holdout_fraction=0.2, max_rows=200)
    rows = sorted(r.row_index for r in sampled.collect())
    assert 150 < len(rows) < 250
    assert max(rows) <= 799
    again = sorted(r.row_index for r in training_reference(audited, 0.2, 200).collect())
    assert rows == again
