"""The seed's family: Embedding (masked) -> [Dropout] -> LSTM -> [Dropout] -> [Dense] ->
[BatchNorm] -> softmax."""

from __future__ import annotations

from dataclasses import dataclass

from genre_exp.models import Inputs, ModelConfig, check_rate, check_sizes, family


@dataclass
class LstmConfig(ModelConfig):
    name: str = "lstm"
    embedding_dim: int = 128
    lstm_units: int = 128
    bidirectional: bool = False
    dropout: float = 0.0
    batch_norm: bool = False
    # Hidden dense layer before the softmax; 0 means none (the seed had none).
    dense_units: int = 0


@family("lstm", LstmConfig)
def build(cfg: LstmConfig, inputs: Inputs):
    import keras
    from keras import layers

    check_sizes(cfg, {"embedding_dim": 1, "lstm_units": 1, "dense_units": 0})
    check_rate(cfg)
    tokens = keras.Input(shape=inputs.shape, dtype="int32", name="token_ids")
    x = layers.Embedding(inputs.vocab_size, cfg.embedding_dim, mask_zero=True, name="embedding")(
        tokens
    )
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="embedding_dropout")(x)
    recurrent = layers.LSTM(cfg.lstm_units, name="lstm")
    x = layers.Bidirectional(recurrent, name="bilstm")(x) if cfg.bidirectional else recurrent(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="lstm_dropout")(x)
    if cfg.dense_units:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense")(x)
    if cfg.batch_norm:
        x = layers.BatchNormalization(name="batch_norm")(x)
    outputs = layers.Dense(inputs.n_classes, activation="softmax", name="genre")(x)
    return keras.Model(tokens, outputs, name=cfg.name)
