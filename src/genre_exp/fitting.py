"""How each kind of model family learns, behind one shape (``Trained``): a Keras family epoch
by epoch on token ids (logged and checkpointed every epoch, resumable), a text family
(scikit-learn) in one step on raw lyrics."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genre_exp import resume
from genre_exp.tracking import record


@dataclass
class Trained:
    # Each genre's probability for every row of a split ("val" or "test").
    predict: Callable[[str], np.ndarray]
    # The per-epoch logs of the epochs this job trained (Keras' History.history).
    history: dict[str, list[float]]
    # The model to log: raw lyrics in, probabilities out.
    text_model: Callable[[], Any]


def fit(cfg: Any, start: resume.Start, dataset, val_weights, stop: threading.Event) -> Trained:
    from genre_exp.models import TEXT, family_of

    if family_of(cfg.model).kind == TEXT:
        return fit_text(cfg, dataset, val_weights)
    return fit_keras(cfg, start, dataset, val_weights, stop)


def fit_keras(cfg: Any, start: resume.Start, dataset, val_weights, stop) -> Trained:
    """Vectorise, build (or restore) and fit from the start's epoch on."""
    from omegaconf import OmegaConf

    from genre_exp import checkpoint, train
    from genre_exp.models import Inputs, export_model
    from genre_exp.vectorize import vectorise_splits

    # A family whose schema has `ngrams` (e.g. fasttext) reads word n-grams besides words.
    ngrams = OmegaConf.select(cfg.model, "ngrams", default=1)
    vectorizer = start.vectorizer(dataset.texts("train"), cfg.data, ngrams=ngrams)
    splits = vectorise_splits(vectorizer, dataset)
    inputs = Inputs(splits.vocab_size, cfg.data.sequence_length, len(dataset.genres))
    train.seed_everything(cfg.training.seed)
    classifier = start.classifier(cfg.model, inputs)
    history = train.fit(
        classifier,
        splits.ids["train"],
        dataset.codes("train"),
        splits.ids["val"],
        dataset.codes("val"),
        len(dataset.genres),
        cfg.training,
        val_weights=val_weights,
        # After the logger: a checkpoint on disk means its epoch's metrics were logged.
        extra_callbacks=[
            train.stop_when(stop),
            record.epoch_logger(resumed=start.resumed),
            checkpoint.callback(start.checkpoint_dir),
            *trial_callbacks(cfg),
        ],
        initial_epoch=start.first_epoch,
    )
    batch = max(cfg.training.batch_size, 256)
    return Trained(
        predict=lambda split: classifier.predict(splits.ids[split], batch_size=batch, verbose=0),
        history=history.history,
        text_model=lambda: export_model(vectorizer, classifier),
    )


def fit_text(cfg: Any, dataset, val_weights) -> Trained:
    """Fit the family's estimator on the training lyrics; its one "epoch" of validation
    scores is logged at step 0 like a Keras family's first epoch."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    from genre_exp.models import family_of
    from genre_exp.selection import EPOCH_METRIC

    class_weight = "balanced" if str(cfg.training.class_weight) == "balanced" else None
    estimator = family_of(cfg.model).build(cfg.model, class_weight, cfg.training.seed)
    estimator.fit(dataset.texts("train"), dataset.codes("train"))
    labels = list(range(len(dataset.genres)))
    y_val, p_val = dataset.codes("val"), estimator.predict_proba(dataset.texts("val"))
    logs = {
        "val_loss": log_loss(y_val, p_val, labels=labels, sample_weight=val_weights),
        "val_accuracy": accuracy_score(y_val, p_val.argmax(1), sample_weight=val_weights),
        EPOCH_METRIC: f1_score(
            y_val,
            p_val.argmax(1),
            labels=labels,
            average="macro",
            zero_division=0,
            sample_weight=val_weights,
        ),
    }
    record.log_metrics({k: float(v) for k, v in logs.items()}, step=0)
    return Trained(
        predict=lambda split: estimator.predict_proba(dataset.texts(split)),
        history={k: [float(v)] for k, v in logs.items()},
        text_model=lambda: estimator,
    )


def trial_callbacks(cfg: Any) -> list:
    """Callbacks that report to a hyperparameter search's trial, if this job is one."""
    return []
