"""``experiment=best``: the configuration chosen on validation, as a preset, on whatever data
the user names."""

from __future__ import annotations

import pytest
from conftest import KAGGLE_GENRES, run_cli, tiny_overrides, tracking_uri
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from genre_exp.config import config_dir
from genre_exp.models.tfidf_linear import TfidfLinearConfig

PRESET = config_dir() / "experiment" / "best.yaml"
# What the selection chose (conf/experiment/best.yaml says which sweep, and its scores).
MODEL = {
    "name": "tfidf_linear",
    "word_ngrams": [1, 1],
    "char_ngrams": [2, 5],
    "min_df": 3,
    "max_features": 200000,
    "sublinear_tf": True,
    "classifier": "logistic_regression",
    "C": 0.2,
}
VALIDATION = {"data.val_split": "by_artist", "data.val_weights": "balanced"}


@pytest.fixture
def hydra_compose():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir())):
        yield lambda overrides=(): compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()


def test_best_is_the_chosen_configuration_and_leaves_the_data_to_the_user(hydra_compose):
    cfg = hydra_compose(["experiment=best"])
    assert OmegaConf.get_type(cfg.model) is TfidfLinearConfig
    assert OmegaConf.to_container(cfg.model, enum_to_str=True) == MODEL
    # Validated and weighted as the search was.
    assert {key: str(OmegaConf.select(cfg, key)) for key in VALIDATION} == VALIDATION
    assert str(cfg.training.class_weight) == "balanced"
    assert cfg.tags.preset == "best"
    # The data are the user's: no files or genres pinned, and any data option composes.
    plain = hydra_compose([])
    assert OmegaConf.masked_copy(cfg.data, ["train_path", "test_path", "genres", "name"]) == (
        OmegaConf.masked_copy(plain.data, ["train_path", "test_path", "genres", "name"])
    )
    assert list(cfg.data.genres) == KAGGLE_GENRES
    balanced = hydra_compose(["experiment=best", "data=balanced"])
    assert str(balanced.data.balance) == "undersample"
    assert balanced.model.name == "tfidf_linear"
    # Where it came from, for anyone who wants to choose again: the sweep over seeds, and the
    # comparison of its validation scores.
    text = PRESET.read_text()
    assert "training.seed=1,2,3 'data.seed=${training.seed}'" in text
    assert "--seed-params training.seed,data.seed --metric val_macro_f1" in text


@pytest.mark.slow
def test_best_trains_and_logs_a_model_through_the_cli(tmp_path, kaggle_csv):
    import mlflow
    import pandas as pd

    lstm_only = ("model.", "data.vocab_size", "data.sequence_length")
    overrides = [o for o in tiny_overrides(tmp_path, *kaggle_csv) if not o.startswith(lstm_only)]
    result = run_cli(["experiment=best", *overrides])
    assert result.returncode == 0, result.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["preset"] == "best"
    assert run.data.tags["model_family"] == "tfidf_linear"
    params = run.data.params
    assert {key: params[f"model.{key}"] for key in ("min_df", "C", "char_ngrams")} == {
        "min_df": str(MODEL["min_df"]),
        "C": str(MODEL["C"]),
        "char_ngrams": str(MODEL["char_ngrams"]),
    }
    assert {key: params[key] for key in VALIDATION} == VALIDATION
    assert run.data.metrics["test_macro_f1"] > 0.5  # each genre has words of its own

    mlflow.set_tracking_uri(tracking_uri(tmp_path))
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    out = model.predict(pd.DataFrame({"lyrics": ["metalword metalsound metalbeat night"]}))
    assert list(out.columns) == KAGGLE_GENRES
    assert out.idxmax(axis=1).tolist() == ["Metal"]
