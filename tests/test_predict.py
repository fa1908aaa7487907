"""The predict command's parts, without a trained model: reading inputs, batching, the result
table and its files; the shared tracking-URI default; checkpoints and the rebuilt vectoriser."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genre_exp import checkpoint
from genre_exp.commands.predict import (
    check_output,
    is_path,
    predict_probabilities,
    read_inputs,
    result_frame,
    write,
)
from genre_exp.config import project_root, tracking_uri
from genre_exp.errors import DataError

GENRES = ["Rock", "Pop", "R&B"]


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == f"sqlite:///{project_root()}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("argument", "path"),
    [
        ("la la la", False),
        ("love", False),
        ("songs.csv", True),
        ("lyrics/song", True),
        ("a song. with a dot", False),
    ],
)
def test_what_counts_as_a_path(argument, path):
    assert is_path(argument) is path


def test_read_inputs_texts_text_files_and_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "song.txt").write_text("line one\nline two ✓", encoding="utf-8")
    pd.DataFrame({"Artist": ["x", "y"], "Song Text": ["a b", None]}).to_csv("t.csv", index=False)
    long = "word " * 30
    frame = read_inputs([long, "song.txt", "t.csv"], column="Song Text")
    assert frame["lyrics"].tolist() == [long, "line one\nline two ✓", "a b", ""]
    assert frame["input"].tolist() == [
        "word word word word word word word wo...",  # 40 characters
        "song.txt",
        "t.csv:0",
        "t.csv:1",
    ]


@pytest.mark.parametrize(
    ("setup", "arguments", "message"),
    [
        (None, ["absent.txt"], "absent.txt: file not found"),
        (None, ["absent.parquet"], "absent.parquet: file not found"),
        ("latin1", ["bad.txt"], "bad.txt: not valid UTF-8 text"),
        ("table", ["t.csv"], "t.csv: missing column 'lyrics' (--column); columns present: words"),
        ("numbers", ["n.parquet"], "n.parquet: column 'lyrics' row 0 holds int, expected text"),
    ],
)
def test_unreadable_inputs_are_one_line(tmp_path, monkeypatch, setup, arguments, message):
    monkeypatch.chdir(tmp_path)
    if setup == "latin1":
        (tmp_path / "bad.txt").write_bytes("caf\xe9".encode("latin-1"))
    elif setup == "table":
        pd.DataFrame({"Words": ["a"]}).to_csv("t.csv", index=False)
    elif setup == "numbers":
        pd.DataFrame({"lyrics": [1, 2]}).to_parquet("n.parquet")
    with pytest.raises(DataError) as caught:
        read_inputs(arguments)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def fake_model(calls: list[int]):
    def predict(batch: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(batch))
        lengths = batch["lyrics"].str.len().to_numpy(dtype=float)
        raw = np.stack([lengths % 3 + 1, lengths % 2 + 1, np.ones_like(lengths)], axis=1)
        return pd.DataFrame(raw / raw.sum(axis=1, keepdims=True), columns=GENRES)

    return predict


def test_prediction_is_batched_and_keeps_row_order():
    calls: list[int] = []
    texts = ["x" * n for n in range(10)]
    out = predict_probabilities(fake_model(calls), texts, batch_size=4, progress=False)
    assert calls == [4, 4, 2]
    expected = fake_model([])(pd.DataFrame({"lyrics": texts}))
    pd.testing.assert_frame_equal(out, expected)
    with pytest.raises(DataError, match="--batch-size 0: expected a positive number"):
        predict_probabilities(fake_model(calls), texts, batch_size=0)


def test_result_frame_and_its_files(tmp_path, capsys):
    inputs = pd.DataFrame({"input": ["a", "b"], "lyrics": ["a", "bb"]})
    probabilities = pd.DataFrame([[0.2, 0.7, 0.1], [0.5, 0.2, 0.3]], columns=GENRES)
    result = result_frame(inputs, probabilities)
    assert list(result.columns) == ["input", "genre", *GENRES]
    assert result["genre"].tolist() == ["Pop", "Rock"]

    write(result, tmp_path / "out" / "p.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "p.csv"), result)
    write(result, tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())[1] == {
        "input": "b",
        "genre": "Rock",
        "Rock": 0.5,
        "Pop": 0.2,
        "R&B": 0.3,
    }
    write(result, None)
    assert capsys.readouterr().out.splitlines()[1].split() == [
        "a",
        "Pop",
        "0.200",
        "0.700",
        "0.100",
    ]
    with pytest.raises(DataError, match=r"p\.xlsx: unknown output type '\.xlsx'"):
        check_output(tmp_path / "p.xlsx")


def test_checkpoint_round_trip_and_rebuilt_vectoriser(tmp_path):
    import keras
    from conftest import lstm

    from genre_exp.vectorize import build_vectorizer, vectorize, vectorizer_from_vocabulary

    where = checkpoint.folder(tmp_path)
    assert checkpoint.load(where) is None
    texts = ["Rock and roll é", "pop pop music", "rhythm and blues"]
    vectorizer = build_vectorizer(texts, vocab_size=20, sequence_length=6)
    checkpoint.save_vocabulary(where, vectorizer.get_vocabulary())
    classifier = lstm(vectorizer.vocabulary_size(), 6, 3, 4, 4)
    classifier.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    ids = vectorize(vectorizer, texts)
    callback = checkpoint.callback(where)
    callback.set_model(classifier)
    for epoch in range(3):
        classifier.fit(ids, np.array([0, 1, 2]), epochs=1, verbose=0)
        callback.on_epoch_end(epoch)

    saved = checkpoint.load(where)
    assert saved.epoch == 3 and saved.model_path.name == "epoch-3.keras"
    assert sorted(p.name for p in where.iterdir()) == [
        "epoch-3.keras",
        "state.json",
        "vocabulary.json",
    ]
    restored = checkpoint.load_classifier(saved)
    assert restored.optimizer.iterations.numpy() == classifier.optimizer.iterations.numpy() == 3
    np.testing.assert_allclose(restored.predict(ids, verbose=0), classifier.predict(ids, verbose=0))
    rebuilt = vectorizer_from_vocabulary(saved.vocabulary, 20, 6)
    unseen = ["pop and jazz é", ""]
    np.testing.assert_array_equal(vectorize(rebuilt, unseen), vectorize(vectorizer, unseen))
    assert isinstance(restored, keras.Model)
