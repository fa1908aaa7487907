"""Model building, vectorisation, evaluation and plots, in process on tiny data."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import KAGGLE_GENRES, assert_figure_drawn, lstm, make_lyrics

from genre_exp.config import config_dir
from genre_exp.errors import ConfigError
from genre_exp.evaluate import evaluate, metric_safe
from genre_exp.models import ModelConfig, export_model
from genre_exp.train import class_weights
from genre_exp.vectorize import build_vectorizer, to_strings, vectorize


def layer_names(model) -> list[str]:
    return [layer.name for layer in model.layers]


def test_seed_model_has_the_notebooks_parameter_count():
    # Embedding(17255, 128, masked) -> Dropout -> LSTM(128) -> Dropout -> Dense(10): 2,341,514.
    model = lstm(17255, 500, 10, embedding_dim=128, lstm_units=128, dropout=0.5)
    assert model.count_params() == 2_341_514
    assert layer_names(model) == [
        "token_ids",
        "embedding",
        "embedding_dropout",
        "lstm",
        "lstm_dropout",
        "genre",
    ]
    assert model.get_layer("embedding").mask_zero


def test_plain_lstm_has_no_dropout_or_normalisation():
    model = lstm(100, 20, 3)
    assert layer_names(model) == ["token_ids", "embedding", "lstm", "genre"]


def test_options_add_their_layers():
    model = lstm(
        100, 20, 4, lstm_units=6, bidirectional=True, dropout=0.2, batch_norm=True, dense_units=5
    )
    names = layer_names(model)
    assert {"bilstm", "dense", "batch_norm", "embedding_dropout"} <= set(names)
    assert model.output_shape == (None, 4)
    assert model.get_layer("bilstm").output.shape[-1] == 12


@pytest.mark.parametrize(
    ("setting", "value"), [("lstm_units", 0), ("embedding_dim", -1), ("dense_units", -2)]
)
def test_impossible_sizes_are_refused(setting, value):
    with pytest.raises(ConfigError, match=rf"model\.{setting}={value}: expected an integer"):
        lstm(100, 20, 3, **{setting: value})


def test_bad_dropout_is_refused():
    with pytest.raises(ConfigError, match=r"model\.dropout=1\.0"):
        lstm(100, 20, 3, dropout=1.0)


def test_vectorizer_uses_training_vocabulary_and_pads():
    vectorizer = build_vectorizer(
        ["alpha beta beta", "gamma beta"], vocab_size=10, sequence_length=5
    )
    vocabulary = vectorizer.get_vocabulary()
    assert vocabulary[:3] == ["", "[UNK]", "beta"]
    ids = vectorize(vectorizer, ["beta unseen", ""])
    assert ids.shape == (2, 5) and ids.dtype == np.int32
    assert ids[0].tolist() == [2, 1, 0, 0, 0]
    assert ids[1].tolist() == [0] * 5


def test_exported_model_takes_raw_strings():
    rng = np.random.default_rng(0)
    texts = [make_lyrics(g, rng) for g in KAGGLE_GENRES[:3] for _ in range(4)]
    vectorizer = build_vectorizer(texts, vocab_size=50, sequence_length=10)
    classifier = lstm(vectorizer.vocabulary_size(), 10, 3, embedding_dim=4, lstm_units=4)
    exported = export_model(vectorizer, classifier)
    from_text = exported.predict(to_strings(texts[:2]), verbose=0)
    from_ids = classifier.predict(vectorize(vectorizer, texts[:2]), verbose=0)
    np.testing.assert_allclose(from_text, from_ids, rtol=1e-5)
    np.testing.assert_allclose(from_text.sum(axis=1), 1.0, rtol=1e-5)


def test_metric_safe_names():
    assert [metric_safe(g) for g in ["R&B", "Hip-Hop", "Rock"]] == ["R_B", "Hip_Hop", "Rock"]


def test_evaluate_metrics_and_report():
    genres = ["Pop", "R&B", "Rock"]
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[[0, 1, 1, 1, 0, 2]]
    result = evaluate(y_true, probabilities, genres)
    assert result.metrics["test_accuracy"] == pytest.approx(4 / 6)
    assert result.metrics["test_recall_R_B"] == 1.0
    assert result.metrics["test_precision_R_B"] == pytest.approx(2 / 3)
    assert result.metrics["test_f1_Rock"] == pytest.approx(2 / 3)
    expected_macro = np.mean([0.5, 0.8, 2 / 3])
    assert result.metrics["test_macro_f1"] == pytest.approx(expected_macro)
    assert result.confusion.loc["Rock", "Pop"] == 1
    assert result.confusion.to_numpy().sum() == 6
    assert "R&B" in result.report and "macro avg" in result.report


def test_evaluate_lists_genres_never_predicted_or_present():
    result = evaluate(np.array([0, 0]), np.eye(3)[[0, 0]], ["A", "B", "C"])
    assert result.metrics["test_f1_C"] == 0.0
    assert list(result.confusion.columns) == ["A", "B", "C"]


def test_balanced_class_weights():
    weights = class_weights(np.array([0, 0, 0, 1]), 3, "balanced")
    assert weights[1] == pytest.approx(3 * weights[0])
    assert weights[2] == 1.0
    assert class_weights(np.array([0, 1]), 2, "none") is None


def tick_labels(ax) -> tuple[list[str], list[str]]:
    return [t.get_text() for t in ax.get_xticklabels()], [
        t.get_text() for t in ax.get_yticklabels()
    ]


def test_plots_render_the_data(tmp_path):
    import pandas as pd

    from genre_exp.plots import confusion_figure, distribution_figure, learning_curves_figure

    confusion = pd.DataFrame([[3, 1], [0, 2]], index=["Pop", "R&B"], columns=["Pop", "R&B"])
    history = {
        "accuracy": [0.1, 0.2],
        "val_accuracy": [0.1, 0.15],
        "loss": [2, 1],
        "val_loss": [2, 1.5],
        "val_macro_f1": [0.05, 0.1],
    }
    distribution = pd.DataFrame(
        {"train_before_balancing": [5, 2], "train": [2, 2], "test": [1, 1]}, index=["Pop", "R&B"]
    )
    figures = {
        "confusion": confusion_figure(confusion),
        "curves": learning_curves_figure(history),
        "distribution": distribution_figure(distribution),
    }

    counts, normalised = figures["confusion"].axes[:2]
    assert tick_labels(counts) == tick_labels(normalised) == (["Pop", "R&B"], ["Pop", "R&B"])
    np.testing.assert_array_equal(counts.images[0].get_array(), [[3, 1], [0, 2]])
    np.testing.assert_allclose(normalised.images[0].get_array(), [[0.75, 0.25], [0, 1]])

    curves = figures["curves"].axes
    assert [ax.get_title() for ax in curves] == ["accuracy", "loss", "validation macro-F1"]
    for ax, key in zip(curves, ("accuracy", "loss"), strict=False):
        drawn = {line.get_label(): list(line.get_ydata()) for line in ax.lines}
        assert drawn == {"train": history[key], "validation": history[f"val_{key}"]}
    assert list(curves[2].lines[0].get_ydata()) == history["val_macro_f1"]

    bars = figures["distribution"].axes[0]
    assert tick_labels(bars)[0] == ["Pop", "R&B"]
    assert [patch.get_height() for patch in bars.patches] == [5, 2, 2, 2, 1, 1]

    # Drawn, not just framed: the heat maps in blue, one hue per curve or split.
    for (name, figure), hues in zip(figures.items(), (1, 2, 3), strict=True):
        figure.savefig(tmp_path / f"{name}.png")
        assert_figure_drawn(tmp_path / f"{name}.png", hues)


def test_same_seed_same_training():
    from types import SimpleNamespace

    from genre_exp.train import fit, seed_everything

    rng = np.random.default_rng(0)
    texts = [make_lyrics(g, rng) for g in KAGGLE_GENRES[:3] for _ in range(20)]
    labels = np.repeat(np.arange(3), 20)
    vectorizer = build_vectorizer(texts, vocab_size=60, sequence_length=12)
    ids = vectorize(vectorizer, texts)
    off = SimpleNamespace(enabled=False)
    training = SimpleNamespace(
        seed=7,
        optimizer="adam",
        learning_rate=0.01,
        early_stopping=off,
        reduce_lr=off,
        epochs=3,
        batch_size=8,
        class_weight="none",
        verbose=0,
    )

    def once():
        seed_everything(training.seed)
        model = lstm(60, 12, 3, embedding_dim=4, lstm_units=4, dropout=0.3)
        history = fit(model, ids, labels, ids[::3], labels[::3], 3, training)
        return history.history["loss"], model.get_weights()

    (loss_a, weights_a), (loss_b, weights_b) = once(), once()
    assert loss_a == loss_b
    for a, b in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(a, b)


def training_config(**settings):
    """The training group as composition makes it (the schema's defaults, typed), with
    ``settings`` merged in; early stopping off unless asked for."""
    from omegaconf import OmegaConf

    from genre_exp.config import TrainingConfig

    return OmegaConf.merge(
        OmegaConf.structured(TrainingConfig),
        {"seed": 3, "verbose": 0, "early_stopping": {"enabled": False}},
        settings,
    )


def fit_constant_inputs(training, n_major: int = 180, n_minor: int = 20):
    """Every row the same tokens and 90 % of the labels 0: the model can only learn how often
    each class occurs, so what it learns is decided by the class weights and the optimiser."""
    from genre_exp.train import fit, seed_everything

    ids = np.tile(np.arange(1, 9, dtype=np.int32), (n_major + n_minor, 1))
    labels = np.array([0] * n_major + [1] * n_minor)
    seed_everything(training.seed)
    model = lstm(20, 8, 2, embedding_dim=4, lstm_units=4)
    history = fit(model, ids, labels, ids, labels, 2, training)
    return model, history, ids


def test_balanced_class_weights_make_the_minority_count_as_much():
    probabilities = {}
    for how in ("none", "balanced"):
        training = training_config(class_weight=how, learning_rate=0.05, epochs=8, batch_size=20)
        model, _, ids = fit_constant_inputs(training)
        probabilities[how] = model.predict(ids[:1], verbose=0)[0, 1]
    # Unweighted, the minority's share (0.1); weighted, both classes count the same (0.5).
    assert probabilities["none"] < 0.2, probabilities
    assert 0.4 < probabilities["balanced"] < 0.6, probabilities


def test_reduce_lr_cuts_the_learning_rate_on_a_plateau():
    training = training_config(
        learning_rate=0.05,
        epochs=6,
        batch_size=20,
        reduce_lr={"enabled": True, "monitor": "val_accuracy", "patience": 2, "factor": 0.5},
    )
    model, history, _ = fit_constant_inputs(training)
    # Constant inputs: validation accuracy is the majority's share from the first epoch on.
    assert len(set(history.history["val_accuracy"])) == 1, history.history["val_accuracy"]
    # Halved after each 2 epochs without improvement (the rate each epoch trained with).
    assert history.history["learning_rate"] == pytest.approx(
        [0.05, 0.05, 0.05, 0.025, 0.025, 0.0125]
    )
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0125)


def test_reduce_lr_leaves_a_falling_loss_alone():
    # A small step: the validation loss falls every epoch, so a loss is never on a plateau
    # (watched the wrong way round, every epoch after the first would be one).
    training = training_config(
        learning_rate=0.002,
        epochs=5,
        batch_size=50,
        reduce_lr={"enabled": True, "monitor": "val_loss", "patience": 1, "factor": 0.5},
    )
    model, history, _ = fit_constant_inputs(training)
    assert (np.diff(history.history["val_loss"]) < -1e-3).all(), history.history["val_loss"]
    assert history.history["learning_rate"] == pytest.approx([0.002] * 5)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.002)


def ruin_last_epoch(epochs: int):
    """A callback recording each epoch's logs and weights, that before the last epoch sets the
    classifier to always answer the first genre and stops learning: the last epoch is then
    the worst by every measure, whichever the direction."""
    import keras

    class RuinLastEpoch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.logs: list[dict] = []
            self.weights: list[list[np.ndarray]] = []

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == epochs - 1:
                head = self.model.get_layer("genre")
                kernel, bias = head.get_weights()
                bias = np.zeros_like(bias)
                bias[0] = 8.0
                head.set_weights([np.zeros_like(kernel), bias])
                self.model.optimizer.learning_rate = 0.0

        def on_epoch_end(self, epoch, logs=None):
            self.logs.append(dict(logs))
            self.weights.append(self.model.get_weights())

    return RuinLastEpoch()


@pytest.mark.parametrize(
    ("monitor", "best"), [("val_loss", np.argmin), ("val_macro_f1", np.argmax)]
)
def test_early_stopping_restores_the_best_epoch_in_the_monitors_direction(monitor, best):
    from genre_exp.train import fit, seed_everything

    rng = np.random.default_rng(0)
    texts = [make_lyrics(g, rng) for g in KAGGLE_GENRES[:3] for _ in range(20)]
    labels = np.repeat(np.arange(3), 20)
    vectorizer = build_vectorizer(texts, vocab_size=60, sequence_length=12)
    ids = vectorize(vectorizer, texts)
    epochs = 4
    training = training_config(
        learning_rate=0.02,
        epochs=epochs,
        batch_size=8,
        # Patience beyond the run: the best weights come back at its end.
        early_stopping={"enabled": True, "monitor": monitor, "patience": 10},
    )
    seed_everything(training.seed)
    model = lstm(60, 12, 3, embedding_dim=4, lstm_units=4)
    record = ruin_last_epoch(epochs)
    fit(model, ids, labels, ids[::3], labels[::3], 3, training, extra_callbacks=[record])

    values = [logs[monitor] for logs in record.logs]
    assert len(values) == epochs and len(set(values)) > 1, values
    chosen = int(best(values))
    assert chosen != epochs - 1, values
    for restored, recorded in zip(model.get_weights(), record.weights[chosen], strict=True):
        np.testing.assert_array_equal(restored, recorded)


def test_lstm_is_a_registered_family():
    from genre_exp.models import FAMILIES
    from genre_exp.models import lstm as lstm_family

    assert FAMILIES["lstm"].schema is lstm_family.LstmConfig
    assert FAMILIES["lstm"].build is lstm_family.build


@contextlib.contextmanager
def composing(conf: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf)):
            yield lambda *overrides: compose("config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("option", sorted(p.stem for p in (config_dir() / "model").glob("*.yaml")))
def test_every_model_file_composes_to_a_registered_family(option):
    from omegaconf import OmegaConf

    from genre_exp.models import FAMILIES, family_of

    with composing(config_dir()) as compose:
        cfg = compose(f"model={option}")
    schema = OmegaConf.get_type(cfg.model)
    assert schema in [registered.schema for registered in FAMILIES.values()], option
    assert family_of(cfg.model).schema is schema


def test_a_schema_no_family_registered_is_refused_by_name():
    from omegaconf import OmegaConf

    from genre_exp.models import Inputs, ModelConfig, build_classifier

    @dataclass
    class UnknownConfig(ModelConfig):
        name: str = "unknown"

    for cfg in (UnknownConfig(), OmegaConf.structured(UnknownConfig)):
        with pytest.raises(ConfigError, match=r"model unknown: its settings \(UnknownConfig\)"):
            build_classifier(cfg, Inputs(50, 8, 3))


@dataclass
class ToyMeanConfig(ModelConfig):
    """A family made up for the test: averaged embeddings -> softmax."""

    name: str = "toy_mean"
    width: int = 4


@pytest.fixture
def toy_mean_family():
    """The ``toy_mean`` family, registered as a family's module registers itself (``@family``), its
    schema stored as ``config.register_configs`` stores a family's; both undone afterwards."""
    from hydra.core.config_store import ConfigStore

    from genre_exp import models

    @models.family("toy_mean", ToyMeanConfig)
    def build(cfg: ToyMeanConfig, inputs: models.Inputs):
        import keras
        from keras import layers

        tokens = keras.Input(shape=(inputs.sequence_length,), dtype="int32", name="token_ids")
        x = layers.Embedding(inputs.vocab_size, cfg.width, name="embedding")(tokens)
        x = layers.GlobalAveragePooling1D(name="average")(x)
        outputs = layers.Dense(inputs.n_classes, activation="softmax", name="genre")(x)
        return keras.Model(tokens, outputs, name=cfg.name)

    store = ConfigStore.instance()
    store.store(name="family_toy_mean", node=ToyMeanConfig)
    yield
    models.FAMILIES.pop("toy_mean")
    store.repo.pop("family_toy_mean.yaml")


def test_a_new_family_is_one_builder_and_one_yaml(toy_mean_family, tmp_path):
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from genre_exp.models import Inputs, build_classifier

    conf = tmp_path / "conf"
    shutil.copytree(config_dir(), conf)
    (conf / "model" / "toy_mean.yaml").write_text(
        "defaults:\n  - /family_toy_mean@_here_\n\nwidth: 6\n"
    )

    with composing(conf) as compose:
        cfg = compose("model=toy_mean")
        assert OmegaConf.get_type(cfg.model) is ToyMeanConfig
        assert (cfg.model.name, cfg.model.width) == ("toy_mean", 6)
        with pytest.raises(ConfigCompositionException) as refused:
            compose("model=toy_mean", "model.width=wide")
        assert "could not be converted to Integer" in str(refused.value.__cause__)
        assert OmegaConf.get_type(compose("model=lstm").model).__name__ == "LstmConfig"

    classifier = build_classifier(cfg.model, Inputs(50, 8, 3))
    assert classifier.get_layer("embedding").output_dim == 6
    probabilities = classifier.predict(np.ones((2, 8), dtype=np.int32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
