"""``genre-exp data report``: what the data looks like before anything is trained on it.

Genre and language distributions per split and lyric lengths (words) per genre, as PNG files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from genre_exp import plots
from genre_exp.data.load import DATA_FILES, RAW_ENCODINGS, read_table


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
    wide = table.groupby([column, "split"]).size().unstack("split", fill_value=0)
    wide = wide.reindex(columns=[s for s in DATA_FILES if s in wide.columns])
    wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False).index]
    return wide.head(top) if top else wide


def figures(table: pd.DataFrame) -> dict[str, object]:
    genres = counts(table, "genre")
    return {
        "genre_distribution.png": plots.distribution_figure(genres, "Genres per split"),
        "language_distribution.png": plots.distribution_figure(
            counts(table, "language", top=15), "Languages per split (15 most common)"
        ),
        "lyric_lengths.png": plots.lengths_figure(table, list(genres.index)),
    }


def write(files: dict[str, Path], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures(load_splits(files)).items():
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        written.append(out / name)
    return written
