"""Blocks the neural families share: pooling over a lyric that ignores its padding, and zeroing
the padding before layers that take no mask (Conv1D).

Built from Keras' own operations (``keras.ops``) wrapped in small named sub-models, not from a
custom layer class: a saved model then loads anywhere Keras does (a checkpoint, the logged model
in a fresh serving process) without importing this package. Keras' GlobalAveragePooling1D does
honour a mask, but divides by zero for a lyric with no tokens (an empty text is a valid request),
and GlobalMaxPooling1D ignores masks altogether.

The vectoriser pads at the end with token id 0, so "real" steps are those whose id is not 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class Pooling(StrEnum):
    mean = "mean"
    max = "max"


def _inputs(sequence, token_ids, name: str):
    import keras

    values = keras.Input(shape=(None, sequence.shape[-1]), dtype=sequence.dtype, name=f"{name}_in")
    ids = keras.Input(shape=(None,), dtype=token_ids.dtype, name=f"{name}_ids")
    return values, ids


def _real_steps(ids, dtype):
    """1.0 for a token, 0.0 for padding, shaped (batch, steps, 1) to scale a sequence."""
    from keras import ops

    return ops.expand_dims(ops.cast(ops.not_equal(ids, 0), dtype), -1)


def masked_pooling(sequence, token_ids, kinds: Sequence[str], name: str = "masked_pooling"):
    """Each of ``kinds`` (mean, max) over the steps of ``sequence`` (batch, steps, features)
    whose token id is not padding, concatenated in that order: (batch, features * len(kinds)).
    A lyric without tokens pools to zeros."""
    import keras
    from keras import ops

    values, ids = _inputs(sequence, token_ids, name)
    real = _real_steps(ids, values.dtype)
    count = ops.sum(real, axis=1)
    pooled = []
    for kind in kinds:
        if kind == Pooling.mean:
            pooled.append(ops.sum(values * real, axis=1) / ops.maximum(count, 1.0))
        else:
            # Padding takes the sequence's least value, which no real step's value is above, so
            # the maximum is the real steps' (no magic constant that could overflow a dtype).
            floor = ops.min(values, axis=1, keepdims=True)
            highest = ops.max(values * real + floor * (1.0 - real), axis=1)
            pooled.append(highest * ops.minimum(count, 1.0))
    outputs = pooled[0] if len(pooled) == 1 else ops.concatenate(pooled, axis=-1)
    # No Keras mask in: padding is read from the token ids (a recurrent layer's mask would
    # otherwise come along, and Keras warn at every call that this block drops it).
    return keras.Model([values, ids], outputs, name=name)([sequence, token_ids], mask=[None, None])


def zero_padding(sequence, token_ids, name: str = "zero_padding"):
    """``sequence`` with the steps of padding set to zeros, as a convolution's own zero padding
    past the end is: a window over the lyric's end then sees the same whether the lyric is
    followed by more padding or by none."""
    import keras

    values, ids = _inputs(sequence, token_ids, name)
    outputs = values * _real_steps(ids, values.dtype)
    return keras.Model([values, ids], outputs, name=name)([sequence, token_ids])
