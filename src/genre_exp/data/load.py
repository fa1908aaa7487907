"""Load, validate, clean, balance and split lyrics data.

Reads CSV or Parquet by extension, in Kaggle's layouts (``train.csv``: Artist, Song, Genre,
Language, Lyrics; ``test.csv``: Song, Song year, Artist, Genre, Lyrics, Track_id) and the
normalised Parquet layout (artist, song, genre, language, lyrics). Column names are normalised
(lower case, spaces to underscores) so one config serves all of them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genre_exp.errors import DataError, first_line

# Raw downloads are UTF-8, sometimes with a byte-order mark, sometimes Windows-1252.
RAW_ENCODINGS = ("utf-8-sig", "cp1252")
READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Columns:
    text: str = "lyrics"
    label: str = "genre"
    language: str = "language"
    artist: str = "artist"
    song: str = "song"


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


def normalise_column(name: str) -> str:
    return "_".join(str(name).strip().lower().split())


def read_table(path: str | Path, encodings: Sequence[str] = ("utf-8",)) -> pd.DataFrame:
    """Read one CSV or Parquet file, every error reduced to one line naming the file.

    A CSV is decoded with the first of ``encodings`` that fits; the one used is in
    ``frame.attrs["encoding"]``. Training reads strict UTF-8; ``data prepare`` also accepts
    the legacy encodings raw downloads come in.
    """
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix or '(none)'!r}; expected .csv or .parquet"
        )
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if kind == "csv":
            frame = _read_csv(path, encodings)
        else:
            frame = pd.read_parquet(path)
            frame.attrs["encoding"] = "parquet"
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise DataError(
            f"{path}: not valid UTF-8 text (a byte {bad!r}); save it as UTF-8, or run "
            "`genre-exp data prepare`, which also reads Windows-1252"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({first_line(exc)})") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None
    frame.columns = [normalise_column(c) for c in frame.columns]
    return frame


def _read_csv(path: Path, encodings: Sequence[str]) -> pd.DataFrame:
    for i, encoding in enumerate(encodings):
        try:
            frame = pd.read_csv(
                path, encoding=encoding, dtype=str, keep_default_na=False, na_values=[""]
            )
        except UnicodeDecodeError:
            if i == len(encodings) - 1:
                raise
            continue
        frame.attrs["encoding"] = encoding
        return frame
    raise ValueError("no encoding to try")


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
    # astype: on an empty str column, map() keeps the str dtype, and '&' with it is deprecated.
    not_text = text.notna() & ~text.map(lambda v: isinstance(v, str)).astype(bool)
    if not_text.any():
        row = int(np.flatnonzero(not_text.to_numpy())[0])
        raise DataError(
            f"{path}: column {columns.text!r} row {row} holds {type(text.iloc[row]).__name__}, "
            "expected text"
        )
    text = text.fillna("").str.strip()
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
            examples = ", ".join(f"{g!r} ({n} rows)" for g, n in counts.head(3).items())
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


def subsample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows, keeping each genre's share (for quick runs)."""
    if not max_rows or len(frame) <= max_rows:
        return frame
    fraction = max_rows / len(frame)
    parts = [
        group.sample(n=max(1, round(len(group) * fraction)), random_state=seed)
        for _, group in frame.groupby("genre", sort=False)
    ]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def balance(frame: pd.DataFrame, genres: Sequence[str], seed: int) -> pd.DataFrame:
    """Undersample every genre to the smallest genre's count."""
    counts = frame["genre"].value_counts()
    smallest = int(min(counts.get(g, 0) for g in genres))
    parts = [frame.loc[frame["genre"] == g].sample(n=smallest, random_state=seed) for g in genres]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def split_validation(
    frame: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified validation split taken from the training rows."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.val_fraction={fraction}: expected a fraction between 0 and 1")
    counts = frame["genre"].value_counts()
    n_val = int(np.ceil(len(frame) * fraction))
    if counts.min() < 2 or n_val < counts.size:
        raise DataError(
            f"data.val_fraction={fraction}: {len(frame)} training rows are too few for a "
            f"stratified validation split over {counts.size} genres (smallest has {counts.min()})"
        )
    train, val = train_test_split(
        frame, test_size=fraction, stratify=frame["genre"], random_state=seed
    )
    return train.reset_index(drop=True), val.reset_index(drop=True)


def require_genres(frame: pd.DataFrame, genres: Sequence[str], path: Path, split: str) -> None:
    present = set(frame["genre"].unique())
    absent = [g for g in genres if g not in present]
    if absent:
        raise DataError(
            f"{path}: the {split} split has no rows of genre {absent[0]!r}"
            f"{f' (nor {len(absent) - 1} more)' if len(absent) > 1 else ''}; "
            "list only the genres the data holds in data.genres"
        )


DATA_FILES = ("train", "test")
DATA_SUFFIXES = (".parquet", ".csv")


def find_split_file(folder: Path, split: str) -> Path | None:
    """``<folder>/<split>.parquet``, else ``<folder>/<split>.csv``."""
    for suffix in DATA_SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def default_folders(data_dir: str | Path) -> list[tuple[str, Path | None]]:
    """Where data is looked for when no path is given, in order."""
    env = os.environ.get("GENRE_EXP_DATA")
    return [
        ("$GENRE_EXP_DATA", Path(env).expanduser() if env else None),
        ("data/processed", Path(data_dir) / "processed"),
    ]


def resolve_paths(
    train_path: str | None, test_path: str | None, folders: Sequence[tuple[str, Path | None]]
) -> tuple[Path, Path, str]:
    """Where the data is: the explicit paths if given, else the first of ``folders`` (label,
    folder) holding both a train and a test file. Returns (train, test, where it came from)."""
    if train_path and test_path:
        return Path(train_path), Path(test_path), "data.train_path/data.test_path"
    looked = []
    for label, folder in folders:
        if folder is None:
            looked.append(f"{label} (unset)")
            continue
        found = {s: find_split_file(folder, s) for s in DATA_FILES}
        if not all(found.values()) and label.startswith("$"):
            # A variable the user set is a choice, not a hint: never skip it silently.
            raise DataError(
                f"{label}={folder}: no train and test .parquet or .csv there; fix or unset it"
            )
        if all(found.values()):
            return (
                Path(train_path) if train_path else found["train"],
                Path(test_path) if test_path else found["test"],
                f"{label} ({folder})",
            )
        looked.append(f"{label} ({folder})")
    raise DataError(
        "no data: no train/test .parquet or .csv in "
        + ", ".join(looked)
        + "; run `genre-exp data download && genre-exp data prepare --raw data/raw`, "
        "or pass data.train_path=... data.test_path=..."
    )


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_dataset(
    train_path: str | Path,
    test_path: str | Path,
    genres: Sequence[str],
    columns: Columns = Columns(),
    languages: Sequence[str] | None = None,
    balance_train: bool = False,
    unknown_genres: str = "error",
    val_fraction: float = 0.2,
    max_train_rows: int | None = None,
    seed: int = 42,
) -> Dataset:
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
    if balance_train:
        frame = balance(frame, genres, seed)
    after = frame["genre"].value_counts().reindex(genres, fill_value=0)
    fit, val = split_validation(frame, val_fraction, seed)
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
