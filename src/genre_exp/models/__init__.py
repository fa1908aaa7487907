"""Model families. A family is a typed schema (its settings under ``model.``) and one builder,
registered here by ``@family``; its YAML under ``conf/model/`` names the schema.

Every builder takes token ids and returns genre probabilities, so the vectoriser, the export
to a raw-lyrics model, checkpoints and serving are the same for every family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING


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


@dataclass(frozen=True)
class Family:
    name: str
    schema: type[ModelConfig]
    build: Callable[[Any, Inputs], Any]


FAMILIES: dict[str, Family] = {}


def family(name: str, schema: type[ModelConfig]):
    """Register ``build(cfg, inputs) -> keras.Model`` as the builder of family ``name``, whose
    settings are ``schema``."""

    def register(build: Callable[[Any, Inputs], Any]):
        FAMILIES[name] = Family(name, schema, build)
        return build

    return register


def family_of(cfg: Any) -> Family:
    """The family whose schema ``cfg`` (the composed ``model`` node, or a schema instance) is."""
    from omegaconf import OmegaConf

    schema = OmegaConf.get_type(cfg) if OmegaConf.is_config(cfg) else type(cfg)
    for registered in FAMILIES.values():
        if registered.schema is schema:
            return registered
    raise KeyError(f"no model family has the schema {schema.__name__}")


def build_classifier(cfg: Any, inputs: Inputs):
    """The classifier ``cfg`` describes: token ids (``inputs.sequence_length``) in, one
    probability per genre out."""
    return family_of(cfg).build(cfg, inputs)


def export_model(vectorizer, classifier):
    """One model from raw lyrics (a batch of scalar strings) to genre probabilities."""
    import keras

    inputs = keras.Input(shape=(), dtype="string", name="lyrics")
    outputs = classifier(vectorizer(inputs))
    return keras.Model(inputs, outputs, name=f"{classifier.name}_text")


# The families; each module registers itself.
from genre_exp.models import lstm  # noqa: E402, F401
