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


ROLLING_WINDOWS = 30
"""KPI windows summed for the rolling precision and recall lines."""


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def kpi_timeseries_png(kpis: pd.DataFrame, title: str = "KPI windows") -> bytes:
    """Alerts per 1-minute window, and precision and recall per window and rolling.

    ``kpis`` has the KPI table's columns, oldest window first. Per-window precision and
    recall are dots (noisy: a window holds a handful of alerts); the lines sum ``tp``,
    ``n_alert`` and ``n_fraud_true`` over the last :data:`ROLLING_WINDOWS` windows.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), dpi=90, sharex=True)
    if kpis.empty:
        top.text(0.5, 0.5, "no KPI window closed yet", ha="center", transform=top.transAxes)
    else:
        x = pd.to_datetime(kpis["window_start"])
        top.bar(x, kpis["n_alert"], width=1 / 1440, label="alerts", color="tab:red")
        top.plot(x, kpis["n_fraud_true"], ".", color="black", label="true frauds", markersize=3)
        top.set_ylabel("per minute")
        top.legend(loc="upper left")
        rolling = kpis[["tp", "n_alert", "n_fraud_true"]].rolling(ROLLING_WINDOWS, 1).sum()
        precision = rolling["tp"] / rolling["n_alert"].where(rolling["n_alert"] > 0)
        recall = rolling["tp"] / rolling["n_fraud_true"].where(rolling["n_fraud_true"] > 0)
        bottom.plot(x, kpis["precision"], ".", color="tab:blue", alpha=0.3, markersize=3)
        bottom.plot(x, kpis["recall"], ".", color="tab:orange", alpha=0.3, markersize=3)
        bottom.plot(x, precision, color="tab:blue", label=f"precision ({ROLLING_WINDOWS} windows)")
        bottom.plot(x, recall, color="tab:orange", label=f"recall ({ROLLING_WINDOWS} windows)")
        bottom.legend(loc="lower left")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("window start (event time)")
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def stream_health_png(health: pd.DataFrame, title: str = "scoring stream health") -> bytes:
    """Input and processed rows/s, Kafka lag and batch duration per micro-batch, over time.

    ``health`` has :data:`fraud_assets.core.monitoring.HEALTH_COLUMNS`, oldest first.
    """
    fig, (rates, lag, duration) = plt.subplots(3, 1, figsize=(10, 6.5), dpi=90, sharex=True)
    if health.empty:
        rates.text(0.5, 0.5, "no micro-batch yet", ha="center", transform=rates.transAxes)
    else:
        x = pd.to_datetime(health["timestamp"])
        rates.plot(x, health["input_rows_per_second"], label="input rows/s")
        rates.plot(x, health["processed_rows_per_second"], label="processed rows/s")
        rates.legend(loc="upper left")
        rates.set_ylabel("rows/s")
        lag.plot(x, health["kafka_lag"], color="tab:red")
        lag.set_ylabel("Kafka lag (msgs)")
        duration.plot(x, health["batch_duration_ms"], color="tab:green")
        duration.set_ylabel("batch (ms)")
    duration.set_xlabel("time (UTC)")
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def drift_png(
    psi: pd.DataFrame, score_bins: pd.DataFrame, threshold: float, title: str = "drift"
) -> bytes:
    """PSI per column (largest on top, the threshold as a line), and the score's bins.

    ``psi`` has ``feature`` and ``psi`` (:func:`fraud_assets.core.drift.Drift.table`);
    ``score_bins`` has ``reference_share`` and ``live_share`` per bin of the score, lowest
    first (:meth:`fraud_assets.core.drift.Drift.bin_shares`).
    """
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 6.5), dpi=90, gridspec_kw={"width_ratios": [3, 2]}
    )
    shown = psi.dropna(subset=["psi"]).iloc[::-1]  # barh draws bottom-up: largest on top
    colors = ["tab:red" if value > threshold else "tab:blue" for value in shown["psi"]]
    left.barh(shown["feature"], shown["psi"], color=colors)
    left.axvline(threshold, color="grey", linestyle="--", linewidth=1)
    left.text(threshold, len(shown) - 0.4, f" threshold {threshold:g}", color="grey")
    left.set_xlabel("population stability index (live vs training data)")
    left.tick_params(axis="y", labelsize=7)
    left.set_title("PSI per feature")
    positions = range(len(score_bins))
    width = 0.4
    right.bar(
        [p - width / 2 for p in positions],
        score_bins["reference_share"],
        width,
        label="training data",
    )
    right.bar(
        [p + width / 2 for p in positions],
        score_bins["live_share"],
        width,
        label="live",
        color="tab:orange",
    )
    right.set_xticks(list(positions))
    right.set_xticklabels([f"{i + 1}" for i in positions])
    right.set_xlabel("score bin (training-data quantiles, low to high)")
    right.set_ylabel("share of rows")
    right.legend(loc="upper left")
    right.set_title("fraud_prob distribution")
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)
