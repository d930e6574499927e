"""Diagnostics of scorers on the holdout: calibration, per-slice metrics and plots.

A model can gain overall AUC while getting worse for one slice (a carrier, an airport);
the promotion gate reads the per-slice table so such a regression blocks a release. The
slices themselves are declared by the dataset spec.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and workers; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def calibration_bins(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict]:
    """Reliability table: per equal-width probability bin, mean predicted vs observed rate."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            out.append(
                {
                    "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "rows": int(inside.sum()),
                    "mean_predicted": float(proba[inside].mean()),
                    "observed_rate": float(y_true[inside].mean()),
                }
            )
    return out


def expected_calibration_error(bins: list[dict]) -> float:
    """Row-weighted mean |predicted - observed| over the reliability bins."""
    total = sum(b["rows"] for b in bins)
    return float(
        sum(b["rows"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in bins) / total
    )


def slice_metrics(
    y_true: np.ndarray,
    scores: dict[str, np.ndarray],
    slices: pd.DataFrame,
    min_rows: int,
) -> list[dict]:
    """ROC AUC and Brier per scorer for every slice with ≥ min_rows rows and both classes."""
    out = []
    for column in slices.columns:
        keys = slices[column].to_numpy()
        for value in sorted(set(keys)):
            inside = keys == value
            rows = int(inside.sum())
            y = y_true[inside]
            if rows < min_rows or y.min() == y.max():
                continue
            entry: dict = {
                "slice": f"{column}={value}",
                "rows": rows,
                "late_rate": round(float(y.mean()), 4),
            }
            for name, proba in scores.items():
                entry[f"{name}_roc_auc"] = float(roc_auc_score(y, proba[inside]))
                entry[f"{name}_brier"] = float(brier_score_loss(y, proba[inside]))
            out.append(entry)
    return out


def save_plots(
    y_true: np.ndarray, scores: dict[str, np.ndarray], threshold: float, out_dir: str
) -> list[str]:
    """ROC, precision-recall, calibration and confusion-matrix PNGs; returns their paths."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, proba in scores.items():
        fpr, tpr, _ = roc_curve(y_true, proba)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y_true, proba):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, holdout")
    ax.legend(loc="lower right")
    paths.append(_save(fig, f"{out_dir}/roc.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, proba in scores.items():
        precision, recall, _ = precision_recall_curve(y_true, proba)
        ax.plot(recall, precision, label=name)
    ax.axhline(y_true.mean(), linestyle=":", color="grey", label="late rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, holdout")
    ax.legend(loc="upper right")
    paths.append(_save(fig, f"{out_dir}/precision_recall.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, proba in scores.items():
        bins = calibration_bins(y_true, proba)
        ax.plot(
            [b["mean_predicted"] for b in bins],
            [b["observed_rate"] for b in bins],
            marker="o",
            label=name,
        )
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed late rate", title="Calibration")
    ax.legend(loc="upper left")
    paths.append(_save(fig, f"{out_dir}/calibration.png"))

    model = scores["model"]
    predicted = (model >= threshold).astype(int)
    matrix = np.array(
        [[int(((y_true == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    )
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for t in (0, 1):
        for p in (0, 1):
            ax.text(p, t, f"{matrix[t, p]:,}", ha="center", va="center")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["on time", "late"],
        yticklabels=["on time", "late"],
        xlabel="predicted",
        ylabel="actual",
        title=f"Confusion at threshold {threshold:.3f}",
    )
    paths.append(_save(fig, f"{out_dir}/confusion_matrix.png"))
    return paths


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
