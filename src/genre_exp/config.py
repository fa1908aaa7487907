"""Typed schemas for every config group: the schema owns the defaults, the YAML files under
``conf/`` say only what differs. A misspelt key or a value of the wrong type fails at
composition with Hydra's own message, before any data is read.

The root schema ``Config`` types every group; a model family's schema comes from its module
under ``genre_exp.models`` and is named by the family's YAML (``- /family_<name>@_here_``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from genre_exp.data.layout import KAGGLE_GENRES, Columns
from genre_exp.models import FAMILIES, ModelConfig

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


def default_tracking_uri(root: str | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else SQLite under the project root: the default of
    ``mlflow.tracking_uri`` and of every command's ``--tracking-uri``."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{root or project_root()}/mlruns/mlflow.db"
    )


def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow store outside a Hydra run (``predict``, ``promote``, ``compare``, ``runs``,
    ``data report``): the given URI, else the default."""
    return explicit or default_tracking_uri()


class Balance(StrEnum):
    none = "none"
    undersample = "undersample"
    oversample = "oversample"


class ValSplit(StrEnum):
    stratified = "stratified"
    by_artist = "by_artist"


class ValWeights(StrEnum):
    none = "none"
    balanced = "balanced"


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


class Monitor(StrEnum):
    """The per-epoch numbers a callback can watch."""

    loss = "loss"
    accuracy = "accuracy"
    val_loss = "val_loss"
    val_accuracy = "val_accuracy"
    val_macro_f1 = "val_macro_f1"


@dataclass
class PathsConfig:
    # The project root, resolved once: $GENRE_EXP_ROOT, else the checkout, else the start folder.
    root_dir: str = "${genre_exp.root:}"
    # data/raw (downloads) and data/processed (prepared splits, read by default).
    data_dir: str = "${paths.root_dir}/data"
    # Cleaned data sets and token ids, kept between jobs and runs (data.cache); safe to delete.
    cache_dir: str = "${paths.root_dir}/outputs/cache"


@dataclass
class DataConfig:
    name: str = MISSING
    # CSV or Parquet, by extension. null: the first folder holding train and test files, of
    # $GENRE_EXP_DATA, then <root>/data/processed (where `genre-exp data prepare` writes).
    train_path: str | None = None
    test_path: str | None = None
    columns: Columns = field(default_factory=Columns)
    # The label order is the model's output order and the order of every table.
    genres: list[str] = field(default_factory=lambda: list(KAGGLE_GENRES))
    # Which training-split languages to keep; null keeps all. The test split is never filtered:
    # it is the fixed yardstick (and Kaggle's test.csv has no language column).
    languages: list[str] | None = None
    # Imbalance in the rows: undersample every training genre to the smallest one's count (as
    # the seed did, before the validation split), oversample the training part up to the
    # largest, or none. Class weights (training.class_weight) are the other way.
    balance: Balance = Balance.none
    # Rows whose genre is not in ``genres``: stop with an error, or drop them and log the count.
    unknown_genres: LabelMode = LabelMode.error
    val_fraction: float = 0.2
    # stratified by genre; by_artist also keeps each artist on one side, as a test split of other
    # artists does (otherwise validation rewards knowing an artist's words).
    val_split: ValSplit = ValSplit.stratified
    # How validation scores (val_macro_f1, val_loss, early stopping, selection) count the rows:
    # as they come, or balanced, every genre weighing the same, as in a genre-balanced test
    # split (Kaggle's and lyrics-real's test splits are near balanced, their train splits not).
    val_weights: ValWeights = ValWeights.none
    # A stratified subsample of the training rows, for quick runs; null: all.
    max_train_rows: int | None = None
    vocab_size: int = 20000
    sequence_length: int = 500
    standardize: Standardize = Standardize.lower_and_strip_punctuation
    seed: int = 42
    # Read and clean the files once, and vectorise once per vectoriser setting: later jobs and
    # runs with the same files and settings read the result from paths.cache_dir.
    cache: bool = True


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: Monitor = Monitor.val_loss
    patience: int = 5
    restore_best_weights: bool = True


@dataclass
class ReduceLRConfig:
    enabled: bool = False
    monitor: Monitor = Monitor.val_accuracy
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
    # Batch lyrics of similar length together, each batch padded only to its longest lyric
    # instead of data.sequence_length: faster for a family whose input takes any length (the
    # recurrent ones); a family that needs the fixed length gets it anyway.
    bucket_by_length: bool = False
    # The id of a killed run to continue from its last checkpoint, in the same MLflow run (same
    # data and model settings; training.epochs may grow).
    resume: str | None = None


@dataclass
class MlflowConfig:
    # $MLFLOW_TRACKING_URI wins (e.g. an MLflow server); else a SQLite store in <root>/mlruns.
    tracking_uri: str = "${genre_exp.tracking_uri:${paths.root_dir}}"
    experiment_name: str = "genre-exp"
    # null: artifacts go beside a SQLite store (<store dir>/artifacts); a server decides its own.
    artifact_location: str | None = None
    # null: <model>/<data>/<time>
    run_name: str | None = None
    log_model: bool = True
    # Also register the logged model as a new version of this registered model; null: don't
    # (`genre-exp promote` registers the best run's model when it aliases it).
    registered_model_name: str | None = None


@dataclass
class TrialConfig:
    # Which trial of which Optuna study this job is: set for each job by genre-exp's Optuna
    # sweeper (hparams_search presets), so the job reports validation macro-F1 to its trial
    # after every epoch and stops when the search's pruner judges it hopeless. null: no search.
    number: int | None = None
    study: str | None = None
    storage: str | None = None


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    training: TrainingConfig = field(default_factory=TrainingConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    # Free-form tags added to the MLflow run, e.g. `+tags.note=baseline`.
    tags: dict[str, Any] = field(default_factory=dict)


# The groups whose keys are all in a schema: `+group.key=...` can only add a misspelt key.
SCHEMA_GROUPS = ("paths", "data", "model", "training", "mlflow", "trial")


def register_configs() -> None:
    """The root schema and every model family's schema, as root-level ConfigStore entries
    (not config groups, so ``--help`` lists only real options)."""
    if not OmegaConf.has_resolver("genre_exp.root"):
        OmegaConf.register_resolver("genre_exp.root", project_root)
        OmegaConf.register_resolver("genre_exp.tracking_uri", default_tracking_uri)
    cs = ConfigStore.instance()
    # replace: registering again (a family added later, a test) is not a mistake to warn about.
    cs.store(name="schema", node=Config, replace=True)
    for family in FAMILIES.values():
        cs.store(name=f"family_{family.name}", node=family.schema, replace=True)


register_configs()
