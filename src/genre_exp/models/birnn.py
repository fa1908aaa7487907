"""A bidirectional recurrent encoder read at every step: Embedding (masked) -> spatial dropout
-> Bidirectional GRU or LSTM (every step's output) -> mean and max over the lyric's steps
(padding ignored) -> dropout -> [Dense] -> softmax.

Pooling every step, rather than keeping only the last state, lets a word anywhere in a long lyric
count as much as one near its end."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from genre_exp.models import Inputs, ModelConfig, check_rate, check_sizes, family
from genre_exp.models.pooling import Pooling, masked_pooling


class Cell(StrEnum):
    gru = "gru"
    lstm = "lstm"


@dataclass
class BiRnnConfig(ModelConfig):
    name: str = "bigru"
    cell: Cell = Cell.gru
    embedding_dim: int = 64
    # Per direction: the pooled features are 2 directions x 2 poolings x units.
    units: int = 64
    # Spatial: drops whole embedding channels for a lyric, not single values, so a recurrent
    # layer cannot lean on one channel of one word.
    embedding_dropout: float = 0.3
    # On the pooled features.
    dropout: float = 0.3
    # Hidden dense layer before the softmax; 0 means none.
    dense_units: int = 0


@family("birnn", BiRnnConfig)
def build(cfg: BiRnnConfig, inputs: Inputs):
    import keras
    from keras import layers

    check_sizes(cfg, {"embedding_dim": 1, "units": 1, "dense_units": 0})
    check_rate(cfg, "embedding_dropout")
    check_rate(cfg)
    tokens = keras.Input(shape=inputs.shape, dtype="int32", name="token_ids")
    x = layers.Embedding(inputs.vocab_size, cfg.embedding_dim, mask_zero=True, name="embedding")(
        tokens
    )
    x = layers.SpatialDropout1D(cfg.embedding_dropout, name="embedding_dropout")(x)
    cell = {Cell.gru: layers.GRU, Cell.lstm: layers.LSTM}[Cell(cfg.cell)]
    x = layers.Bidirectional(
        cell(cfg.units, return_sequences=True, name=str(cfg.cell)), name=f"bi{cfg.cell}"
    )(x)
    x = masked_pooling(x, tokens, [Pooling.mean, Pooling.max])
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    if cfg.dense_units:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense")(x)
    outputs = layers.Dense(inputs.n_classes, activation="softmax", name="genre")(x)
    return keras.Model(tokens, outputs, name=cfg.name)
