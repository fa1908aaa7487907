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
):
    """Adds ``val_macro_f1`` to each epoch's logs (rows weighted by ``sample_weight``), so early
    stopping, the learning curves and MLflow can all use it. Must come before the callbacks that
    read it."""
    import keras
    from sklearn.metrics import f1_score

    class ValMacroF1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is None:
                return
            predicted = self.model.predict(x_val, batch_size=batch_size, verbose=0).argmax(axis=1)
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
):
    """Fit ``model`` as ``training`` (the training config group) says, from ``initial_epoch``
    on (epochs are numbered from 0, so a resumed run's epochs keep their numbers); returns
    Keras' History."""
    import keras

    # A classifier restored from a checkpoint comes compiled with its optimizer's state, which
    # compiling again would throw away.
    if not getattr(model, "compiled", False):
        model.compile(
            optimizer=make_optimizer(str(training.optimizer), training.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    callbacks: list[Any] = [
        macro_f1_callback(x_val, y_val, n_classes, max(training.batch_size, 256), val_weights)
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
    return model.fit(
        x_train,
        y_train,
        # Weighted, val_loss and val_accuracy count rows as val_macro_f1 does.
        validation_data=(x_val, y_val) if val_weights is None else (x_val, y_val, val_weights),
        epochs=training.epochs,
        initial_epoch=initial_epoch,
        batch_size=training.batch_size,
        class_weight=class_weights(y_train, n_classes, str(training.class_weight)),
        callbacks=callbacks,
        shuffle=True,
        verbose=training.verbose
        if training.verbose is not None
        else (1 if sys.stdout.isatty() else 2),
    )
