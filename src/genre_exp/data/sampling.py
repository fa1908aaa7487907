"""Which training rows a run uses: a stratified subsample, balancing (under- or oversampling),
the validation split (stratified, or with no artist on both sides)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from genre_exp.errors import DataError


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


def oversample(frame: pd.DataFrame, genres: Sequence[str], seed: int) -> pd.DataFrame:
    """Every genre drawn with replacement up to the largest genre's count (its own rows all
    kept once, then random repeats)."""
    counts = frame["genre"].value_counts()
    largest = int(max(counts.get(g, 0) for g in genres))
    parts = []
    for genre in genres:
        rows = frame.loc[frame["genre"] == genre]
        extra = rows.sample(n=largest - len(rows), replace=True, random_state=seed)
        parts += [rows, extra]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def split_validation(
    frame: pd.DataFrame, fraction: float, seed: int, by_artist: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified validation split taken from the training rows; ``by_artist`` keeps each
    artist's songs on one side, as a test split of other artists does, so that validation does
    not reward knowing an artist's vocabulary."""
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
    if by_artist:
        return _split_by_artist(frame, fraction, seed)
    train, val = train_test_split(
        frame, test_size=fraction, stratify=frame["genre"], random_state=seed
    )
    return train.reset_index(drop=True), val.reset_index(drop=True)


def _split_by_artist(
    frame: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whole artists to validation, genre by genre (fewest artists first), until each genre has
    about ``fraction`` of its rows there, always leaving it an artist for training."""
    artists = frame["artist"].astype("string").fillna("").str.strip().str.lower()
    if artists.eq("").any():
        raise DataError(
            "data.val_split=by_artist: every training row needs an artist (data.columns.artist); "
            "use data.val_split=stratified"
        )
    rng = np.random.default_rng(seed)
    by_genre = artists.groupby(frame["genre"]).unique()
    chosen: set[str] = set()
    for genre in by_genre.map(len).sort_values(kind="stable").index:
        rows = frame["genre"].eq(genre)
        candidates = list(by_genre[genre])
        rng.shuffle(candidates)
        for artist in candidates:
            in_val = artists[rows].isin(chosen)
            if in_val.mean() >= fraction or (~in_val & artists[rows].ne(artist)).sum() == 0:
                break
            chosen.add(artist)
    val = artists.isin(chosen)
    for side, mask in (("validation", val), ("training", ~val)):
        missing = sorted(set(frame["genre"]) - set(frame.loc[mask, "genre"]))
        if missing:
            raise DataError(
                f"data.val_split=by_artist: genre {missing[0]!r} has too few artists to have one "
                f"on the {side} side; use data.val_split=stratified"
            )
    return frame.loc[~val].reset_index(drop=True), frame.loc[val].reset_index(drop=True)
