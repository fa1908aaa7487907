"""Property-based tests: data loading and prediction on arbitrary Unicode, empty and missing
lyrics, huge lyrics and garbage files either give a clear result or a clear error, never a
crash."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_lyrics
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from genre_exp.data.files import read_table
from genre_exp.data.layout import Columns
from genre_exp.data.load import load_split
from genre_exp.errors import DataError

GENRES = ["Rock", "Pop", "R&B"]
HUGE = "la " * 350_000  # ~1 MB of lyrics

# Any Unicode text a file can hold: no surrogates (not encodable as UTF-8).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
lyrics_values = st.one_of(
    texts,
    st.just(""),
    st.just("   \t\n"),
    st.none(),
    st.sampled_from(["dup lyric", " dup lyric "]),
)
rows = st.lists(
    st.tuples(lyrics_values, st.sampled_from([*GENRES, " Pop ", "Opera", None])),
    max_size=25,
)
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def expected_rows(data: list[tuple[str | None, str | None]]) -> list[tuple[str, str]]:
    """What cleaning must keep, in order: stripped non-empty lyrics, first of each duplicate,
    known genres (stripped)."""
    kept, seen = [], set()
    for lyric, genre in data:
        text = (lyric or "").strip()
        if not text or text in seen:
            continue
        seen.add(text)
        label = (genre or "").strip()
        if label in GENRES:
            kept.append((text, label))
    return kept


@SETTINGS
@given(data=rows)
@example(data=[(HUGE, "Rock"), ("", "Pop"), (None, "R&B"), ("ok", "Pop")])
def test_parquet_loading_keeps_exactly_the_clean_rows(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.parquet"
        pd.DataFrame(data, columns=["Lyrics", "Genre"]).astype(object).to_parquet(path)
        split = load_split(path, "train", Columns(), GENRES, unknown_genres="drop")
    got = list(zip(split.frame["lyrics"], split.frame["genre"], strict=True))
    assert got == expected_rows(data)
    assert len(split.frame) + sum(split.dropped.values()) == len(data)


@SETTINGS
@given(data=rows, unknown=st.sampled_from(["drop", "error"]))
@example(data=[(HUGE, "Rock"), ("", "Pop"), (None, "R&B")], unknown="drop")
def test_csv_loading_gives_clean_rows_or_one_clear_error(data, unknown):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.csv"
        pd.DataFrame(data, columns=["Lyrics", "Genre"]).to_csv(path, index=False)
        try:
            rows_read = len(read_table(path))
            split = load_split(path, "train", Columns(), GENRES, unknown_genres=unknown)
        except DataError as exc:
            message = str(exc)
            assert "\n" not in message and str(path) in message
            return
    frame = split.frame
    assert all(isinstance(t, str) and t and t == t.strip() for t in frame["lyrics"])
    assert frame["lyrics"].is_unique
    assert set(frame["genre"]) <= set(GENRES)
    # Every row read is kept or counted as dropped. CSV loses what it cannot tell apart (a
    # missing value and ''; a lone '\r' ends a line, so one row can be read as two), so the
    # kept rows are at most the clean ones.
    assert len(frame) + sum(split.dropped.values()) == rows_read
    assert len(frame) <= len(expected_rows(data))


@SETTINGS
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".parquet"]))
@example(content=b"\xff\xfe\x00garbage", suffix=".csv")
@example(content=b"PAR1\x00\x00PAR1", suffix=".parquet")
def test_read_table_on_arbitrary_bytes_is_a_table_or_a_data_error(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(content)
        try:
            frame = read_table(path)
        except DataError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
    assert isinstance(frame, pd.DataFrame)


@pytest.fixture(scope="module")
def classifier():
    """The served pyfunc's predict on a small untrained model over a real vocabulary; what
    is checked is the handling of input, not the quality of the model."""
    from conftest import lstm

    from genre_exp.models import export_model
    from genre_exp.serving import GenreClassifier
    from genre_exp.vectorize import build_vectorizer

    rng = np.random.default_rng(0)
    vectorizer = build_vectorizer(
        [make_lyrics(g, rng) for g in GENRES for _ in range(5)], vocab_size=60, sequence_length=12
    )
    model = GenreClassifier()
    model.model = export_model(
        vectorizer,
        lstm(vectorizer.vocabulary_size(), 12, len(GENRES), 4, 4),
    )
    model.genres = GENRES
    return model


predict_values = st.one_of(texts, st.just(""), st.none(), st.just(math.nan))


@SETTINGS
@given(values=st.lists(predict_values, max_size=8))
@example(values=[HUGE, "", None, math.nan, "🎵 é ß"])
def test_prediction_of_any_text_is_probabilities(classifier, values):
    out = classifier.predict(None, pd.DataFrame({"lyrics": pd.Series(values, dtype=object)}))
    assert list(out.columns) == GENRES and len(out) == len(values)
    probabilities = out.to_numpy()
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)


@SETTINGS
@given(
    values=st.lists(predict_values, max_size=4),
    bad=st.one_of(st.integers(), st.floats(allow_nan=False), st.binary(max_size=5)),
    at=st.integers(min_value=0, max_value=4),
)
def test_prediction_of_non_text_is_a_clear_mlflow_error(classifier, values, bad, at):
    from mlflow.exceptions import MlflowException

    values.insert(min(at, len(values)), bad)
    row = values.index(bad) if not isinstance(bad, float) else None
    with pytest.raises(MlflowException, match="expected text") as caught:
        classifier.predict(None, pd.DataFrame({"lyrics": pd.Series(values, dtype=object)}))
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    if row is not None:
        assert f"row {row} of 'lyrics'" in caught.value.message


def test_prediction_without_a_lyrics_column_is_a_clear_mlflow_error(classifier):
    from mlflow.exceptions import MlflowException

    with pytest.raises(
        MlflowException, match=r"expected a 'lyrics' column, got columns \['text'\]"
    ):
        classifier.predict(None, pd.DataFrame({"text": ["la la"]}))
