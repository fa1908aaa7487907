"""What lyrics data looks like: the columns a run reads and Kaggle's genre list. Light to
import (no pandas): the config schema is built from it."""

from __future__ import annotations

from dataclasses import dataclass

# Kaggle's ten genres in the seed notebook's label order: the default label list.
KAGGLE_GENRES = [
    "Hip-Hop",
    "Indie",
    "Metal",
    "Pop",
    "Country",
    "Jazz",
    "Rock",
    "R&B",
    "Electronic",
    "Folk",
]

# The lyrics column: of every split once loaded, of `predict`'s tables and of the served model.
TEXT_COLUMN = "lyrics"


@dataclass
class Columns:
    """Column names after normalisation (lower case, spaces to underscores), so Kaggle's
    ``Lyrics`` and the Parquet layout's ``lyrics`` are the same column. Also the schema of
    ``data.columns``."""

    text: str = TEXT_COLUMN
    label: str = "genre"
    language: str = "language"
    artist: str = "artist"
    song: str = "song"
