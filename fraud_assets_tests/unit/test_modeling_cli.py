"""``fraud-assets models``: the comparison table and its place in docs/models.md."""

from fraud_assets.modeling.cli import (
    ROLLING_END,
    ROLLING_START,
    TABLE_END,
    TABLE_START,
    comparison_table,
    rolling_origin_table,
    write_docs_table,
)

ENTRY = {
    "model": "xgb",
    "protocol": "time_ordered",
    "average_precision": 0.8051,
    "ap_ci_low": 0.714,
    "ap_ci_high": 0.888,
    "ap_trapezoid": 0.8049,
    "roc_auc": 0.98391,
    "threshold": 0.848994,
    "policy": "max_f1",
    "precision": 0.93,
    "recall": 0.716,
    "precision_at_budget": 0.875,
    "train_seconds": 56.0,
    "scoring_core_us_per_row": 19.44,
}


def test_each_entry_is_one_row_with_its_scoring_cost():
    table = comparison_table([ENTRY, ENTRY | {"model": "lr", "scoring_core_us_per_row": None}])
    header, rule, xgb, lr = table.splitlines()
    assert header.endswith("| train s | scoring core-µs/row |")
    assert rule.count("---") == header.count("|") - 1
    assert xgb.startswith("| xgb | time_ordered | 0.805 (0.714–0.888) |")
    assert xgb.endswith("| 56 | 19.4 |")
    assert lr.endswith("| 56 | — |")


def test_the_table_replaces_only_the_text_between_the_markers(tmp_path):
    docs = tmp_path / "models.md"
    docs.write_text(f"# Models\n\n{TABLE_START}\nold\n{TABLE_END}\n\nafter\n")
    assert write_docs_table(docs, "| new |", "note")
    assert docs.read_text() == f"# Models\n\n{TABLE_START}\nnote\n\n| new |\n{TABLE_END}\n\nafter\n"
    assert not write_docs_table(tmp_path / "missing.md", "| new |", "note")


def rolling_report(model: str, pooled: float, fold_aps: list[float], cost: float) -> dict:
    return {
        "model": model,
        "folds": [{"average_precision": ap, "frauds": 90 + i} for i, ap in enumerate(fold_aps)],
        "pooled": {
            "average_precision": pooled,
            "ap_ci_low": pooled - 0.05,
            "ap_ci_high": pooled + 0.04,
            "mean_fold_average_precision": sum(fold_aps) / len(fold_aps),
        },
        "scoring_core_us_per_row": cost,
    }


def test_the_rolling_origin_table_has_folds_pooled_paired_and_the_rule():
    reports = [
        rolling_report("lr", 0.781, [0.7, 0.8], 2.04),
        rolling_report("xgb", 0.812, [0.75, 0.85], 20.0),
    ]
    paired = [{"a": "lr", "b": "xgb", "difference": -0.031, "ci_low": -0.07, "ci_high": 0.012}]
    choice = {
        "verdicts": [
            {"model": "lr", "qualifies": True, "chosen": True},
            {"model": "xgb", "qualifies": True, "chosen": False},
        ]
    }
    header, rule, lr, xgb = rolling_origin_table(reports, paired, choice).splitlines()
    assert "| fold 1 AP (frauds) | fold 2 AP (frauds) |" in header
    assert rule.count("---") == header.count("|") - 1
    assert lr == (
        "| lr | 0.781 (0.731–0.821) | 0.750 | 0.700 (90) | 0.800 (91) "
        "| -0.031 (-0.070 to +0.012) | 2.0 | **chosen** |"
    )
    assert xgb.endswith("| best | 20.0 | qualifies |")


def test_each_table_has_its_own_markers(tmp_path):
    docs = tmp_path / "models.md"
    docs.write_text(f"{TABLE_START}\na\n{TABLE_END}\n{ROLLING_START}\nb\n{ROLLING_END}\n")
    assert write_docs_table(docs, "| r |", "n", (ROLLING_START, ROLLING_END))
    assert docs.read_text() == (
        f"{TABLE_START}\na\n{TABLE_END}\n{ROLLING_START}\nn\n\n| r |\n{ROLLING_END}\n"
    )
