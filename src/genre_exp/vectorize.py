"""Turn lyrics into fixed-length token-id sequences with Keras' ``TextVectorization``.

The vectoriser is adapted on the training split only, then travels inside the exported model,
so a served model takes raw strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _string_tensor(texts: Sequence[str]):
    import tensorflow as tf

    # Keras 3 rejects numpy object/str arrays: strings go in as a tf.string tensor.
    return tf.constant([str(t) for t in texts], dtype=tf.string)


def build_vectorizer(
    train_texts: Sequence[str],
    vocab_size: int,
    sequence_length: int,
    standardize: str = "lower_and_strip_punctuation",
    batch_size: int = 1024,
    ngrams: int = 1,
):
    """Adapted on the training texts. With ``ngrams`` > 1 the tokens are the words followed by
    their word n-grams up to that length (e.g. bigrams), all in one vocabulary."""
    import tensorflow as tf
    from keras import layers

    vectorizer = layers.TextVectorization(
        max_tokens=vocab_size,
        output_mode="int",
        output_sequence_length=sequence_length,
        standardize=standardize,
        ngrams=ngrams if ngrams > 1 else None,
        name="vectorizer",
    )
    vectorizer.adapt(
        tf.data.Dataset.from_tensor_slices(_string_tensor(train_texts)).batch(batch_size)
    )
    return vectorizer


def vectorizer_from_vocabulary(
    vocabulary: Sequence[str],
    vocab_size: int,
    sequence_length: int,
    standardize: str = "lower_and_strip_punctuation",
    ngrams: int = 1,
):
    """The vectoriser a run adapted, rebuilt from its saved vocabulary (padding and OOV token
    included, as ``get_vocabulary()`` returns it), so a resumed run maps text to the same ids."""
    from keras import layers

    return layers.TextVectorization(
        max_tokens=vocab_size,
        output_mode="int",
        output_sequence_length=sequence_length,
        standardize=standardize,
        ngrams=ngrams if ngrams > 1 else None,
        vocabulary=list(vocabulary),
        name="vectorizer",
    )


def vectorize(vectorizer, texts: Sequence[str], batch_size: int = 2048) -> np.ndarray:
    """Token ids, shape (len(texts), sequence_length), int32; 0 is padding. Batches go through
    ``tf.data``, vectorised on both cores while the next is prepared; the order is kept."""
    import tensorflow as tf

    if not len(texts):
        return np.zeros((0, vectorizer.get_config()["output_sequence_length"]), dtype=np.int32)
    batches = (
        tf.data.Dataset.from_tensor_slices(_string_tensor(texts))
        .batch(batch_size)
        .map(vectorizer, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    return np.concatenate([np.asarray(ids, dtype=np.int32) for ids in batches])


def to_strings(texts: Sequence[str]):
    """Raw lyrics as the exported model's input tensor."""
    return _string_tensor(texts)


@dataclass
class Splits:
    """Token ids of the three splits ("train", "val", "test") and the vocabulary that made
    them (``get_vocabulary()``: padding and OOV token first)."""

    ids: dict[str, np.ndarray]
    vocabulary: list[str]

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)


def vectorise_splits(vectorizer, dataset) -> Splits:
    """Every split's lyrics as token ids."""
    return Splits(
        ids={split: vectorize(vectorizer, dataset.texts(split)) for split in dataset.SPLITS},
        vocabulary=[str(token) for token in vectorizer.get_vocabulary()],
    )
