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


def distribution_figure(distribution: pd.DataFrame, title: str = "Genre distribution"):
    """Rows per category (genre, language) for each column of ``distribution``, e.g. train
    before and after balancing, and test."""
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
    ax.set_title(title)
    ax.margins(y=0.15)
    ax.legend()
    return fig


def lengths_figure(lengths: pd.DataFrame, order: Sequence[str]):
    """Lyric length in words per genre (box plots), one box per split.

    ``lengths`` has columns ``genre``, ``split`` and ``words``.
    """
    plt = _pyplot()
    splits = list(dict.fromkeys(lengths["split"]))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(order) + 3), 4.5), layout="constrained")
    width = 0.8 / max(1, len(splits))
    for k, split in enumerate(splits):
        part = lengths.loc[lengths["split"] == split]
        data = [part.loc[part["genre"] == g, "words"].to_numpy() for g in order]
        positions = np.arange(len(order)) + (k - (len(splits) - 1) / 2) * width
        boxes = ax.boxplot(
            data, positions=positions, widths=width * 0.9, showfliers=False, patch_artist=True
        )
        for patch in boxes["boxes"]:
            patch.set_facecolor(f"C{k}")
            patch.set_alpha(0.6)
        ax.plot([], [], color=f"C{k}", linewidth=8, alpha=0.6, label=split)
    ax.set_xticks(np.arange(len(order)), list(order), rotation=30, ha="right")
    ax.set_ylabel("words per lyric (outliers hidden)")
    ax.set_title("Lyric length per genre")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return fig


def per_genre_f1_figure(
    f1: pd.DataFrame,
    errors: pd.DataFrame | None = None,
    title: str = "Per-genre test F1, best runs first",
):
    """Test F1 per genre (rows) for several runs (columns), as grouped bars; with ``errors``
    (same shape, e.g. the std over seeds), each bar gets an error bar of that half-height."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8.0, 1.1 * len(f1) + 3), 4.8), layout="constrained")
    positions = np.arange(len(f1))
    width = 0.8 / max(1, f1.shape[1])
    for k, run in enumerate(f1.columns):
        ax.bar(
            positions + (k - (f1.shape[1] - 1) / 2) * width,
            f1[run].to_numpy(),
            width,
            label=run,
            yerr=None if errors is None else errors[run].fillna(0).to_numpy(),
            capsize=2,
        )
    ax.set_xticks(positions, list(f1.index), rotation=30, ha="right")
    ax.set_ylabel("test F1")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return fig


def save(figure, path, dpi: int = 110) -> None:
    """Write ``figure`` to ``path`` (PNG by its name) and free it."""
    plt = _pyplot()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
