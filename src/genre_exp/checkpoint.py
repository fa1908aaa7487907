"""Per-epoch checkpoints in the run's Hydra output folder, so ``training.resume=<run id>`` can
continue a killed run: the vectoriser's vocabulary (written once, before training) and the
compiled classifier with its optimizer state after every epoch.

``state.json`` names the newest complete checkpoint and is replaced atomically after the model
file is written, so a kill at any moment leaves a consistent pair behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

FOLDER = "checkpoint"
STATE = "state.json"
VOCABULARY = "vocabulary.json"


@dataclass(frozen=True)
class Checkpoint:
    epoch: int  # epochs completed, i.e. Keras' initial_epoch for the next fit
    model_path: Path
    vocabulary: list[str]


def folder(output_dir: str | Path) -> Path:
    return Path(output_dir) / FOLDER


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_vocabulary(where: Path, vocabulary: list[str]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    _write_atomically(where / VOCABULARY, json.dumps([str(t) for t in vocabulary]))


def load(where: Path) -> Checkpoint | None:
    """The newest checkpoint in ``where``, or None when there is none."""
    state_file, vocabulary_file = where / STATE, where / VOCABULARY
    if not (state_file.is_file() and vocabulary_file.is_file()):
        return None
    state = json.loads(state_file.read_text(encoding="utf-8"))
    model_path = where / state["model"]
    if not model_path.is_file():
        return None
    vocabulary = json.loads(vocabulary_file.read_text(encoding="utf-8"))
    return Checkpoint(epoch=int(state["epoch"]), model_path=model_path, vocabulary=vocabulary)


def load_classifier(saved: Checkpoint):
    """The classifier, compiled, with the optimizer state it had after ``saved.epoch``."""
    import keras

    return keras.models.load_model(saved.model_path)


def release(where: Path) -> None:
    """Delete the model file and state of a run that FINISHED: nothing can resume it, and a
    sweep's jobs would otherwise leave tens of MB each behind. The vocabulary stays."""
    for path in [where / STATE, *where.glob("epoch-*.keras"), *where.glob(".tmp-epoch-*")]:
        path.unlink(missing_ok=True)


def callback(where: Path):
    """Keras callback writing ``epoch-<n>.keras`` and then ``state.json`` after every epoch,
    keeping only the newest model file."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs=None) -> None:
            done = epoch + 1
            name = f"epoch-{done}.keras"
            tmp = where / f".tmp-{name}"
            self.model.save(tmp)
            os.replace(tmp, where / name)
            _write_atomically(where / STATE, json.dumps({"epoch": done, "model": name}))
            for old in where.glob("epoch-*.keras"):
                if old.name != name:
                    old.unlink(missing_ok=True)

    where.mkdir(parents=True, exist_ok=True)
    return EpochCheckpoint()
