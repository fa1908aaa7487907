"""Fixtures: small generated data sets in the real layouts, and helpers to run the CLI.

Kaggle's ``train.csv`` has columns Artist, Song, Genre, Language, Lyrics; its ``test.csv`` has
Song, Song year, Artist, Genre, Lyrics, Track_id (no language; artist and song as slugs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
SHARED_WORDS = [
    "the",
    "a",
    "and",
    "i",
    "you",
    "me",
    "we",
    "love",
    "night",
    "time",
    "baby",
    "heart",
    "world",
    "way",
    "day",
]


def genre_words(genre: str) -> list[str]:
    # Words only one genre uses, so even a tiny model can learn something.
    stem = "".join(ch for ch in genre.lower() if ch.isalpha())
    return [f"{stem}{suffix}" for suffix in ("word", "sound", "beat", "line", "tune", "song")]


def make_lyrics(genre: str, rng: np.random.Generator, words: int = 40) -> str:
    vocabulary = genre_words(genre) * 3 + SHARED_WORDS
    return " ".join(rng.choice(vocabulary, size=words))


def kaggle_frames(genres=KAGGLE_GENRES, train_per_genre=None, test_per_genre=4, seed=0):
    """(train, test) frames in Kaggle's two layouts. Train is unbalanced by default."""
    rng = np.random.default_rng(seed)
    train_per_genre = train_per_genre or {g: 12 + 3 * i for i, g in enumerate(genres)}
    train_rows, test_rows = [], []
    for genre in genres:
        for k in range(train_per_genre[genre]):
            train_rows.append(
                {
                    "Artist": f"{genre} artist {k % 3}",
                    "Song": f"{genre} song {k}",
                    "Genre": genre,
                    "Language": "en" if k % 5 else "pt",
                    "Lyrics": make_lyrics(genre, rng),
                }
            )
        for k in range(test_per_genre):
            test_rows.append(
                {
                    "Song": f"{genre.lower()}-tune-{k}",
                    "Song year": 2000 + k,
                    "Artist": f"the-{genre.lower()}-band",
                    "Genre": genre,
                    "Lyrics": make_lyrics(genre, rng),
                    "Track_id": 1000 + len(test_rows),
                }
            )
    return pd.DataFrame(train_rows), pd.DataFrame(test_rows)


def write_kaggle_csv(folder: Path) -> tuple[Path, Path]:
    """train.csv and test.csv exactly in Kaggle's layouts, 10 genres, unbalanced train."""
    train, test = kaggle_frames()
    train_path, test_path = folder / "train.csv", folder / "test.csv"
    train.to_csv(train_path, index=False)
    test.to_csv(test_path, index=False)
    return train_path, test_path


@pytest.fixture
def kaggle_csv(tmp_path: Path) -> tuple[Path, Path]:
    return write_kaggle_csv(tmp_path)


@pytest.fixture
def parquet_data(tmp_path: Path) -> tuple[Path, Path]:
    """train.parquet and test.parquet in the normalised layout (lower-case columns)."""
    train, test = kaggle_frames()
    train.columns = [c.lower() for c in train.columns]
    test = test.rename(columns=str.lower).drop(columns=["song year", "track_id"])
    test["language"] = ""
    train_path, test_path = tmp_path / "train.parquet", tmp_path / "test.parquet"
    train.to_parquet(train_path)
    test.to_parquet(test_path)
    return train_path, test_path


def genre_override(genres=KAGGLE_GENRES) -> str:
    quoted = ",".join(g if g.replace("-", "").isalnum() else f"'{g}'" for g in genres)
    return f"data.genres=[{quoted}]"


def tiny_overrides(root: Path, train: Path, test: Path) -> list[str]:
    """Everything a CLI test needs to train in seconds, with outputs and MLflow under ``root``."""
    return [
        f"paths.root_dir={root}",
        f"data.train_path={train}",
        f"data.test_path={test}",
        genre_override(),
        "data.vocab_size=200",
        "data.sequence_length=24",
        "model.embedding_dim=8",
        "model.lstm_units=8",
        "training.epochs=2",
        "training.batch_size=16",
        "training.verbose=0",
        "mlflow.experiment_name=tests",
    ]


def run_cli(
    args: list[str], env: dict | None = None, timeout: int = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "genre_exp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


def lstm(
    vocab_size: int,
    sequence_length: int,
    n_classes: int,
    embedding_dim=128,
    lstm_units=128,
    **settings,
):
    """An LSTM-family classifier built through the model registry, as training builds it."""
    from genre_exp.models import Inputs, build_classifier
    from genre_exp.models.lstm import LstmConfig

    return build_classifier(
        LstmConfig(embedding_dim=embedding_dim, lstm_units=lstm_units, **settings),
        Inputs(vocab_size, sequence_length, n_classes),
    )


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root}/mlruns/mlflow.db"


@pytest.fixture(autouse=True)
def no_tracking_uri_leak():
    """``mlflow.set_tracking_uri`` also sets $MLFLOW_TRACKING_URI, which would point every
    later test (and the CLIs they start) at an earlier test's store."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def interrupt_when(
    args: list[str], ready, signum: int = signal.SIGTERM, timeout: float = 180
) -> subprocess.CompletedProcess:
    """Start the CLI, send ``signum`` once ``ready()`` is true, and return how it ended."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(
        [sys.executable, "-m", "genre_exp", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored, and children inherit that: give
        # the job the default a user's terminal gives it, however the tests were started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, process.stderr.read()
            if time.monotonic() > deadline:
                pytest.fail(f"not ready to interrupt after {timeout:.0f} s")
            time.sleep(0.3)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
