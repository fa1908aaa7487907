"""Keras models: token ids in, genre probabilities out; and the export wrapper taking raw text."""

from __future__ import annotations

from genre_exp.errors import ConfigError


def build_classifier(
    vocab_size: int,
    sequence_length: int,
    n_classes: int,
    embedding_dim: int = 128,
    lstm_units: int = 128,
    bidirectional: bool = False,
    dropout: float = 0.0,
    batch_norm: bool = False,
    dense_units: int = 0,
    name: str = "lstm",
):
    """Embedding (masked) -> [Dropout] -> LSTM -> [Dropout] -> [Dense] -> [BatchNorm] -> softmax."""
    import keras
    from keras import layers

    for name, value, least in (
        ("embedding_dim", embedding_dim, 1),
        ("lstm_units", lstm_units, 1),
        ("dense_units", dense_units, 0),
    ):
        if value < least:
            raise ConfigError(f"model.{name}={value}: expected an integer >= {least}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout={dropout}: expected 0 <= dropout < 1")
    inputs = keras.Input(shape=(sequence_length,), dtype="int32", name="token_ids")
    x = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(inputs)
    if dropout:
        x = layers.Dropout(dropout, name="embedding_dropout")(x)
    recurrent = layers.LSTM(lstm_units, name="lstm")
    x = layers.Bidirectional(recurrent, name="bilstm")(x) if bidirectional else recurrent(x)
    if dropout:
        x = layers.Dropout(dropout, name="lstm_dropout")(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    if batch_norm:
        x = layers.BatchNormalization(name="batch_norm")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="genre")(x)
    return keras.Model(inputs, outputs, name=name)


def export_model(vectorizer, classifier):
    """One model from raw lyrics (a batch of scalar strings) to genre probabilities."""
    import keras

    inputs = keras.Input(shape=(), dtype="string", name="lyrics")
    outputs = classifier(vectorizer(inputs))
    return keras.Model(inputs, outputs, name=f"{classifier.name}_text")
