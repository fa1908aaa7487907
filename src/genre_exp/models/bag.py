"""A bag of embeddings, no order beyond the n-grams: Embedding of the tokens (words, and word
n-grams when `ngrams` > 1) -> [spatial dropout] -> mean and/or max over the lyric's tokens
(padding ignored) -> dropout -> [Dense] -> softmax.

Two presets: `pool` (words, mean and max: the fastest neural family that holds its own) and
`fasttext` (words and bigrams, mean only, straight to the softmax, as fastText classifies)."""

from __future__ import annotations

from dataclasses import dataclass, field

from genre_exp.errors import ConfigError
from genre_exp.models import Inputs, ModelConfig, check_rate, check_sizes, family
from genre_exp.models.pooling import Pooling, masked_pooling


@dataclass
class BagConfig(ModelConfig):
    name: str = "pool"
    embedding_dim: int = 64
    # Word n-grams read besides words (1: words only; 2: words then bigrams, one vocabulary).
    # The vectoriser's tokens are all the words followed by all the n-grams, cut at
    # data.sequence_length: see conf/model/fasttext.yaml for the data settings n-grams need.
    ngrams: int = 1
    pooling: list[Pooling] = field(default_factory=lambda: [Pooling.mean, Pooling.max])
    # Spatial: drops whole embedding channels for a lyric.
    embedding_dropout: float = 0.0
    # On the pooled features.
    dropout: float = 0.3
    # Hidden dense layer before the softmax; 0 means none.
    dense_units: int = 0


@family("bag", BagConfig)
def build(cfg: BagConfig, inputs: Inputs):
    import keras
    from keras import layers

    check_sizes(cfg, {"embedding_dim": 1, "ngrams": 1, "dense_units": 0})
    check_rate(cfg, "embedding_dropout")
    check_rate(cfg)
    kinds = [str(kind) for kind in cfg.pooling]
    if not kinds or len(set(kinds)) != len(kinds):
        raise ConfigError(
            f"model.pooling={kinds}: expected one or both of {[p.value for p in Pooling]}, "
            "each once"
        )
    tokens = keras.Input(shape=inputs.shape, dtype="int32", name="token_ids")
    x = layers.Embedding(inputs.vocab_size, cfg.embedding_dim, name="embedding")(tokens)
    if cfg.embedding_dropout:
        x = layers.SpatialDropout1D(cfg.embedding_dropout, name="embedding_dropout")(x)
    x = masked_pooling(x, tokens, kinds)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    if cfg.dense_units:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense")(x)
    outputs = layers.Dense(inputs.n_classes, activation="softmax", name="genre")(x)
    return keras.Model(tokens, outputs, name=cfg.name)
