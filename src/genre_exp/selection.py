"""Which number chooses between runs, and which way is better.

Sweeps, ``compare`` and ``promote`` choose on validation macro-F1 of the final model, never on
the test split, so a run's test scores stay an honest estimate.
"""

from __future__ import annotations

# The number each job returns to its sweeper and logs at the end of training.
SELECTION_METRIC = "final_val_macro_f1"
# The per-epoch series it is the last value of (Keras' logs, early stopping, pruning).
EPOCH_METRIC = "val_macro_f1"


def lower_is_better(metric: str) -> bool:
    """A loss is better lower; every other metric genre-exp logs (accuracy, F1, precision,
    recall) is better higher."""
    return metric.endswith("loss")


def mode(metric: str) -> str:
    """Keras' ``mode`` for a callback monitoring ``metric``."""
    return "min" if lower_is_better(metric) else "max"
