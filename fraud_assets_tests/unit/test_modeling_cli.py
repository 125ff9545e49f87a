"""``fraud-assets models``: the comparison table and its place in docs/models.md."""

from fraud_assets.modeling.cli import TABLE_END, TABLE_START, comparison_table, write_docs_table

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
