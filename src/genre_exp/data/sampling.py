"""Which training rows a run uses: a stratified subsample, balancing, the validation split."""

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
