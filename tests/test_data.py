"""Data loading in both real layouts, cleaning, balancing, splitting, and every bad input."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import KAGGLE_GENRES, kaggle_frames

from genre_exp.data.files import read_table
from genre_exp.data.layout import Columns
from genre_exp.data.load import load_dataset, load_split
from genre_exp.data.sampling import balance
from genre_exp.errors import DataError


def test_reads_kaggle_layouts_with_their_different_columns(kaggle_csv):
    train, test = kaggle_csv
    dataset = load_dataset(train, test, KAGGLE_GENRES)
    assert len(dataset.train) + len(dataset.val) == len(pd.read_csv(train))
    assert len(dataset.test) == len(pd.read_csv(test)) == 40
    # Kaggle's test.csv has no language column: that is fine.
    assert "language" not in dataset.test.columns
    assert {"lyrics", "genre", "artist", "song", "language"} <= set(dataset.train.columns)
    assert set(dataset.test["genre"]) == set(KAGGLE_GENRES)


def test_reads_parquet_layout(parquet_data):
    dataset = load_dataset(*parquet_data, KAGGLE_GENRES)
    assert len(dataset.test) == 40
    assert dataset.sources["train"].suffix == ".parquet"


def test_column_names_come_from_config(tmp_path):
    train, test = kaggle_frames()
    train = train.rename(columns={"Lyrics": "text", "Genre": "label"})
    test = test.rename(columns={"Lyrics": "text", "Genre": "label"})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    dataset = load_dataset(
        tmp_path / "train.csv",
        tmp_path / "test.csv",
        KAGGLE_GENRES,
        columns=Columns(text="text", label="label"),
    )
    assert list(dataset.test["genre"][:4]) == ["Hip-Hop"] * 4


def test_unbalanced_keeps_every_row_and_balanced_undersamples(kaggle_csv):
    train, test = kaggle_csv
    raw_counts = pd.read_csv(train)["Genre"].value_counts()
    unbalanced = load_dataset(train, test, KAGGLE_GENRES, balance_train="none", val_fraction=0.25)
    balanced = load_dataset(
        train, test, KAGGLE_GENRES, balance_train="undersample", val_fraction=0.25
    )
    assert (unbalanced.distribution["train"] == raw_counts.reindex(KAGGLE_GENRES)).all()
    assert (
        balanced.distribution["train_before_balancing"] == raw_counts.reindex(KAGGLE_GENRES)
    ).all()
    assert set(balanced.distribution["train"]) == {raw_counts.min()}
    assert len(balanced.train) + len(balanced.val) == raw_counts.min() * len(KAGGLE_GENRES)
    assert (balanced.distribution["test"] == 4).all()


def test_oversampling_repeats_training_rows_only_after_the_validation_split(kaggle_csv):
    train, test = kaggle_csv
    raw_counts = pd.read_csv(train)["Genre"].value_counts()
    plain = load_dataset(train, test, KAGGLE_GENRES, val_fraction=0.25, seed=5)
    over = load_dataset(train, test, KAGGLE_GENRES, balance_train="oversample", val_fraction=0.25)
    # The validation rows are the plain split's: no repeated song reaches validation.
    assert (
        over.val["lyrics"].tolist()
        == load_dataset(train, test, KAGGLE_GENRES, val_fraction=0.25).val["lyrics"].tolist()
    )
    assert set(over.train["lyrics"]).isdisjoint(over.val["lyrics"])
    # Every genre of the training part as large as the largest, each own row kept at least once.
    fit_counts = over.train["genre"].value_counts()
    assert set(fit_counts) == {fit_counts.max()} and len(fit_counts) == len(KAGGLE_GENRES)
    plain_fit = load_dataset(train, test, KAGGLE_GENRES, val_fraction=0.25)
    assert set(plain_fit.train["lyrics"]) == set(over.train["lyrics"])
    assert fit_counts.max() == plain_fit.train["genre"].value_counts().max()
    assert (over.distribution["train_before_balancing"] == raw_counts.reindex(KAGGLE_GENRES)).all()
    assert len(plain.train) < len(over.train)


def test_validation_by_artist_keeps_each_artist_on_one_side(kaggle_csv):
    dataset = load_dataset(*kaggle_csv, KAGGLE_GENRES, val_fraction=0.25, val_by_artist=True)
    assert set(dataset.train["artist"]).isdisjoint(dataset.val["artist"])
    assert set(dataset.val["genre"]) == set(dataset.train["genre"]) == set(KAGGLE_GENRES)
    again = load_dataset(*kaggle_csv, KAGGLE_GENRES, val_fraction=0.25, val_by_artist=True)
    assert again.val["lyrics"].tolist() == dataset.val["lyrics"].tolist()
    # The plain split puts artists on both sides (the fixture has 3 artists per genre).
    plain = load_dataset(*kaggle_csv, KAGGLE_GENRES, val_fraction=0.25)
    assert not set(plain.train["artist"]).isdisjoint(plain.val["artist"])


def test_validation_by_artist_needs_an_artist_per_side(tmp_path, kaggle_csv):
    train, _ = kaggle_frames()
    train.loc[train["Genre"] == "Jazz", "Artist"] = "the only jazz artist"
    train.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(DataError, match="genre 'Jazz' has too few artists") as error:
        load_dataset(tmp_path / "one.csv", kaggle_csv[1], KAGGLE_GENRES, val_by_artist=True)
    assert "data.val_split=stratified" in str(error.value)


def test_balance_is_reproducible_and_draws_from_each_genre():
    frame = pd.DataFrame({"genre": ["a"] * 10 + ["b"] * 3, "lyrics": [str(i) for i in range(13)]})
    first, second = balance(frame, ["a", "b"], seed=1), balance(frame, ["a", "b"], seed=1)
    assert first.equals(second)
    assert first["genre"].value_counts().to_dict() == {"a": 3, "b": 3}


def test_validation_split_is_stratified_and_disjoint(kaggle_csv):
    dataset = load_dataset(*kaggle_csv, KAGGLE_GENRES, val_fraction=0.25, seed=3)
    assert set(dataset.train["lyrics"]).isdisjoint(dataset.val["lyrics"])
    assert set(dataset.val["genre"]) == set(KAGGLE_GENRES)
    total = len(dataset.train) + len(dataset.val)
    assert len(dataset.val) == pytest.approx(0.25 * total, abs=1)
    again = load_dataset(*kaggle_csv, KAGGLE_GENRES, val_fraction=0.25, seed=3)
    assert again.val["lyrics"].tolist() == dataset.val["lyrics"].tolist()


def test_max_train_rows_keeps_every_genre(kaggle_csv):
    dataset = load_dataset(*kaggle_csv, KAGGLE_GENRES, max_train_rows=60, val_fraction=0.2)
    assert len(dataset.train) + len(dataset.val) == pytest.approx(60, abs=len(KAGGLE_GENRES))
    assert set(dataset.train["genre"]) == set(KAGGLE_GENRES)


def test_language_filter_applies_to_train_only(kaggle_csv):
    dataset = load_dataset(*kaggle_csv, KAGGLE_GENRES, languages=["en"])
    kept = pd.concat([dataset.train, dataset.val])
    assert set(kept["language"]) == {"en"}
    raw = pd.read_csv(kaggle_csv[0])
    assert dataset.dropped["train_other_language"] == int((raw["Language"] != "en").sum())
    assert len(dataset.test) == 40


def test_language_filter_without_language_column_is_an_error(kaggle_csv, tmp_path):
    train = pd.read_csv(kaggle_csv[0]).drop(columns=["Language"])
    train.to_csv(tmp_path / "nolang.csv", index=False)
    with pytest.raises(DataError, match=r"nolang\.csv: data.languages=\['en'\] needs a language"):
        load_dataset(tmp_path / "nolang.csv", kaggle_csv[1], KAGGLE_GENRES, languages=["en"])


def test_empty_and_duplicate_lyrics_are_dropped_and_counted(tmp_path):
    train, _ = kaggle_frames()
    extra = train.iloc[:3].copy()
    extra["Lyrics"] = ["", "   ", None]
    duplicates = train.iloc[5:7].copy()
    pd.concat([train, extra, duplicates]).to_csv(tmp_path / "train.csv", index=False)
    split = load_split(tmp_path / "train.csv", "train", Columns(), KAGGLE_GENRES)
    assert split.dropped == {"empty_lyrics": 3, "duplicate_lyrics": 2}
    assert len(split.frame) == len(train)
    assert split.frame["lyrics"].is_unique


def test_unknown_genre_is_an_error_naming_the_value(kaggle_csv, tmp_path):
    train = pd.read_csv(kaggle_csv[0])
    train.loc[3, "Genre"] = "en"
    train.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as error:
        load_dataset(tmp_path / "bad.csv", kaggle_csv[1], KAGGLE_GENRES)
    message = str(error.value)
    assert "bad.csv" in message and "'genre'" in message and "'en' (1 row)" in message
    assert "\n" not in message


def test_unknown_genre_can_be_dropped(kaggle_csv, tmp_path):
    train = pd.read_csv(kaggle_csv[0])
    train.loc[3, "Genre"] = "en"
    train.to_csv(tmp_path / "bad.csv", index=False)
    dataset = load_dataset(
        tmp_path / "bad.csv", kaggle_csv[1], KAGGLE_GENRES, unknown_genres="drop"
    )
    assert dataset.dropped["train_unknown_genre"] == 1


def test_configured_genre_missing_from_training_data_is_an_error(kaggle_csv):
    with pytest.raises(DataError, match="no rows of genre 'Opera'"):
        load_dataset(*kaggle_csv, [*KAGGLE_GENRES, "Opera"])


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("missing.csv", None, r"missing\.csv: file not found"),
        (
            "lyrics.txt",
            b"hello",
            r"lyrics\.txt: unknown file type '\.txt'; expected \.csv or \.parquet",
        ),
        (
            "latin1.csv",
            "Genre,Lyrics\nPop,caf\xe9 song\n".encode("latin-1"),
            r"latin1\.csv: not valid UTF-8 text \(a byte b'\\xe9'\); save it as UTF-8",
        ),
        (
            "nolyrics.csv",
            b"Genre,Text\nPop,hello\n",
            r"nolyrics\.csv: missing column 'lyrics' \(data\.columns\.text\); "
            r"columns present: genre, text",
        ),
        ("nogenre.parquet", None, r"nogenre\.parquet: missing column 'genre'"),
        ("broken.parquet", b"not parquet at all", r"broken\.parquet: not a readable parquet file"),
        ("empty.csv", b"", r"empty\.csv: not a readable CSV file"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, content, pattern):
    path = tmp_path / name
    if name == "nogenre.parquet":
        pd.DataFrame({"lyrics": ["la la"]}).to_parquet(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=pattern) as error:
        load_split(path, "train", Columns(), KAGGLE_GENRES)
    assert "\n" not in str(error.value)


def test_non_text_lyrics_are_an_error(tmp_path):
    pd.DataFrame({"lyrics": [1.5, 2.5], "genre": ["Pop", "Rock"]}).to_parquet(
        tmp_path / "n.parquet"
    )
    with pytest.raises(
        DataError, match=r"n\.parquet: column 'lyrics' holds float64, expected text"
    ):
        load_split(tmp_path / "n.parquet", "train", Columns(), KAGGLE_GENRES)


def test_read_table_normalises_column_names(tmp_path):
    pd.DataFrame({"Song year": [1], " Lyrics ": ["x"]}).to_csv(tmp_path / "t.csv", index=False)
    assert list(read_table(tmp_path / "t.csv").columns) == ["song_year", "lyrics"]


def test_too_few_rows_for_a_validation_split(tmp_path, kaggle_csv):
    train, _ = kaggle_frames(train_per_genre={g: 1 for g in KAGGLE_GENRES})
    train.to_csv(tmp_path / "tiny.csv", index=False)
    with pytest.raises(DataError, match="too few for a stratified validation split"):
        load_dataset(tmp_path / "tiny.csv", kaggle_csv[1], KAGGLE_GENRES)
