"""Test-split metrics: accuracy, macro/weighted F1, per-genre precision/recall/F1, confusion."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


def metric_safe(genre: str) -> str:
    """A genre as part of a metric name, the same in every run: 'R&B' -> 'R_B'."""
    return re.sub(r"[^0-9A-Za-z_]", "_", genre)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: pd.DataFrame
    report: str
    prefix: str = "test"

    def per_genre(self) -> pd.DataFrame:
        """One row per genre: precision, recall and F1."""
        return pd.DataFrame(
            [
                {
                    "genre": genre,
                    **{
                        m: self.metrics[f"{self.prefix}_{m}_{metric_safe(genre)}"]
                        for m in ("precision", "recall", "f1")
                    },
                }
                for genre in self.confusion.index
            ]
        )


def evaluate(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    genres: Sequence[str],
    prefix: str = "test",
    sample_weight: np.ndarray | None = None,
) -> Evaluation:
    """Scores of predicted genres (the most probable) against true ones; ``sample_weight``
    counts rows unequally (e.g. every genre weighing the same)."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = list(range(len(genres)))
    y_pred = probabilities.argmax(axis=1)
    weights = {"sample_weight": sample_weight}
    metrics = {
        f"{prefix}_accuracy": float(accuracy_score(y_true, y_pred, **weights)),
        f"{prefix}_macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0, **weights)
        ),
        f"{prefix}_weighted_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0, **weights)
        ),
    }
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0, **weights
    )
    for i, genre in enumerate(genres):
        name = metric_safe(genre)
        metrics[f"{prefix}_precision_{name}"] = float(precision[i])
        metrics[f"{prefix}_recall_{name}"] = float(recall[i])
        metrics[f"{prefix}_f1_{name}"] = float(f1[i])
    confusion = pd.DataFrame(
        confusion_matrix(y_true, y_pred, labels=labels),
        index=pd.Index(list(genres), name="true"),
        columns=pd.Index(list(genres), name="predicted"),
    )
    report = classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=list(genres),
        digits=2,
        zero_division=0,
        **weights,
    )
    return Evaluation(metrics=metrics, confusion=confusion, report=report, prefix=prefix)
