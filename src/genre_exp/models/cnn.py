"""Word n-gram detectors: Embedding -> spatial dropout -> padding zeroed -> parallel Conv1D of
several widths (ReLU) -> max over the lyric's steps (padding ignored) -> dropout -> softmax.

Conv1D takes no mask, so padding is handled by hand, twice: the padded steps' embeddings are set
to zeros (what the convolution itself pads with past the end), and the max skips the windows
centred on padding, whose ReLU(bias) could otherwise be a filter's maximum for a short lyric.
A lyric therefore gives the same output whatever padding follows it."""

from __future__ import annotations

from dataclasses import dataclass, field

from genre_exp.errors import ConfigError
from genre_exp.models import Inputs, ModelConfig, check_rate, check_sizes, family
from genre_exp.models.pooling import Pooling, masked_pooling, zero_padding


@dataclass
class CnnConfig(ModelConfig):
    name: str = "cnn"
    embedding_dim: int = 64
    # One convolution per width (in words), each with `filters` filters.
    kernel_sizes: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    filters: int = 64
    embedding_dropout: float = 0.2
    # On the pooled features.
    dropout: float = 0.5


@family("cnn", CnnConfig)
def build(cfg: CnnConfig, inputs: Inputs):
    import keras
    from keras import layers

    check_sizes(cfg, {"embedding_dim": 1, "filters": 1})
    check_rate(cfg, "embedding_dropout")
    check_rate(cfg)
    widths = list(cfg.kernel_sizes)
    if not widths or min(widths) < 1 or len(set(widths)) != len(widths):
        raise ConfigError(
            f"model.kernel_sizes={widths}: expected a non-empty list of distinct integers >= 1"
        )
    tokens = keras.Input(shape=inputs.shape, dtype="int32", name="token_ids")
    x = layers.Embedding(inputs.vocab_size, cfg.embedding_dim, name="embedding")(tokens)
    x = layers.SpatialDropout1D(cfg.embedding_dropout, name="embedding_dropout")(x)
    x = zero_padding(x, tokens)
    # "same": one window per step, so the token mask also says which windows are the lyric's.
    convolutions = [
        layers.Conv1D(cfg.filters, width, padding="same", activation="relu", name=f"conv_{width}")(
            x
        )
        for width in widths
    ]
    if len(convolutions) > 1:
        x = layers.Concatenate(name="convolutions")(convolutions)
    else:
        x = convolutions[0]
    # The max of the concatenation is each width's max, concatenated.
    x = masked_pooling(x, tokens, [Pooling.max], name="max_pooling")
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = layers.Dense(inputs.n_classes, activation="softmax", name="genre")(x)
    return keras.Model(tokens, outputs, name=cfg.name)
