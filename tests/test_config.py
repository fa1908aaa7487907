"""Hydra composition of every config group and preset, and the schemas' errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KAGGLE_GENRES
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from genre_exp.config import config_dir

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
    assert cfg["data"]["balance"] is False
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
    assert balanced.pop("balance") is True and unbalanced.pop("balance") is False
    assert balanced.pop("name") == "balanced" and unbalanced.pop("name") == "unbalanced"
    assert balanced == unbalanced


def test_lstm_dropout_adds_dropout_and_batch_norm(hydra_compose):
    lstm = resolved(hydra_compose(["model=lstm"]))["model"]
    dropout = resolved(hydra_compose(["model=lstm_dropout"]))["model"]
    assert (lstm["dropout"], lstm["batch_norm"]) == (0.0, False)
    assert (dropout["dropout"], dropout["batch_norm"]) == (0.5, True)


@pytest.mark.parametrize(
    ("preset", "data", "model", "dropout", "batch"),
    [
        ("seed_unbalanced", "unbalanced", "lstm", 0.0, 1000),
        ("seed_balanced", "balanced", "lstm", 0.0, 100),
        ("seed_balanced_dropout", "balanced", "lstm_dropout", 0.5, 100),
    ],
)
def test_seed_presets_mirror_the_notebook(hydra_compose, preset, data, model, dropout, batch):
    cfg = resolved(hydra_compose([f"experiment={preset}"]))
    assert cfg["data"]["name"] == data
    assert cfg["data"]["sequence_length"] == 500
    assert cfg["model"]["name"] == model
    assert (cfg["model"]["embedding_dim"], cfg["model"]["lstm_units"]) == (128, 128)
    assert cfg["model"]["dropout"] == dropout
    # The notebook never had a normalisation layer, whatever its README says.
    assert cfg["model"]["batch_norm"] is False
    assert cfg["training"]["batch_size"] == batch
    assert cfg["training"]["optimizer"] == "adam"
    assert cfg["training"]["learning_rate"] == 0.001
    assert cfg["tags"]["preset"] == preset


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
    assert "name: lstm_dropout" in job.stdout and "balance: true" in job.stdout
    helped = run_app("--help")
    assert helped.returncode == 0
    assert "genre-exp" in helped.stdout
    assert "experiment: seed_balanced, seed_balanced_dropout, seed_unbalanced" in helped.stdout


def test_entrypoint_import_stays_light():
    """``--help`` and ``--cfg job`` must not pay for TensorFlow or MLflow."""
    code = (
        "import sys, genre_exp.cli; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
