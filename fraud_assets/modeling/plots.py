"""Plots of model comparisons, rendered to PNG bytes for Dagster metadata and docs."""

import io

import matplotlib

matplotlib.use("Agg")  # no display: render straight to PNG

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def pr_curves_png(curves: dict[str, pd.DataFrame], title: str) -> bytes:
    """Holdout precision-recall curves of several models (``recall``/``precision`` frames)."""
    fig, axis = plt.subplots(figsize=(6, 4.5), dpi=90)
    for name, sweep in curves.items():
        ordered = sweep.sort_values("recall")
        axis.plot(ordered["recall"], ordered["precision"], label=name, drawstyle="steps-post")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.legend(loc="lower left")
    axis.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
