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


# The settings that decide which rows a validation score is measured on, and how they count:
# runs that differ in one of them have validation scores that do not compare.
VALIDATION_PARAMS = (
    "data.train_path",
    "data.genres",
    "data.languages",
    "data.balance",
    "data.unknown_genres",
    "data.max_train_rows",
    "data.val_fraction",
    "data.val_split",
    "data.val_weights",
    "data.seed",
)


def is_validation_metric(metric: str) -> bool:
    return metric.startswith(("val_", "final_val_"))
