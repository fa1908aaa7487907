"""Data files: where they are, how to read one, and their digests.

Reads CSV or Parquet by extension; column names are normalised (lower case, spaces to
underscores) so Kaggle's ``Lyrics`` and the Parquet layout's ``lyrics`` are one column.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from genre_exp.errors import DataError, first_line

# Raw downloads are UTF-8, sometimes with a byte-order mark, sometimes Windows-1252.
RAW_ENCODINGS = ("utf-8-sig", "cp1252")
READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DATA_FILES = ("train", "test")
DATA_SUFFIXES = (".parquet", ".csv")


def is_table(path: str | Path) -> bool:
    """Whether ``read_table`` reads files of this kind (by extension)."""
    return Path(path).suffix.lower() in READERS


def check_table_file(path: Path) -> str:
    """The reader for ``path`` ("csv" or "parquet"); an unknown kind or a missing file is a
    one-line error."""
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix or '(none)'!r}; expected .csv or .parquet"
        )
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return kind


def normalise_column(name: str) -> str:
    return "_".join(str(name).strip().lower().split())


def read_table(path: str | Path, encodings: Sequence[str] = ("utf-8",)) -> pd.DataFrame:
    """Read one CSV or Parquet file, every error reduced to one line naming the file.

    A CSV is decoded with the first of ``encodings`` that fits; the one used is in
    ``frame.attrs["encoding"]``. Training reads strict UTF-8; ``data prepare`` also accepts
    the legacy encodings raw downloads come in.
    """
    path = Path(path)
    kind = check_table_file(path)
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
    train_path: str | None,
    test_path: str | None,
    folders: Sequence[tuple[str, Path | None]],
    how_to_point: str = "pass data.train_path=... data.test_path=...",
) -> tuple[Path, Path, str]:
    """Where the data is: the explicit paths if given, else the first of ``folders`` (label,
    folder) holding both a train and a test file. Returns (train, test, where it came from).
    ``how_to_point`` is the caller's way of naming files, for the error when none are found."""
    if train_path and test_path:
        return Path(train_path), Path(test_path), "data.train_path/data.test_path"
    # One of the pair alone is taken with the other split's file from the folder below.
    given = (
        ""
        if not (train_path or test_path)
        else (" (data.test_path unset)" if train_path else " (data.train_path unset)")
    )
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
        f"no data{given}: no train/test .parquet or .csv in "
        + ", ".join(looked)
        + "; run `genre-exp data download && genre-exp data prepare --raw data/raw`, "
        + f"or {how_to_point}"
    )


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class DataFiles:
    """The two files a run trains and tests on, where they were found, and their digests
    (computed once: resume checks and the run's tags both use them)."""

    train: Path
    test: Path
    origin: str
    digests: dict[str, str]

    @property
    def paths(self) -> dict[str, Path]:
        return {"train": self.train, "test": self.test}


def locate(
    train_path: str | None, test_path: str | None, folders: Sequence[tuple[str, Path | None]]
) -> DataFiles:
    """The run's data files, checked to exist and be of a readable kind, with digests."""
    train, test, origin = resolve_paths(train_path, test_path, folders)
    for path in (train, test):
        check_table_file(path)
    return DataFiles(train, test, origin, {"train": file_digest(train), "test": file_digest(test)})
