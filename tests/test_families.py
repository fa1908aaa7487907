"""The neural families beside the seed's LSTM: birnn (presets bigru, bilstm), cnn and bag
(presets pool, fasttext). Each composes from its YAML, builds the layers its module promises,
is blind to padding and refuses impossible settings in one line (in process, real Hydra and
Keras); each trains end to end through the CLI, and a killed bigru run resumes (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    KAGGLE_GENRES,
    interrupt_when,
    run_cli,
    tiny_overrides,
    tracking_uri,
    write_kaggle_csv,
)
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException

from genre_exp.config import config_dir
from genre_exp.errors import ConfigError
from genre_exp.models import Inputs, build_classifier, family_of

# Preset (conf/model/<preset>.yaml) -> its family.
PRESETS = {"bigru": "birnn", "bilstm": "birnn", "cnn": "cnn", "pool": "bag", "fasttext": "bag"}
# Small enough to train in seconds on the generated data.
TINY = {
    "bigru": ["model.embedding_dim=8", "model.units=8"],
    "bilstm": ["model.embedding_dim=8", "model.units=8"],
    "cnn": ["model.embedding_dim=8", "model.filters=8"],
    "pool": ["model.embedding_dim=8"],
    "fasttext": ["model.embedding_dim=8"],
}


def composed(*overrides: str):
    """The ``model`` node as the app composes it from ``conf/``."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir())):
            return compose("config", overrides=list(overrides)).model
    finally:
        GlobalHydra.instance().clear()


def built(preset: str, *overrides: str, sequence_length: int = 12, any_length: bool = False):
    return build_classifier(
        composed(f"model={preset}", *overrides),
        Inputs(50, sequence_length, 4, any_length=any_length),
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_from_its_yaml_into_its_family(preset):
    model = composed(f"model={preset}")
    assert model.name == preset
    assert family_of(model).name == PRESETS[preset]


def test_presets_differ_where_their_yaml_says():
    bigru, bilstm = composed("model=bigru"), composed("model=bilstm")
    assert (str(bigru.cell), str(bilstm.cell)) == ("gru", "lstm")
    pool, fasttext = composed("model=pool"), composed("model=fasttext")
    assert (pool.ngrams, fasttext.ngrams) == (1, 2)
    assert [str(p) for p in pool.pooling] == ["mean", "max"]
    assert [str(p) for p in fasttext.pooling] == ["mean"]


@pytest.mark.parametrize("override", ["model.cell=rnn", "model.pooling=[median]"])
def test_unknown_choices_fail_at_composition(override):
    preset = "bigru" if "cell" in override else "pool"
    with pytest.raises(ConfigCompositionException):
        composed(f"model={preset}", override)


def layer_names(model) -> list[str]:
    return [layer.name for layer in model.layers]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_birnn_pools_every_step_of_both_directions(cell):
    model = built(f"bi{cell}", "model.units=6", "model.dense_units=5")
    assert layer_names(model) == [
        "token_ids",
        "embedding",
        "embedding_dropout",
        f"bi{cell}",
        "masked_pooling",
        "dropout",
        "dense",
        "genre",
    ]
    assert model.get_layer("embedding").mask_zero
    assert type(model.get_layer("embedding_dropout")).__name__ == "SpatialDropout1D"
    recurrent = model.get_layer(f"bi{cell}")
    assert type(recurrent.forward_layer).__name__ == cell.upper()
    assert recurrent.forward_layer.return_sequences
    # Mean and max of 2 directions x 6 units.
    assert model.get_layer("masked_pooling").output.shape[-1] == 24
    assert model.output_shape == (None, 4)
    assert "dense" not in layer_names(built(f"bi{cell}"))


def test_cnn_has_one_convolution_per_width_and_max_pools_them():
    model = built("cnn", "model.kernel_sizes=[2,3,5]", "model.filters=7")
    assert layer_names(model) == [
        "token_ids",
        "embedding",
        "embedding_dropout",
        "zero_padding",
        "conv_2",
        "conv_3",
        "conv_5",
        "convolutions",
        "max_pooling",
        "dropout",
        "genre",
    ]
    assert [model.get_layer(f"conv_{k}").kernel_size for k in (2, 3, 5)] == [(2,), (3,), (5,)]
    assert model.get_layer("max_pooling").output.shape[-1] == 21
    assert layer_names(built("cnn", "model.kernel_sizes=[3]"))[4:6] == ["conv_3", "max_pooling"]


@pytest.mark.parametrize(("preset", "pooled"), [("pool", 2 * 6), ("fasttext", 6)])
def test_bag_pools_the_embeddings(preset, pooled):
    model = built(preset, "model.embedding_dim=6")
    assert layer_names(model) == ["token_ids", "embedding", "masked_pooling", "dropout", "genre"]
    assert model.get_layer("masked_pooling").output.shape[-1] == pooled
    spatial = built(preset, "model.embedding_dropout=0.2", "model.dense_units=3")
    assert {"embedding_dropout", "dense"} <= set(layer_names(spatial))


@pytest.mark.parametrize("preset", PRESETS)
def test_padding_is_ignored(preset):
    """The same lyrics give the same probabilities whatever padding follows them: one model
    reads 4 token ids, its twin (same weights, built for batches of any length, as
    training.bucket_by_length makes them) 20. Lyrics that fill the 4 ids meet padding only in
    the twin, shorter ones 3 or 19 steps of it. A lyric without tokens pools to zeros."""
    import keras

    from genre_exp.train import accepts_any_length

    keras.utils.set_random_seed(0)
    short, long = built(preset, sequence_length=4), built(preset, any_length=True)
    assert not accepts_any_length(short) and accepts_any_length(long)
    long.set_weights(short.get_weights())
    ids = np.zeros((5, 20), dtype=np.int32)
    ids[0, :4] = [5, 6, 7, 8]
    ids[1, :4] = [40, 31, 22, 13]
    ids[2, :1] = [9]
    ids[3, :1] = [44]
    probabilities = short.predict(ids[:, :4], verbose=0)
    np.testing.assert_allclose(long.predict(ids, verbose=0), probabilities, rtol=0, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Not a model that ignores its input: different lyrics, different probabilities.
    assert np.abs(probabilities[0] - probabilities[1]).max() > 1e-4
    # What every family's pooling block hands to the dropout after it.
    pooled = keras.Model(long.input, long.get_layer("dropout").input).predict(ids, verbose=0)
    assert pooled[:4].any(axis=1).all() and not pooled[4].any()


@pytest.mark.parametrize(
    ("preset", "setting", "value"),
    [
        ("bigru", "units", "0"),
        ("bilstm", "embedding_dim", "0"),
        ("bigru", "dense_units", "-1"),
        ("bigru", "embedding_dropout", "1.0"),
        ("cnn", "filters", "0"),
        ("cnn", "kernel_sizes", "[]"),
        ("cnn", "kernel_sizes", "[3,0]"),
        ("cnn", "kernel_sizes", "[3,3]"),
        ("cnn", "dropout", "-0.1"),
        ("pool", "ngrams", "0"),
        ("pool", "pooling", "[]"),
        ("fasttext", "pooling", "[mean,mean]"),
        ("fasttext", "embedding_dim", "0"),
    ],
)
def test_impossible_settings_are_refused_in_one_line(preset, setting, value):
    with pytest.raises(ConfigError) as refused:
        built(preset, f"model.{setting}={value}")
    message = str(refused.value)
    assert message.startswith(f"model.{setting}="), message
    assert "expected" in message and "\n" not in message


# End to end through the CLI.


def family_overrides(root: Path, preset: str) -> list[str]:
    """conftest's tiny run with this family's settings instead of the LSTM's."""
    shared = tiny_overrides(root, root / "train.csv", root / "test.csv")
    return [f"model={preset}", *[o for o in shared if not o.startswith("model.")], *TINY[preset]]


def client_for(root: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri(root))


def runs_of(root: Path):
    client = client_for(root)
    found = client.get_experiment_by_name("tests")
    return [] if found is None else client.search_runs([found.experiment_id], max_results=100)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real CLI run of every preset, each in its own project folder."""
    done = {}
    for preset in PRESETS:
        root = tmp_path_factory.mktemp(preset)
        write_kaggle_csv(root)
        result = run_cli(family_overrides(root, preset))
        assert result.returncode == 0, f"{preset}: {result.stderr[-3000:]}"
        (run,) = runs_of(root)
        done[preset] = (root, run)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_trains_to_a_finished_run_with_its_metrics(trained, preset):
    root, run = trained[preset]
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_family"] == PRESETS[preset]
    assert run.data.params["model.name"] == preset
    metrics = run.data.metrics
    assert 1 <= metrics["epochs_trained"] <= 2
    for key in ("test_accuracy", "test_macro_f1", "final_val_macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    steps = [m.step for m in client_for(root).get_metric_history(run.info.run_id, "val_macro_f1")]
    assert steps == list(range(int(metrics["epochs_trained"])))


def vocabulary_of(run) -> list[str]:
    folder = Path(run.data.tags["hydra_output_dir"]) / "checkpoint"
    return json.loads((folder / "vocabulary.json").read_text())


@pytest.mark.slow
def test_fasttext_reads_word_bigrams_and_pool_words_only(trained):
    bigrams = [t for t in vocabulary_of(trained["fasttext"][1]) if " " in t]
    assert len(bigrams) > 20, bigrams
    assert all(len(t.split(" ")) == 2 for t in bigrams)
    assert trained["fasttext"][1].data.params["model.ngrams"] == "2"
    assert not [t for t in vocabulary_of(trained["pool"][1]) if " " in t]


@pytest.mark.slow
def test_logged_models_predict_raw_lyrics_in_a_fresh_process(trained):
    models = {p: (tracking_uri(root), run.info.run_id) for p, (root, run) in trained.items()}
    code = f"""
import json, mlflow, pandas as pd
answers = {{}}
for preset, (uri, run_id) in {models!r}.items():
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{{run_id}}/model")
    out = model.predict(pd.DataFrame({{"lyrics": ["metalword metalsound the night", "", "é"]}}))
    answers[preset] = {{"columns": list(out.columns), "sums": out.sum(axis=1).tolist()}}
print(json.dumps(answers))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(answers) == set(PRESETS)
    for preset, answer in answers.items():
        assert answer["columns"] == KAGGLE_GENRES, preset
        assert answer["sums"] == pytest.approx([1.0, 1.0, 1.0], rel=1e-4), preset


@pytest.mark.slow
def test_killed_bigru_run_resumes_in_the_same_run(tmp_path):
    write_kaggle_csv(tmp_path)
    overrides = [
        *family_overrides(tmp_path, "bigru"),
        "training.early_stopping.enabled=false",
        "mlflow.log_model=false",
    ]

    def checkpointed() -> int:
        states = list((tmp_path / "outputs").rglob("checkpoint/state.json"))
        return json.loads(states[0].read_text())["epoch"] if states else 0

    ended = interrupt_when([*overrides, "training.epochs=100000"], lambda: checkpointed() >= 2)
    assert ended.returncode == 130, ended.stderr[-2000:]
    (killed,) = runs_of(tmp_path)
    assert killed.info.status == "KILLED"
    saved = checkpointed()
    total = saved + 2
    result = run_cli(
        [*overrides, f"training.epochs={total}", f"training.resume={killed.info.run_id}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed after epoch {saved}" in result.stderr
    (run,) = runs_of(tmp_path)
    assert run.info.run_id == killed.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.metrics["epochs_trained"] == total
    assert 0.0 <= run.data.metrics["test_macro_f1"] <= 1.0
