"""``genre-exp data prepare``: raw Kaggle files -> clean ``train.parquet``/``test.parquet``.

Columns are normalised to ``artist, song, genre, language, lyrics``; empty lyrics, rows without
a genre, rows whose genre is not in the genre list (Kaggle's train file has a few whose genre
cell holds a fragment of text, which training would refuse) and duplicate lyrics are dropped;
songs found in both splits (same lyrics, or same artist and title) are counted and, with
``drop_overlap``, removed from train. Files are written atomically: a prepare that is
interrupted leaves the previous files as they were.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from genre_exp.data.files import DATA_FILES, DATA_SUFFIXES, RAW_ENCODINGS, read_table
from genre_exp.data.layout import KAGGLE_GENRES
from genre_exp.errors import DataError

COLUMNS = ["artist", "song", "genre", "language", "lyrics"]
# How many of the values dropped as not a genre the summary names, most frequent first.
GENRE_EXAMPLES = 5


@dataclass
class Prepared:
    train: pd.DataFrame
    test: pd.DataFrame
    summary: dict


def slug(text: object) -> str:
    """'The Elwins' and 'the-elwins' alike: Kaggle's test file has slugs, its train file names."""
    return re.sub(r"[^0-9a-z]+", "-", str(text).lower()).strip("-") if pd.notna(text) else ""


def lyrics_key(text: str) -> str:
    return " ".join(text.lower().split())


@contextmanager
def raw_folder(raw: Path) -> Iterator[Path]:
    """The folder itself, or a zip archive (Kaggle's download) unpacked to a temporary one."""
    if raw.is_dir():
        yield raw
    elif raw.is_file() and raw.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(raw) as archive, tempfile.TemporaryDirectory() as tmp:
                archive.extractall(tmp)
                yield Path(tmp)
        except zipfile.BadZipFile:
            raise DataError(f"{raw}: not a readable zip archive") from None
    else:
        raise DataError(f"--raw {raw}: expected a folder or a .zip holding train and test files")


def find_raw_files(folder: Path, origin: Path) -> dict[str, Path]:
    """train/test .csv or .parquet anywhere under ``folder`` (archives nest them)."""
    found: dict[str, Path] = {}
    for split in DATA_FILES:
        matches = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.stem.lower() == split and p.suffix.lower() in DATA_SUFFIXES
        )
        if not matches:
            raise DataError(f"{origin}: no {split}.csv or {split}.parquet in it")
        found[split] = matches[0]
    return found


def normalise(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    for required in ("lyrics", "genre"):
        if required not in frame.columns:
            raise DataError(
                f"{path}: missing column {required!r}; columns present: {', '.join(frame.columns)}"
            )
    out = pd.DataFrame({c: frame[c] if c in frame.columns else "" for c in COLUMNS})
    for column in COLUMNS:
        out[column] = out[column].astype("string").fillna("").str.strip()
    return out


def clean(
    frame: pd.DataFrame, genres: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    """The rows training can use; how many were dropped and why; and the most frequent values
    dropped as not in ``genres``, with their row counts."""
    dropped = {}
    empty = frame["lyrics"].eq("")
    dropped["empty_lyrics"] = int(empty.sum())
    frame = frame.loc[~empty]
    no_genre = frame["genre"].eq("")
    dropped["missing_genre"] = int(no_genre.sum())
    frame = frame.loc[~no_genre]
    # Before duplicates, so that a song's mis-parsed copy does not count as its first row.
    unknown = ~frame["genre"].isin(list(genres))
    dropped["unknown_genre"] = int(unknown.sum())
    examples = frame.loc[unknown, "genre"].value_counts().head(GENRE_EXAMPLES)
    frame = frame.loc[~unknown]
    duplicate = frame["lyrics"].duplicated(keep="first")
    dropped["duplicate_lyrics"] = int(duplicate.sum())
    return (
        frame.loc[~duplicate].reset_index(drop=True),
        dropped,
        {str(value): int(rows) for value, rows in examples.items()},
    )


def overlap(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.Series, dict[str, int]]:
    """Train rows that are also test songs: same lyrics text (case and spacing ignored), or
    same artist and song title (slugged, so names match Kaggle's test slugs)."""
    test_lyrics = set(test["lyrics"].map(lyrics_key))
    same_lyrics = train["lyrics"].map(lyrics_key).isin(test_lyrics)
    titled = (train["artist"] != "") & (train["song"] != "")
    test_titles = {
        (slug(a), slug(s)) for a, s in zip(test["artist"], test["song"], strict=True) if a and s
    }
    same_title = titled & pd.Series(
        [
            (slug(a), slug(s)) in test_titles
            for a, s in zip(train["artist"], train["song"], strict=True)
        ],
        index=train.index,
    )
    either = same_lyrics | same_title
    return either, {
        "same_lyrics": int(same_lyrics.sum()),
        "same_artist_song": int(same_title.sum()),
        "train_rows": int(either.sum()),
    }


def split_summary(frame: pd.DataFrame) -> dict:
    language = frame["language"].replace("", "(none)")
    return {
        "rows": len(frame),
        "genres": {str(k): int(v) for k, v in frame["genre"].value_counts().items()},
        "languages": {str(k): int(v) for k, v in language.value_counts().items()},
    }


def prepare(
    raw_files: dict[str, Path],
    drop_overlap: bool = False,
    genres: Sequence[str] = tuple(KAGGLE_GENRES),
) -> Prepared:
    frames, dropped, unknown, encodings = {}, {}, {}, {}
    for split, path in raw_files.items():
        raw = read_table(path, encodings=RAW_ENCODINGS)
        encodings[split] = raw.attrs.get("encoding", "")
        frames[split], dropped[split], unknown[split] = clean(normalise(raw, path), genres)
        dropped[split] = {"raw_rows": len(raw), **dropped[split]}
    in_test, overlap_counts = overlap(frames["train"], frames["test"])
    overlap_counts["dropped_from_train"] = int(in_test.sum()) if drop_overlap else 0
    if drop_overlap:
        frames["train"] = frames["train"].loc[~in_test].reset_index(drop=True)
        dropped["train"]["overlap_with_test"] = int(in_test.sum())
    summary = {
        "sources": {s: str(p) for s, p in raw_files.items()},
        "encodings": encodings,
        "genres": list(genres),
        "train": split_summary(frames["train"]),
        "test": split_summary(frames["test"]),
        "dropped": dropped,
        "unknown_genres": unknown,
        "overlap": overlap_counts,
    }
    return Prepared(train=frames["train"], test=frames["test"], summary=summary)


def write_atomically(files: dict[Path, Callable[[Path], object]]) -> None:
    """Write every file to a temporary name beside it, then rename them all: an error or a
    kill part-way leaves the earlier files whole (``os.replace`` is atomic on one filesystem)."""
    temporary: dict[Path, Path] = {}
    umask = os.umask(0)
    os.umask(umask)
    try:
        for target, write in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            os.close(handle)
            temporary[target] = Path(name)
            write(Path(name))
            # mkstemp makes owner-only files; these are shared data like any other output.
            os.chmod(name, 0o666 & ~umask)
        for target, name in temporary.items():
            os.replace(name, target)
    finally:
        for name in temporary.values():
            name.unlink(missing_ok=True)


def run(
    raw: Path,
    out: Path,
    drop_overlap: bool = False,
    genres: Sequence[str] = tuple(KAGGLE_GENRES),
) -> Prepared:
    with raw_folder(raw) as folder:
        prepared = prepare(find_raw_files(folder, raw), drop_overlap=drop_overlap, genres=genres)
    summary_text = json.dumps(prepared.summary, indent=2, ensure_ascii=False)
    write_atomically(
        {
            out / "train.parquet": lambda p: prepared.train.to_parquet(p, index=False),
            out / "test.parquet": lambda p: prepared.test.to_parquet(p, index=False),
            out / "summary.json": lambda p: p.write_text(summary_text, encoding="utf-8"),
        }
    )
    return prepared


def shorten(text: str, width: int = 40) -> str:
    """A cell for the terminal: a mis-parsed genre cell can hold a whole verse."""
    return text if len(text) <= width else text[: width - 3] + "..."


def describe(summary: dict) -> str:
    """The summary as a few lines for the terminal."""
    lines = []
    for split in DATA_FILES:
        part, drops = summary[split], summary["dropped"][split]
        dropped = ", ".join(f"{k} {v}" for k, v in drops.items() if k != "raw_rows" and v)
        lines.append(
            f"{split}: {part['rows']} rows (of {drops['raw_rows']}; dropped: {dropped or 'none'})"
            f"; encoding {summary['encodings'][split]}"
        )
        lines.append("  genres: " + ", ".join(f"{g} {n}" for g, n in part["genres"].items()))
        if drops["unknown_genre"]:
            named = summary["unknown_genres"][split]
            lines.append(
                "  dropped as not in --genres: "
                + ", ".join(f"{shorten(value)!r} {n}" for value, n in named.items())
                + (" ..." if sum(named.values()) < drops["unknown_genre"] else "")
            )
        lines.append(
            "  languages: "
            + ", ".join(f"{g} {n}" for g, n in list(part["languages"].items())[:10])
            + (" ..." if len(part["languages"]) > 10 else "")
        )
    o = summary["overlap"]
    lines.append(
        f"overlap: {o['train_rows']} train rows are test songs ({o['same_lyrics']} same lyrics, "
        f"{o['same_artist_song']} same artist+song); "
        + (
            f"dropped {o['dropped_from_train']} from train"
            if o["dropped_from_train"]
            else "kept (--drop-overlap removes them from train)"
        )
    )
    return "\n".join(lines)
