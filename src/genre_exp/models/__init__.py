"""Model families. A family is a typed schema (its settings under ``model.``) and one builder,
registered here by ``@family``; its YAML under ``conf/model/`` names the schema.

Two kinds of family:
- ``keras``: ``build(cfg, inputs) -> keras.Model`` from token ids to genre probabilities, so the
  vectoriser, the export to a raw-lyrics model, checkpoints and serving are the same for all;
- ``text``: ``build(cfg, class_weight, seed)`` -> a scikit-learn estimator that takes raw
  lyrics itself (``fit(texts, labels)``, ``predict_proba(texts)``), trained in one step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from genre_exp.errors import ConfigError


@dataclass
class ModelConfig:
    """What every family's schema has; a family's schema subclasses it."""

    name: str = MISSING


@dataclass(frozen=True)
class Inputs:
    """What the data decides about a classifier's shape."""

    vocab_size: int
    sequence_length: int
    n_classes: int
    # Batches padded only to their longest lyric (training.bucket_by_length). A family whose
    # layers take any length builds its input with ``shape`` and gets such batches; one built
    # on ``sequence_length`` keeps batches of that fixed length.
    any_length: bool = False

    @property
    def shape(self) -> tuple[int | None]:
        """The token-id input's shape: any length, or ``sequence_length``."""
        return (None if self.any_length else self.sequence_length,)


KERAS = "keras"
TEXT = "text"


@dataclass(frozen=True)
class Family:
    name: str
    schema: type[ModelConfig]
    build: Callable[..., Any]
    kind: str = KERAS


FAMILIES: dict[str, Family] = {}


def family(name: str, schema: type[ModelConfig], kind: str = KERAS):
    """Register ``build`` as the builder of family ``name``, whose settings are ``schema``."""

    def register(build: Callable[..., Any]):
        FAMILIES[name] = Family(name, schema, build, kind)
        return build

    return register


def check_sizes(cfg: Any, minimums: dict[str, int]) -> None:
    """Refuse sizes a layer cannot have, naming the setting."""
    for setting, least in minimums.items():
        value = getattr(cfg, setting)
        if value < least:
            raise ConfigError(f"model.{setting}={value}: expected an integer >= {least}")


def check_rate(cfg: Any, setting: str = "dropout") -> None:
    rate = getattr(cfg, setting)
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"model.{setting}={rate}: expected 0 <= {setting} < 1")


def family_of(cfg: Any) -> Family:
    """The family whose schema ``cfg`` (the composed ``model`` node, or a schema instance) is."""
    from omegaconf import OmegaConf

    schema = OmegaConf.get_type(cfg) if OmegaConf.is_config(cfg) else type(cfg)
    for registered in FAMILIES.values():
        if registered.schema is schema:
            return registered
    raise ConfigError(
        f"model {getattr(cfg, 'name', '?')}: its settings ({schema.__name__}) are no registered "
        "family's; its YAML under conf/model/ must start with `defaults: [/family_<name>@_here_]`"
    )


def build_classifier(cfg: Any, inputs: Inputs):
    """The classifier a Keras family's ``cfg`` describes: token ids
    (``inputs.sequence_length``) in, one probability per genre out."""
    found = family_of(cfg)
    if found.kind != KERAS:
        raise ConfigError(f"model {cfg.name}: a {found.kind} family, not built on token ids")
    return found.build(cfg, inputs)


def export_model(vectorizer, classifier):
    """One model from raw lyrics (a batch of scalar strings) to genre probabilities."""
    import keras

    inputs = keras.Input(shape=(), dtype="string", name="lyrics")
    outputs = classifier(vectorizer(inputs))
    return keras.Model(inputs, outputs, name=f"{classifier.name}_text")


# The families; each module registers itself.
from genre_exp.models import bag, birnn, cnn, lstm, tfidf_linear  # noqa: E402, F401
