"""Load, validate and clean the two splits, and assemble a run's data set.

Reads Kaggle's layouts (``train.csv``: Artist, Song, Genre, Language, Lyrics; ``test.csv``:
Song, Song year, Artist, Genre, Lyrics, Track_id) and the normalised Parquet layout (artist,
song, genre, language, lyrics).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genre_exp.data.files import read_table
from genre_exp.data.layout import Columns
from genre_exp.data.sampling import balance, oversample, split_validation, subsample
from genre_exp.errors import DataError


class NotText(ValueError):
    """A cell of a text column holding something else (a number, a list, ...)."""

    def __init__(self, row: int, value: object) -> None:
        self.row = row
        self.type_name = type(value).__name__
        super().__init__(f"row {row} holds {self.type_name}, expected text")


def text_cells(values: Iterable[object]) -> list[str]:
    """Lyrics cells as strings: a missing value (None, NaN) is empty lyrics; anything else that
    is not text raises ``NotText`` naming the first such row. Training, ``predict`` and the
    served model all read lyrics through this one check."""
    texts = []
    for row, value in enumerate(values):
        if isinstance(value, str):
            texts.append(value)
        elif value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            texts.append("")
        else:
            raise NotText(row, value)
    return texts


@dataclass
class Split:
    """One cleaned split: the frame (text and label columns at least) and what cleaning did."""

    name: str
    path: Path
    frame: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class Dataset:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    genres: list[str]
    # Genre counts of the training split before and after balancing, and of the test split.
    distribution: pd.DataFrame
    dropped: dict[str, int]
    sources: dict[str, Path]

    SPLITS = ("train", "val", "test")

    def texts(self, split: str) -> list[str]:
        return getattr(self, split)["lyrics"].tolist()

    def codes(self, split: str) -> np.ndarray:
        """The split's genres as their index in ``genres`` (the model's output order)."""
        index = {g: i for i, g in enumerate(self.genres)}
        return getattr(self, split)["genre"].map(index).to_numpy(dtype=np.int64)


def load_split(
    path: str | Path,
    name: str,
    columns: Columns,
    genres: Sequence[str],
    unknown_genres: str = "error",
) -> Split:
    """Read one split and clean it: require the text and label columns, strip labels, drop
    empty and duplicate lyrics, and check every label against the configured genres."""
    path = Path(path)
    frame = read_table(path)
    missing = [c for c in (columns.text, columns.label) if c not in frame.columns]
    if missing:
        setting = f"data.columns.{_field_of(columns, missing[0])}"
        raise DataError(
            f"{path}: missing column {missing[0]!r} ({setting}); "
            f"columns present: {', '.join(frame.columns)}"
        )
    frame = frame.rename(columns={columns.text: "lyrics", columns.label: "genre"})
    for optional, canonical in (
        (columns.language, "language"),
        (columns.artist, "artist"),
        (columns.song, "song"),
    ):
        if optional in frame.columns and optional != canonical:
            frame = frame.rename(columns={optional: canonical})
    frame = frame.loc[:, ~frame.columns.duplicated()].copy()

    dropped: dict[str, int] = {}
    text = frame["lyrics"]
    if not (pd.api.types.is_string_dtype(text) or pd.api.types.is_object_dtype(text)):
        raise DataError(f"{path}: column {columns.text!r} holds {text.dtype}, expected text")
    try:
        text = pd.Series(text_cells(text.tolist()), index=frame.index, dtype=object).str.strip()
    except NotText as exc:
        raise DataError(f"{path}: column {columns.text!r} {exc}") from None
    empty = text.eq("")
    dropped["empty_lyrics"] = int(empty.sum())
    frame = frame.loc[~empty].assign(lyrics=text[~empty])
    duplicate = frame["lyrics"].duplicated(keep="first")
    dropped["duplicate_lyrics"] = int(duplicate.sum())
    frame = frame.loc[~duplicate]

    labels = frame["genre"].astype("string").str.strip()
    known = labels.isin(list(genres))
    if not known.all():
        bad = labels[~known]
        counts = bad.fillna("<empty>").value_counts()
        if unknown_genres == "error":
            examples = ", ".join(
                f"{g!r} ({n} row{'' if n == 1 else 's'})" for g, n in counts.head(3).items()
            )
            if len(counts) > 3:
                examples += f" and {len(counts) - 3} more"
            raise DataError(
                f"{path}: column {columns.label!r} has genres outside data.genres: {examples}; "
                "add them to data.genres or set data.unknown_genres=drop"
            )
        dropped["unknown_genre"] = int((~known).sum())
    frame = frame.loc[known].assign(genre=labels[known].astype(str))
    return Split(name=name, path=path, frame=frame.reset_index(drop=True), dropped=dropped)


def _field_of(columns: Columns, column: str) -> str:
    return next(k for k, v in columns.__dict__.items() if v == column)


def filter_languages(
    frame: pd.DataFrame, languages: Sequence[str] | None, path: Path
) -> pd.DataFrame:
    if not languages:
        return frame
    if "language" not in frame.columns:
        raise DataError(
            f"{path}: data.languages={list(languages)} needs a language column, and there is none"
        )
    return frame.loc[frame["language"].isin(list(languages))].reset_index(drop=True)


def require_genres(frame: pd.DataFrame, genres: Sequence[str], path: Path, split: str) -> None:
    present = set(frame["genre"].unique())
    absent = [g for g in genres if g not in present]
    if absent:
        raise DataError(
            f"{path}: the {split} split has no rows of genre {absent[0]!r}"
            f"{f' (nor {len(absent) - 1} more)' if len(absent) > 1 else ''}; "
            "list only the genres the data holds in data.genres"
        )


def load_dataset(
    train_path: str | Path,
    test_path: str | Path,
    genres: Sequence[str],
    columns: Columns | None = None,
    languages: Sequence[str] | None = None,
    balance_train: str = "none",
    unknown_genres: str = "error",
    val_fraction: float = 0.2,
    max_train_rows: int | None = None,
    seed: int = 42,
    val_by_artist: bool = False,
) -> Dataset:
    """The run's data set. ``balance_train``: "undersample" draws every genre down to the
    smallest before the validation split (as the seed notebook did, so validation is balanced
    too); "oversample" repeats rows of the smaller genres up to the largest after the split,
    in the training part only (a repeated song on both sides would inflate validation)."""
    columns = columns or Columns()
    genres = list(genres)
    if len(set(genres)) != len(genres) or len(genres) < 2:
        raise DataError(f"data.genres={genres}: expected two or more distinct genres")
    train = load_split(train_path, "train", columns, genres, unknown_genres)
    test = load_split(test_path, "test", columns, genres, unknown_genres)
    frame = filter_languages(train.frame, languages, train.path)
    dropped = {f"train_{k}": v for k, v in train.dropped.items()}
    dropped |= {f"test_{k}": v for k, v in test.dropped.items()}
    dropped["train_other_language"] = len(train.frame) - len(frame)
    frame = subsample(frame, max_train_rows, seed)
    require_genres(frame, genres, train.path, "training")
    before = frame["genre"].value_counts().reindex(genres, fill_value=0)
    if balance_train == "undersample":
        frame = balance(frame, genres, seed)
    fit, val = split_validation(frame, val_fraction, seed, by_artist=val_by_artist)
    if balance_train == "oversample":
        fit = oversample(fit, genres, seed)
    after = pd.concat([fit["genre"], val["genre"]]).value_counts().reindex(genres, fill_value=0)
    distribution = pd.DataFrame(
        {
            "train_before_balancing": before,
            "train": after,
            "test": test.frame["genre"].value_counts().reindex(genres, fill_value=0),
        }
    )
    distribution.index.name = "genre"
    return Dataset(
        train=fit,
        val=val,
        test=test.frame,
        genres=genres,
        distribution=distribution,
        dropped=dropped,
        sources={"train": train.path, "test": test.path},
    )
