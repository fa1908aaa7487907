"""Figures for a run. Each function returns a matplotlib Figure; the caller saves or logs it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    # No display on servers and CI; figures are only ever written to files.
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(confusion: pd.DataFrame, title: str = "Test confusion matrix"):
    """Counts and row-normalised (recall per true genre), side by side."""
    plt = _pyplot()
    counts = confusion.to_numpy()
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(
        counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0
    )
    labels = list(confusion.index)
    size = max(6.0, 0.6 * len(labels) + 3)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), layout="constrained")
    for ax, values, fmt, name in (
        (axes[0], counts, "d", "counts"),
        (axes[1], normalised, ".2f", "row-normalised"),
    ):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted genre")
        ax.set_ylabel("true genre")
        ax.set_title(f"{title} ({name})")
        threshold = values.max() / 2 if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            ax.text(
                j,
                i,
                format(value, fmt),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if value > threshold else "black",
            )
        fig.colorbar(image, ax=ax, shrink=0.7)
    return fig


def learning_curves_figure(history: Mapping[str, Sequence[float]]):
    """Train vs validation accuracy and loss per epoch, and validation macro-F1 if present."""
    plt = _pyplot()
    panels = [("accuracy", "accuracy"), ("loss", "loss")]
    if "val_macro_f1" in history:
        panels.append(("macro_f1", "validation macro-F1"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), layout="constrained")
    for ax, (key, label) in zip(axes, panels, strict=True):
        for series, style in ((key, "-o"), (f"val_{key}", "--o")):
            if series in history:
                values = list(history[series])
                ax.plot(
                    range(1, len(values) + 1),
                    values,
                    style,
                    markersize=3,
                    label="validation" if series.startswith("val_") else "train",
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def distribution_figure(distribution: pd.DataFrame):
    """Rows per genre for each column of ``distribution`` (train before/after balancing, test)."""
    plt = _pyplot()
    fig, ax = plt.subplots(
        figsize=(max(8.0, 0.9 * len(distribution) + 3), 4.5), layout="constrained"
    )
    positions = np.arange(len(distribution))
    width = 0.8 / max(1, distribution.shape[1])
    for k, column in enumerate(distribution.columns):
        bars = ax.bar(
            positions + (k - (distribution.shape[1] - 1) / 2) * width,
            distribution[column].to_numpy(),
            width,
            label=column.replace("_", " "),
        )
        ax.bar_label(bars, fontsize=7, rotation=90, padding=2)
    ax.set_xticks(positions, list(distribution.index), rotation=30, ha="right")
    ax.set_ylabel("rows")
    ax.set_title("Genre distribution")
    ax.margins(y=0.15)
    ax.legend()
    return fig
