"""Compile and fit a classifier on token ids, with validation macro-F1 tracked every epoch."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from genre_exp.selection import EPOCH_METRIC, mode


def class_weights(labels: np.ndarray, n_classes: int, how: str) -> dict[int, float] | None:
    """sklearn's 'balanced' weights (n_samples / (n_classes * count)), or None."""
    if how == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) for c, w in zip(present, weights, strict=True)} | {
        c: 1.0 for c in range(n_classes) if c not in set(present.tolist())
    }


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds, and deterministic kernels. Call before building the
    model: its initial weights and dropout streams are drawn when its layers are made."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    # Seeds alone still leave multi-threaded kernels free to sum in any order: the same config
    # must give the same numbers, or comparing runs means comparing noise.
    tf.config.experimental.enable_op_determinism()


def make_optimizer(name: str, learning_rate: float):
    from keras import optimizers

    factories = {
        "adam": optimizers.Adam,
        "adamw": optimizers.AdamW,
        "rmsprop": optimizers.RMSprop,
        "sgd": optimizers.SGD,
    }
    return factories[name](learning_rate=learning_rate)


def macro_f1_callback(
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    batch_size: int,
    sample_weight: np.ndarray | None = None,
    by_length: bool = False,
):
    """Adds ``val_macro_f1`` to each epoch's logs (rows weighted by ``sample_weight``), so early
    stopping, the learning curves and MLflow can all use it. Must come before the callbacks that
    read it. ``by_length``: predict in batches padded to their longest lyric."""
    import keras
    from sklearn.metrics import f1_score

    class ValMacroF1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is None:
                return
            predicted = predict(self.model, x_val, batch_size, by_length).argmax(axis=1)
            logs[EPOCH_METRIC] = float(
                f1_score(
                    y_val,
                    predicted,
                    labels=list(range(n_classes)),
                    average="macro",
                    zero_division=0,
                    sample_weight=sample_weight,
                )
            )

    return ValMacroF1()


def lengths(ids: np.ndarray) -> np.ndarray:
    """Each row's count of token ids before its padding (the vectoriser pads at the end with
    0, and no token is 0), at least 1 so that no batch is zero steps long."""
    return np.maximum((ids != 0).sum(axis=1), 1).astype(np.int32)


def _trimmed(dataset, with_lengths):
    """Rows (ids, length, *rest) as (ids cut to their length, *rest)."""
    if not with_lengths:
        return dataset
    return dataset.map(lambda ids, length, *rest: (ids[:length], *rest))


def training_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, by_length: bool = False
):
    """What ``fit`` trains on: rows shuffled with ``seed`` (a new order every epoch, the same
    orders for the same seed), batched and prefetched. ``by_length``: lyrics of similar
    length batched together (length buckets at quantiles of the rows' lengths), each batch
    padded only to its longest lyric."""
    import tensorflow as tf

    columns = (x, lengths(x), y) if by_length else (x, y)
    rows = tf.data.Dataset.from_tensor_slices(columns).shuffle(
        len(x), seed=seed, reshuffle_each_iteration=True
    )
    rows = _trimmed(rows, by_length)
    if by_length:
        # Enough rows per bucket for several full batches, so few batches are partial.
        buckets = int(np.clip(len(x) // (4 * batch_size), 1, 8))
        edges = np.quantile(lengths(x), np.linspace(0, 1, buckets + 1)[1:-1])
        boundaries = sorted({int(edge) + 1 for edge in edges})
        batches = rows.bucket_by_sequence_length(
            element_length_func=lambda ids, *rest: tf.shape(ids)[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        )
        # A row's bucket does not depend on the order, so neither does the count of batches;
        # told it, Keras knows where an epoch ends instead of running out of data.
        per_bucket = np.bincount(np.searchsorted(boundaries, lengths(x), side="right"))
        count = int(sum(-(-rows_in // batch_size) for rows_in in per_bucket))
        batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    else:
        batches = rows.batch(batch_size)
    return batches.prefetch(tf.data.AUTOTUNE)


def ordered_batches(x: np.ndarray, *columns: np.ndarray, batch_size: int, by_length: bool):
    """Rows in their order, batched and prefetched; ``by_length``: each batch padded only to
    its longest lyric (sort the rows by length first for short batches)."""
    import tensorflow as tf

    rows = (x, lengths(x), *columns) if by_length else (x, *columns)
    dataset = _trimmed(tf.data.Dataset.from_tensor_slices(rows), by_length)
    batched = dataset.padded_batch(batch_size) if by_length else dataset.batch(batch_size)
    return batched.prefetch(tf.data.AUTOTUNE)


def predict(model, x: np.ndarray, batch_size: int, by_length: bool = False) -> np.ndarray:
    """Each genre's probability for every row of ``x``, in its order. ``by_length``: rows of
    similar length predicted together, each batch padded only to its longest lyric."""
    if not by_length:
        return model.predict(x, batch_size=batch_size, verbose=0)
    order = np.argsort(lengths(x), kind="stable")
    batches = ordered_batches(x[order], batch_size=batch_size, by_length=True)
    in_order = model.predict(batches, verbose=0)
    probabilities = np.empty_like(in_order)
    probabilities[order] = in_order
    return probabilities


def accepts_any_length(model) -> bool:
    """Whether ``model``'s token-id input takes batches of any length (``Inputs.shape``)."""
    return model.inputs[0].shape[1] is None


def stop_when(event):
    """Keras callback ending training with KeyboardInterrupt once ``event`` is set: a stop the
    signal handler asked for but whose exception got lost on the way."""
    import keras

    class StopWhen(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None) -> None:
            if event.is_set():
                raise KeyboardInterrupt("stop requested")

    return StopWhen()


def fit(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    training: Any,
    extra_callbacks: Sequence[Any] = (),
    initial_epoch: int = 0,
    val_weights: np.ndarray | None = None,
    by_length: bool = False,
):
    """Fit ``model`` as ``training`` (the training config group) says, from ``initial_epoch``
    on (epochs are numbered from 0, so a resumed run's epochs keep their numbers); returns
    Keras' History. ``by_length``: length-bucketed batches (the model must take any length)."""
    import keras

    # A classifier restored from a checkpoint comes compiled with its optimizer's state, which
    # compiling again would throw away.
    if not getattr(model, "compiled", False):
        model.compile(
            optimizer=make_optimizer(str(training.optimizer), training.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    predict_batch = max(training.batch_size, 256)
    if by_length:
        # Validation scores do not depend on the rows' order: sorted by length, each batch is
        # padded to lyrics of about its own length.
        order = np.argsort(lengths(x_val), kind="stable")
        x_val, y_val = x_val[order], y_val[order]
        val_weights = None if val_weights is None else val_weights[order]
    callbacks: list[Any] = [
        macro_f1_callback(x_val, y_val, n_classes, predict_batch, val_weights, by_length)
    ]
    stop = training.early_stopping
    if stop.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=str(stop.monitor),
                patience=stop.patience,
                restore_best_weights=stop.restore_best_weights,
                mode=mode(str(stop.monitor)),
                verbose=1,
            )
        )
    plateau = training.reduce_lr
    if plateau.enabled:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=str(plateau.monitor),
                patience=plateau.patience,
                factor=plateau.factor,
                min_lr=plateau.min_lr,
                mode=mode(str(plateau.monitor)),
                verbose=1,
            )
        )
    callbacks.extend(extra_callbacks)
    # Weighted, val_loss and val_accuracy count rows as val_macro_f1 does.
    validation = (y_val,) if val_weights is None else (y_val, val_weights)
    return model.fit(
        training_batches(x_train, y_train, training.batch_size, training.seed, by_length),
        validation_data=ordered_batches(
            x_val, *validation, batch_size=predict_batch, by_length=by_length
        ),
        epochs=training.epochs,
        initial_epoch=initial_epoch,
        class_weight=class_weights(y_train, n_classes, str(training.class_weight)),
        callbacks=callbacks,
        # The batches come shuffled (training_batches).
        shuffle=False,
        verbose=training.verbose
        if training.verbose is not None
        else (1 if sys.stdout.isatty() else 2),
    )
