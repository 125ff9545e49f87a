"""Plots for people: rendered to PNG bytes, shown in Dagster metadata and docs."""

import io

import matplotlib

matplotlib.use("Agg")  # no display: render straight to PNG

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def precision_recall_png(sweep: pd.DataFrame, chosen_threshold: float, title: str) -> bytes:
    """Precision and recall against threshold, and the PR curve, with the chosen point."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
    left.plot(sweep["threshold"], sweep["precision"], label="precision")
    left.plot(sweep["threshold"], sweep["recall"], label="recall")
    left.plot(sweep["threshold"], sweep["f1"], label="F1", linestyle="--")
    left.axvline(chosen_threshold, color="grey", linewidth=1)
    left.set_xlabel("threshold")
    left.set_ylim(0, 1.02)
    left.legend(loc="lower left")
    left.set_title("by threshold")
    right.plot(sweep["recall"], sweep["precision"], marker=".", markersize=3)
    chosen = sweep.loc[(sweep["threshold"] - chosen_threshold).abs().idxmin()]
    right.scatter([chosen["recall"]], [chosen["precision"]], color="red", zorder=3)
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    right.set_xlim(0, 1.02)
    right.set_ylim(0, 1.02)
    right.set_title("precision-recall (holdout)")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
