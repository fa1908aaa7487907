"""What ``genre-exp data report`` draws, as tables: genre and language counts per split and
lyric lengths (words) per genre."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from genre_exp.data.files import DATA_FILES, RAW_ENCODINGS, read_table


def load_splits(files: dict[str, Path]) -> pd.DataFrame:
    """Both splits in one frame with a ``split`` column; language optional."""
    frames = []
    for split, path in files.items():
        frame = read_table(path, encodings=RAW_ENCODINGS)
        language = frame.get("language", pd.Series("", index=frame.index))
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "genre": frame["genre"].astype("string").fillna(""),
                    "language": language.astype("string").fillna("").replace("", "(none)"),
                    "words": frame["lyrics"].astype("string").fillna("").str.split().str.len(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def counts(table: pd.DataFrame, column: str, top: int | None = None) -> pd.DataFrame:
    """Rows per value of ``column`` (most common first), one column per split."""
    wide = table.groupby([column, "split"]).size().unstack("split", fill_value=0)
    wide = wide.reindex(columns=[s for s in DATA_FILES if s in wide.columns])
    wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False).index]
    return wide.head(top) if top else wide
