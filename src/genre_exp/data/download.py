"""``genre-exp data download``: Kaggle's "Multi-Lingual Lyrics for Genre Classification" set.

kagglehub fetches public data sets without credentials. Only ever run on request: never at
import time and never inside a training run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from genre_exp.errors import DataError

DATASET = "mateibejan/multilingual-lyrics-for-genre-classification"
PAGE = f"https://www.kaggle.com/datasets/{DATASET}"


def by_hand(out: Path) -> str:
    return (
        f"download the archive from {PAGE} by hand and unpack train.csv and test.csv into "
        f"{out}, then run `genre-exp data prepare --raw {out}`"
    )


def download(out: Path) -> list[Path]:
    """Fetch the data set and copy its files into ``out``; returns the files copied."""
    try:
        import kagglehub
    except ImportError:
        raise DataError(f"kagglehub is not installed; {by_hand(out)}") from None
    try:
        cached = Path(kagglehub.dataset_download(DATASET))
    except Exception as exc:  # no network, no credentials, rate limit: all end the same way
        if isinstance(exc, OSError):  # requests' connection errors are OSErrors
            reason = "no network: Kaggle cannot be reached"
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"Kaggle refused: {type(exc).__name__} {first[:120]}".strip()
        raise DataError(f"cannot download {DATASET} ({reason}); {by_hand(out)}") from None
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted(p for p in cached.rglob("*") if p.is_file()):
        target = out / source.relative_to(cached)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(target)
    return copied
