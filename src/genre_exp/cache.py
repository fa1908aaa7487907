"""The data path's results kept on disk (``paths.cache_dir``, ``data.cache``), so the jobs of a
sweep and later runs that share a data config read the files, clean them and vectorise once.

Two kinds of entry, each one file named by its key:
- ``data-<key>.pkl``: the cleaned data set (``data.load.Dataset``), keyed by every data setting
  that changes it, the files' paths and sha256 digests, and the format;
- ``tokens-<key>.pkl``: every split's token ids and the vocabulary they were made with, keyed
  by the lyrics of the splits themselves (so whatever changed the data changes the key), the
  vectoriser settings and the Keras version.

A file is a sha256 line and a pickle. It is written to a temporary file beside it and renamed,
so a reader sees a whole entry or none, and two jobs writing one key leave one whole entry. An
entry that fails its digest or does not load is rebuilt, with one warning. Only this project's
jobs write the folder; delete it at any time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("genre_exp")

# Raise when what an entry holds, or how, changes: old entries are then simply not found.
FORMAT = 1
# Data settings that do not change the cleaned data set: a description, this switch, and the
# vectoriser's settings (which key the token ids instead).
NOT_DATA_KEY = ("name", "cache", "vocab_size", "sequence_length", "standardize")


class Unreadable(Exception):
    """An entry that is there but cannot be used (truncated, altered, of another layout)."""


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def data_key(data: Mapping[str, Any], files) -> str:
    """The key of the cleaned data set: ``data`` (the ``data`` group, resolved) without the
    settings that do not change it, the files' resolved paths and digests, the format, and
    what the pickled frames depend on."""
    import pandas as pd

    from genre_exp.data.load import Dataset

    settings = {k: v for k, v in data.items() if k not in NOT_DATA_KEY}
    settings |= {"train_path": str(files.train.resolve()), "test_path": str(files.test.resolve())}
    described = {
        "format": FORMAT,
        "data": settings,
        "sha256": dict(files.digests),
        "pandas": pd.__version__,
        "dataset_fields": [f.name for f in dataclasses.fields(Dataset)],
    }
    return _digest(json.dumps(described, sort_keys=True, default=str).encode())[:32]


def tokens_key(splits: Mapping[str, Sequence[str]], settings: Mapping[str, Any]) -> str:
    """The key of the token ids of ``splits`` (each split's lyrics, in order) made with the
    vectoriser ``settings``."""
    import keras

    digest = hashlib.sha256()
    described = {"format": FORMAT, "keras": keras.__version__, "settings": dict(settings)}
    digest.update(json.dumps(described, sort_keys=True).encode())
    for split, texts in splits.items():
        digest.update(f"\0{split}:{len(texts)}\0".encode())
        for text in texts:
            encoded = text.encode("utf-8", "surrogatepass")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Tokens:
    """Every split's token ids and the vocabulary (``get_vocabulary()``) that made them."""

    ids: dict[str, Any]
    vocabulary: list[str]


class Cache:
    """The entries in ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, kind: str, key: str) -> Path:
        return self.folder / f"{kind}-{key}.pkl"

    def dataset(self, key: str, build: Callable[[], Any]) -> tuple[Any, bool]:
        """The cached data set of ``key``, else ``build()``'s, written for the next job;
        and whether it came from the cache."""
        from genre_exp.data.load import Dataset

        fields = self.read("data", key)
        if fields is not None:
            try:
                return Dataset(**fields), True
            except TypeError as exc:
                self._warn_unreadable(self.path("data", key), exc)
        dataset = build()
        fields = {f.name: getattr(dataset, f.name) for f in dataclasses.fields(dataset)}
        self.write("data", key, fields)
        return dataset, False

    def tokens(self, key: str) -> Tokens | None:
        held = self.read("tokens", key)
        if held is None:
            return None
        try:
            return Tokens(ids=dict(held["ids"]), vocabulary=list(held["vocabulary"]))
        except (KeyError, TypeError) as exc:
            self._warn_unreadable(self.path("tokens", key), exc)
            return None

    def put_tokens(self, key: str, tokens: Tokens) -> None:
        self.write("tokens", key, {"ids": tokens.ids, "vocabulary": tokens.vocabulary})

    def read(self, kind: str, key: str) -> Any | None:
        """What the entry holds; None when there is none, or (with a warning) when it is
        unreadable."""
        path = self.path(kind, key)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._warn_unreadable(path, exc)
            return None
        try:
            return _unpack(raw)
        except Unreadable as exc:
            self._warn_unreadable(path, exc)
            return None

    def write(self, kind: str, key: str, value: Any) -> None:
        """Atomically: a whole new entry, or the old one (or none) if anything fails. The cache
        is only a shortcut: a folder that cannot be written is a warning, not an error."""
        path = self.path(kind, key)
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # A name of its own per writer: two jobs writing one key never share a file.
            tmp = self.folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            with tmp.open("xb") as out:
                out.write(_digest(payload).encode() + b"\n")
                out.write(payload)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write the cache entry %s (%s); going on without it", path, exc)
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    @staticmethod
    def _warn_unreadable(path: Path, exc: BaseException) -> None:
        log.warning("cache entry %s is unreadable (%s); building it again", path, exc)


def _unpack(raw: bytes) -> Any:
    header, newline, payload = raw.partition(b"\n")
    if not newline:
        raise Unreadable("no header")
    if _digest(payload).encode() != header:
        raise Unreadable("its sha256 does not match: truncated or altered")
    try:
        return pickle.loads(payload)
    except Exception as exc:  # a pickle of classes that moved or changed raises anything
        raise Unreadable(f"{type(exc).__name__}: {exc}") from None
