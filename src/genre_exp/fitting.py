"""How each kind of model family learns, behind one shape (``Trained``): a Keras family epoch
by epoch on token ids (logged and checkpointed every epoch, resumable), a text family
(scikit-learn) in one step on raw lyrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genre_exp import resume
from genre_exp.tracking import record

log = logging.getLogger("genre_exp")


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

    from genre_exp import checkpoint, console, train
    from genre_exp.models import Inputs, export_model

    console.hide_first_trace_warnings()
    # A family whose schema has `ngrams` (e.g. fasttext) reads word n-grams besides words.
    ngrams = OmegaConf.select(cfg.model, "ngrams", default=1)
    vectorizer, splits = vectorised(cfg, start, dataset, ngrams)
    by_length = bool(cfg.training.bucket_by_length)
    inputs = Inputs(
        splits.vocab_size, cfg.data.sequence_length, len(dataset.genres), any_length=by_length
    )
    train.seed_everything(cfg.training.seed)
    classifier = start.classifier(cfg.model, inputs)
    if by_length and not train.accepts_any_length(classifier):
        log.warning(
            "training.bucket_by_length: model %s takes token ids of one length only; its "
            "batches stay padded to data.sequence_length=%d",
            cfg.model.name,
            cfg.data.sequence_length,
        )
        by_length = False
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
        by_length=by_length,
    )
    batch = max(cfg.training.batch_size, 256)
    return Trained(
        predict=lambda split: train.predict(classifier, splits.ids[split], batch, by_length),
        history=history.history,
        text_model=lambda: export_model(vectorizer, classifier),
    )


def vectorised(cfg: Any, start: resume.Start, dataset, ngrams: int):
    """The vectoriser and every split's token ids: read from the cache when a job before
    vectorised the same lyrics with the same settings (``data.cache``), else computed (and
    cached). The vectoriser always holds the vocabulary the ids were made with, so the logged
    model maps lyrics to the ids the classifier was trained on."""
    from genre_exp import checkpoint
    from genre_exp.cache import Cache, Tokens, tokens_key
    from genre_exp.vectorize import Splits, vectorise_splits, vectorizer_from_vocabulary

    data = cfg.data
    if not data.cache:
        vectorizer = start.vectorizer(dataset.texts("train"), data, ngrams=ngrams)
        log.info("token ids computed (data.cache=false)")
        return vectorizer, vectorise_splits(vectorizer, dataset)
    settings = {
        "vocab_size": data.vocab_size,
        "sequence_length": data.sequence_length,
        "standardize": str(data.standardize),
    }
    cache = Cache(cfg.paths.cache_dir)
    texts = {split: dataset.texts(split) for split in dataset.SPLITS}
    key = tokens_key(texts, settings | {"ngrams": ngrams})
    where = cache.path("tokens", key)
    held = cache.tokens(key)
    # A resumed run keeps the vocabulary it was trained with, whatever the cache holds.
    if held is not None and (not start.resumed or held.vocabulary == start.saved.vocabulary):
        vectorizer = vectorizer_from_vocabulary(held.vocabulary, **settings, ngrams=ngrams)
        if not start.resumed:
            # What a later training.resume of this run rebuilds its vectoriser from.
            checkpoint.save_vocabulary(start.checkpoint_dir, held.vocabulary)
        log.info("token ids from the cache: %s", where)
        return vectorizer, Splits(ids=held.ids, vocabulary=held.vocabulary)
    vectorizer = start.vectorizer(dataset.texts("train"), data, ngrams=ngrams)
    splits = vectorise_splits(vectorizer, dataset)
    if held is None:
        cache.put_tokens(key, Tokens(ids=splits.ids, vocabulary=splits.vocabulary))
        log.info("token ids computed, cached as %s", where)
    else:
        log.info("token ids computed with the resumed run's vocabulary (the cache's differs)")
    return vectorizer, splits


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
    from genre_exp import trial

    return trial.callbacks(cfg)
