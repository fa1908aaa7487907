"""Hydra composition of every config group and preset, and the schemas' errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
from conftest import KAGGLE_GENRES
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from genre_exp.config import (
    SCHEMA_GROUPS,
    Config,
    DataConfig,
    EarlyStoppingConfig,
    MlflowConfig,
    PathsConfig,
    ReduceLRConfig,
    TrainingConfig,
    config_dir,
)
from genre_exp.models import FAMILIES
from genre_exp.models.lstm import LstmConfig

CONF = config_dir()


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture
def hydra_compose():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        yield lambda overrides=(): compose(
            "config", overrides=list(overrides), return_hydra_config=True
        )
    GlobalHydra.instance().clear()


def resolved(cfg) -> dict:
    """The job's config, resolved, with ``hydra.run.dir`` (the rest of ``hydra`` only resolves
    inside a running job)."""
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(job, resolve=True, enum_to_str=True) | {
        "hydra": {"run": {"dir": run_dir}}
    }


def test_config_dir_is_the_checkout_conf():
    assert (CONF / "config.yaml").is_file()


@pytest.mark.parametrize(
    "group", ["data", "model", "training", "mlflow", "paths", "experiment", "debug"]
)
def test_every_option_of_every_group_composes(hydra_compose, group):
    options = group_options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = resolved(hydra_compose([f"{group}={option}"]))
        assert cfg["data"]["genres"], option
        assert cfg["mlflow"]["tracking_uri"], option


def test_defaults(hydra_compose, tmp_path):
    cfg = resolved(hydra_compose([f"paths.root_dir={tmp_path}"]))
    # Kaggle's ten genres, in the seed notebook's label order.
    assert cfg["data"]["genres"] == KAGGLE_GENRES
    assert cfg["data"]["balance"] == "none"
    assert cfg["model"]["name"] == "lstm"
    assert cfg["mlflow"]["tracking_uri"] == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert cfg["hydra"]["run"]["dir"].startswith(f"{tmp_path}/outputs/")
    assert cfg["data"]["train_path"] is None and cfg["data"]["test_path"] is None
    assert cfg["paths"]["data_dir"] == f"{tmp_path}/data"


def test_project_root_is_absolute_and_holds_conf(hydra_compose):
    root = Path(resolved(hydra_compose())["paths"]["root_dir"])
    assert root.is_absolute()
    assert (root / "conf" / "config.yaml").is_file()


def test_tracking_uri_from_environment(hydra_compose, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolved(hydra_compose())["mlflow"]["tracking_uri"] == "http://127.0.0.1:5000"


def test_interface_names_override(hydra_compose):
    overrides = {
        "data.train_path": "/x/train.csv",
        "data.test_path": "/x/test.csv",
        "data.max_train_rows": 100,
        "model.embedding_dim": 32,
        "model.lstm_units": 16,
        "model.dropout": 0.25,
        "model.batch_norm": True,
        "training.epochs": 3,
        "training.batch_size": 8,
        "training.learning_rate": 0.01,
        "mlflow.tracking_uri": "sqlite:////tmp/x.db",
        "mlflow.experiment_name": "other",
    }
    cfg = resolved(hydra_compose([f"{k}={v}" for k, v in overrides.items()]))
    for key, value in overrides.items():
        group, name = key.split(".")
        assert cfg[group][name] == value, key


def test_balanced_and_unbalanced_differ_only_in_balancing(hydra_compose):
    balanced = resolved(hydra_compose(["data=balanced"]))["data"]
    unbalanced = resolved(hydra_compose(["data=unbalanced"]))["data"]
    assert balanced.pop("balance") == "undersample" and unbalanced.pop("balance") == "none"
    assert balanced.pop("name") == "balanced" and unbalanced.pop("name") == "unbalanced"
    assert balanced == unbalanced


def test_lstm_dropout_adds_dropout_and_batch_norm(hydra_compose):
    lstm = resolved(hydra_compose(["model=lstm"]))["model"]
    dropout = resolved(hydra_compose(["model=lstm_dropout"]))["model"]
    assert (lstm["dropout"], lstm["batch_norm"]) == (0.0, False)
    assert (dropout["dropout"], dropout["batch_norm"]) == (0.5, True)


# What the seed notebook ran (../shared/reference/seed-notebook.md), setting by setting: the
# same stack and training loop for all three, then what tells them apart.
SEED_STACK = {
    "data.sequence_length": 500,
    "model.embedding_dim": 128,
    "model.lstm_units": 128,
    "model.bidirectional": False,
    "model.dense_units": 0,
    # The notebook never had a normalisation layer, whatever its README says.
    "model.batch_norm": False,
    "training.epochs": 20,
    "training.optimizer": "adam",
    "training.learning_rate": 0.001,
    "training.early_stopping.enabled": True,
    "training.early_stopping.restore_best_weights": True,
    "training.class_weight": "none",
}
SEED_BALANCED = SEED_STACK | {
    "data.name": "balanced",
    # Words seen at least 5 times in the balanced rows, + padding and OOV.
    "data.vocab_size": 17255,
    "training.batch_size": 100,
    "training.early_stopping.monitor": "val_loss",
    "training.early_stopping.patience": 5,
    "training.reduce_lr.enabled": True,
    "training.reduce_lr.monitor": "val_accuracy",
    "training.reduce_lr.patience": 3,
    "training.reduce_lr.factor": 0.25,
    "training.reduce_lr.min_lr": 1e-7,
}
SEED_PRESETS = {
    "seed_unbalanced": SEED_STACK
    | {
        "data.name": "unbalanced",
        # Words seen at least 30 times in all rows, + padding and OOV.
        "data.vocab_size": 21879,
        "training.batch_size": 1000,
        # Best epoch by validation accuracy, never stopped early.
        "training.early_stopping.monitor": "val_accuracy",
        "training.early_stopping.patience": 20,
        "training.reduce_lr.enabled": False,
        "model.name": "lstm",
        "model.dropout": 0.0,
    },
    "seed_balanced": SEED_BALANCED | {"model.name": "lstm", "model.dropout": 0.0},
    "seed_balanced_dropout": SEED_BALANCED | {"model.name": "lstm_dropout", "model.dropout": 0.5},
}


def leaves(node, prefix: str = "") -> dict:
    """``{"a.b.c": value}`` for every leaf of a nested dict."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat |= leaves(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def yaml_body(path: Path) -> dict:
    """What a config file sets, without its defaults list."""
    body = OmegaConf.to_container(OmegaConf.load(path))
    body.pop("defaults", None)
    return body


@pytest.mark.parametrize("preset", sorted(SEED_PRESETS))
def test_seed_presets_mirror_the_notebook(hydra_compose, preset):
    expected = SEED_PRESETS[preset]
    cfg = leaves(resolved(hydra_compose([f"experiment={preset}"])))
    assert {key: cfg[key] for key in expected} == expected
    assert cfg["tags.preset"] == preset
    # Balanced or not: the data option's settings, bar what the preset pins.
    option = leaves(resolved(hydra_compose([f"data={expected['data.name']}"])))
    pinned_data = {key: value for key, value in expected.items() if key.startswith("data.")}
    assert {k: v for k, v in cfg.items() if k.startswith("data.")} == {
        k: v for k, v in option.items() if k.startswith("data.")
    } | pinned_data
    # Whatever a preset pins is checked above, so changing it fails this test.
    pinned = leaves(yaml_body(CONF / "experiment" / f"{preset}.yaml"))
    assert set(pinned) - {"tags.preset"} <= set(expected), preset


def test_smoke_debug_preset_is_small(hydra_compose):
    cfg = resolved(hydra_compose(["debug=smoke"]))
    assert cfg["training"]["epochs"] <= 2
    assert cfg["data"]["max_train_rows"] <= 1000


@pytest.mark.parametrize(
    "override",
    [
        "model.lstm_units=abc",
        "training.epochs=many",
        "training.optimizer=adamx",
        "data.balance=maybe",
        "data.unknown_genres=ignore",
        "training.early_stopping.monitor=val_los",
        "training.reduce_lr.monitor=acc",
    ],
)
def test_wrong_types_fail_at_composition(hydra_compose, override):
    with pytest.raises((ValidationError, ConfigCompositionException)):
        hydra_compose([override])


@pytest.mark.parametrize("override", ["model.lstm_unit=3", "training.epoch=3", "data.vocab=5"])
def test_misspelt_keys_fail_at_composition(hydra_compose, override):
    with pytest.raises((ConfigKeyError, ConfigCompositionException)):
        hydra_compose([override])


def test_unknown_group_option_fails(hydra_compose):
    with pytest.raises(ConfigCompositionException):
        hydra_compose(["model=transformer"])


@pytest.mark.parametrize("override", ["model=base_model", "model=family_lstm", "data=base_data"])
def test_schemas_are_not_group_options(hydra_compose, override):
    """A schema is named by the group's YAML files; it is no option of its own."""
    with pytest.raises(ConfigCompositionException):
        hydra_compose([override])


@pytest.mark.parametrize("preset", [None, *group_options("experiment")])
def test_composed_nodes_are_the_schema_classes(hydra_compose, preset):
    cfg = hydra_compose([f"experiment={preset}"] if preset else [])
    expected = {
        "paths": PathsConfig,
        "data": DataConfig,
        # The seed presets and the default train the notebook's LSTM; experiment=best does not.
        "model": FAMILIES[cfg.model.name].schema if preset == "best" else LstmConfig,
        "training": TrainingConfig,
        "training.early_stopping": EarlyStoppingConfig,
        "training.reduce_lr": ReduceLRConfig,
        "mlflow": MlflowConfig,
    }
    for key, schema in expected.items():
        assert OmegaConf.get_type(OmegaConf.select(cfg, key)) is schema, key


def schema_of(group: str, path: Path) -> type:
    """The schema a group's YAML file is checked against: the root schema's field type, or for
    a model the family its YAML names (``- /family_<name>@_here_``)."""
    if group != "model":
        return get_type_hints(Config)[group]
    (entry,) = [e for e in OmegaConf.load(path).defaults if str(e).startswith("/family_")]
    return FAMILIES[entry.removeprefix("/family_").removesuffix("@_here_")].schema


def schema_defaults(schema: type) -> dict:
    return leaves(OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True))


@pytest.mark.parametrize("group", SCHEMA_GROUPS)
def test_group_files_say_only_what_differs_from_the_schema(group):
    """The schema owns the defaults: a group file restating one would hide a later change of
    the schema's default. (Presets under experiment/ pin values on purpose.)"""
    for path in sorted((CONF / group).glob("*.yaml")):
        defaults = schema_defaults(schema_of(group, path))
        for key, value in leaves(yaml_body(path)).items():
            assert key in defaults, f"{path.name}: {key} is not in the schema"
            assert value != defaults[key], f"{path.name}: {key}={value!r} is the schema default"


@pytest.mark.parametrize("group", SCHEMA_GROUPS)
def test_composed_groups_are_the_schema_plus_their_file(hydra_compose, group):
    for path in sorted((CONF / group).glob("*.yaml")):
        composed = hydra_compose([f"{group}={path.stem}"])[group]
        expected = OmegaConf.merge(OmegaConf.structured(schema_of(group, path)), yaml_body(path))
        assert OmegaConf.to_container(composed, enum_to_str=True) == OmegaConf.to_container(
            expected, enum_to_str=True
        ), path.name


def test_defaults_where_the_files_are_silent_come_from_the_schema(hydra_compose):
    cfg = hydra_compose()
    assert cfg.data.vocab_size == DataConfig().vocab_size
    assert cfg.data.val_fraction == DataConfig().val_fraction
    assert cfg.model.lstm_units == LstmConfig().lstm_units
    assert cfg.training.early_stopping.patience == EarlyStoppingConfig().patience
    assert cfg.training.reduce_lr.enabled is ReduceLRConfig().enabled
    assert cfg.mlflow.experiment_name == MlflowConfig().experiment_name


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genre_exp", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_rejects_a_bad_value_with_hydras_message_before_reading_data():
    result = run_app("model.lstm_units=abc", "data.train_path=/nonexistent/train.csv")
    assert result.returncode != 0
    assert "model.lstm_units" in result.stderr
    assert "could not be converted to Integer" in result.stderr
    assert "/nonexistent" not in result.stderr


def test_cli_cfg_job_and_help():
    job = run_app("--cfg", "job", "model=lstm_dropout", "data=balanced")
    assert job.returncode == 0, job.stderr
    assert "name: lstm_dropout" in job.stdout and "balance: undersample" in job.stdout
    helped = run_app("--help")
    assert helped.returncode == 0
    assert "genre-exp" in helped.stdout
    assert (
        "experiment: best, seed_balanced, seed_balanced_dropout, seed_unbalanced" in helped.stdout
    )
    # Every command beside the Hydra app is pointed to.
    from genre_exp.cli import COMMANDS

    assert [c for c in COMMANDS if f"genre-exp {c} --help" not in helped.stdout] == []


def test_help_lists_exactly_the_yaml_options():
    helped = run_app("--help")
    assert helped.returncode == 0, helped.stderr
    section = helped.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {
        group: options.split(", ")
        for group, _, options in (
            line.partition(": ") for line in section.splitlines() if ": " in line
        )
    }
    groups = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
    assert {group: group_options(group) for group in groups} == listed
    options = [option for values in listed.values() for option in values]
    assert not [o for o in options if o.startswith(("base_", "family_"))]


def test_entrypoint_import_stays_light():
    """``--help`` and ``--cfg job`` must not pay for TensorFlow or MLflow."""
    code = (
        "import sys, genre_exp.cli; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
