"""Model building, vectorisation, evaluation and plots, in process on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import KAGGLE_GENRES, lstm, make_lyrics

from genre_exp.errors import ConfigError
from genre_exp.evaluate import evaluate, metric_safe
from genre_exp.models import export_model
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


def test_plots_render(tmp_path):
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
    for name, figure in (
        ("c", confusion_figure(confusion)),
        ("l", learning_curves_figure(history)),
        ("d", distribution_figure(distribution)),
    ):
        figure.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert len(learning_curves_figure(history).axes) == 3


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
