"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Each YAML file in ``conf/<group>/`` names its schema in ``defaults`` so a misspelt key or a
value of the wrong type fails at composition, with Hydra's own message, before any data is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent


def source_root() -> Path | None:
    """The checkout this package runs from (editable install), or None for a wheel install."""
    candidate = PACKAGE_DIR.parents[1]
    if (candidate / "conf").is_dir() and (candidate / "pyproject.toml").is_file():
        return candidate
    return None


def config_dir() -> Path:
    """``conf/`` of the checkout, or the copy a wheel carries inside the package."""
    root = source_root()
    return root / "conf" if root else PACKAGE_DIR / "conf"


def project_root() -> str:
    """Where ``outputs/``, ``mlruns/`` and ``data/`` live: ``$GENRE_EXP_ROOT``, else the
    checkout, else the folder the command was started in. Resolved once, before Hydra runs."""
    env = os.environ.get("GENRE_EXP_ROOT")
    if env:
        return str(Path(env).expanduser().resolve())
    root = source_root()
    return str(root if root else Path.cwd().resolve())


def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow store outside a Hydra run (``predict``, ``promote``, ``data report``): the
    given URI, else ``$MLFLOW_TRACKING_URI``, else SQLite under the project root, the same
    default as ``conf/mlflow/default.yaml``."""
    return (
        explicit
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{project_root()}/mlruns/mlflow.db"
    )


class LabelMode(StrEnum):
    error = "error"
    drop = "drop"


class Optimizer(StrEnum):
    adam = "adam"
    adamw = "adamw"
    rmsprop = "rmsprop"
    sgd = "sgd"


class ClassWeight(StrEnum):
    none = "none"
    balanced = "balanced"


class Standardize(StrEnum):
    lower_and_strip_punctuation = "lower_and_strip_punctuation"
    lower = "lower"
    strip_punctuation = "strip_punctuation"


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING


@dataclass
class ColumnsConfig:
    """Column names after normalisation (lower case, spaces to underscores), so Kaggle's
    ``Lyrics`` and the Parquet layout's ``lyrics`` are the same column."""

    text: str = "lyrics"
    label: str = "genre"
    language: str = "language"
    artist: str = "artist"
    song: str = "song"


@dataclass
class DataConfig:
    name: str = MISSING
    # null: the first folder holding train and test files, of $GENRE_EXP_DATA, data/processed.
    train_path: str | None = None
    test_path: str | None = None
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    genres: list[str] = MISSING
    # Which training-split languages to keep; null keeps all. The test split is never filtered:
    # it is the fixed yardstick (and Kaggle's test.csv has no language column).
    languages: list[str] | None = None
    balance: bool = False
    # Rows whose genre is not in ``genres``: stop with an error, or drop them and log the count.
    unknown_genres: LabelMode = LabelMode.error
    val_fraction: float = 0.2
    max_train_rows: int | None = None
    vocab_size: int = 20000
    sequence_length: int = 500
    standardize: Standardize = Standardize.lower_and_strip_punctuation
    seed: int = 42


@dataclass
class ModelConfig:
    name: str = MISSING
    embedding_dim: int = 128
    lstm_units: int = 128
    bidirectional: bool = False
    dropout: float = 0.0
    batch_norm: bool = False
    # Hidden dense layer before the softmax; 0 means none (the seed had none).
    dense_units: int = 0


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    patience: int = 5
    restore_best_weights: bool = True


@dataclass
class ReduceLRConfig:
    enabled: bool = False
    monitor: str = "val_accuracy"
    patience: int = 3
    factor: float = 0.25
    min_lr: float = 1e-7


@dataclass
class TrainingConfig:
    epochs: int = 20
    batch_size: int = 100
    optimizer: Optimizer = Optimizer.adam
    learning_rate: float = 1e-3
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    reduce_lr: ReduceLRConfig = field(default_factory=ReduceLRConfig)
    class_weight: ClassWeight = ClassWeight.none
    seed: int = 42
    # Keras progress: 0 silent, 1 bar, 2 one line per epoch; null: a bar on a terminal, lines
    # otherwise (a bar's redraws are noise in a log file).
    verbose: int | None = None
    # The id of a killed run to continue from its last checkpoint, in the same MLflow run.
    resume: str | None = None


@dataclass
class MlflowConfig:
    tracking_uri: str = MISSING
    experiment_name: str = "genre-exp"
    # null: artifacts go beside a SQLite store (<store dir>/artifacts); a server decides its own.
    artifact_location: str | None = None
    run_name: str | None = None
    log_model: bool = True
    # Also register the logged model as a new version of this registered model; null: don't.
    registered_model_name: str | None = None


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    training: TrainingConfig = field(default_factory=TrainingConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    tags: dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    if not OmegaConf.has_resolver("genre_exp.root"):
        OmegaConf.register_resolver("genre_exp.root", project_root)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="paths", name="base_paths", node=PathsConfig)
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="training", name="base_training", node=TrainingConfig)
    cs.store(group="mlflow", name="base_mlflow", node=MlflowConfig)


register_configs()
