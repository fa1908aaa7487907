"""Where a job starts: afresh, or from a killed run's last checkpoint (``training.resume``).

Resolved once, before any data is loaded, into a ``Start`` that supplies the vectoriser, the
classifier and the first epoch, and names the MLflow run the job continues (if any). The
checks that make resuming safe live here too: the run exists and has not finished, it has a
checkpoint, and it was trained on the same data files with the same data and model settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genre_exp import checkpoint
from genre_exp.errors import ConfigError, DataError

# Settings a resumed run must share with the killed one (training.* may change, e.g. epochs).
RESUMABLE_PREFIXES = ("data.", "model.")


@dataclass(frozen=True)
class Start:
    # The run to continue, or None for a new run.
    run_id: str | None
    # Where this job writes its checkpoints: the killed job's folder when resuming.
    checkpoint_dir: Path
    saved: checkpoint.Checkpoint | None = None

    @property
    def resumed(self) -> bool:
        return self.saved is not None

    @property
    def first_epoch(self) -> int:
        """Keras' ``initial_epoch``: epochs are numbered from 0 and keep their numbers."""
        return self.saved.epoch if self.saved else 0

    def vectorizer(self, train_texts: Sequence[str], data: Any, ngrams: int = 1):
        """Adapted on the training texts (and its vocabulary saved for a later resume), or
        rebuilt from the killed run's vocabulary so text maps to the same ids. ``ngrams``: the
        word n-grams a family reads besides words (1: words only)."""
        from genre_exp import vectorize

        settings = (data.vocab_size, data.sequence_length, str(data.standardize))
        if self.saved:
            return vectorize.vectorizer_from_vocabulary(
                self.saved.vocabulary, *settings, ngrams=ngrams
            )
        vectorizer = vectorize.build_vectorizer(train_texts, *settings, ngrams=ngrams)
        checkpoint.save_vocabulary(self.checkpoint_dir, vectorizer.get_vocabulary())
        return vectorizer

    def classifier(self, model: Any, inputs):
        """Built from ``model.*``, or the checkpoint's, compiled with its optimizer state."""
        from genre_exp.models import build_classifier

        if self.saved:
            return checkpoint.load_classifier(self.saved)
        return build_classifier(model, inputs)


def start(
    cfg: Any, config: Mapping[str, Any], digests: Mapping[str, str], output_dir: Path
) -> Start:
    """A fresh start in ``output_dir``, or the checked resumption of the run
    ``training.resume`` names (``config`` is ``cfg`` resolved, ``digests`` the data files')."""
    from genre_exp.models import KERAS, family_of

    resume, epochs = cfg.training.resume, cfg.training.epochs
    if not resume:
        return Start(run_id=None, checkpoint_dir=checkpoint.folder(output_dir))
    if family_of(cfg.model).kind != KERAS:
        raise ConfigError(
            f"training.resume={resume}: model {cfg.model.name} trains in one step, so there "
            "are no epochs to resume; run it again instead"
        )
    killed_dir = _check_run(resume, cfg.mlflow.tracking_uri, config, digests)
    folder = checkpoint.folder(killed_dir)
    saved = checkpoint.load(folder)
    where = f"training.resume={resume}"
    if saved is None:
        raise ConfigError(
            f"{where}: no checkpoint in {folder} (the run stopped before its first epoch "
            "ended, or the folder is gone)"
        )
    if saved.epoch >= epochs:
        raise ConfigError(
            f"{where}: the checkpoint is after epoch {saved.epoch}, and training.epochs={epochs}; "
            "raise training.epochs to train on"
        )
    return Start(run_id=resume, checkpoint_dir=folder, saved=saved)


def _check_run(
    run_id: str, tracking_uri: str, config: Mapping[str, Any], digests: Mapping[str, str]
) -> Path:
    """The killed job's Hydra folder, once the run is known to be resumable with ``config``."""
    from genre_exp.tracking import liveness
    from genre_exp.tracking.queries import get_run
    from genre_exp.tracking.record import config_params

    where = f"training.resume={run_id}"
    run = get_run(tracking_uri, run_id, where)
    if run.status == "FINISHED":
        raise ConfigError(f"{where}: the run is already FINISHED; there is nothing to resume")
    if run.status == "RUNNING" and liveness.owner(run.tags).state == liveness.ALIVE:
        raise ConfigError(
            f"{where}: the run is still RUNNING in process {run.tags.get(liveness.PID_TAG)} "
            f"on {run.tags.get(liveness.HOST_TAG)}; stop it first (two jobs would write one run)"
        )
    if not run.tags.get("hydra_output_dir"):
        raise ConfigError(f"{where}: the run has no hydra_output_dir tag, so no checkpoint")
    for key, value in config_params(config).items():
        if key.startswith(RESUMABLE_PREFIXES) and key in run.params and run.params[key] != value:
            raise ConfigError(
                f"{where}: {key}={value} but the run was trained with {key}={run.params[key]}; "
                "resume with the run's data and model settings"
            )
    for split, digest in digests.items():
        recorded = run.tags.get(f"data.{split}_sha256")
        if recorded and recorded != digest:
            raise DataError(
                f"{where}: the {split} file changed since the run started (sha256 {digest[:12]}, "
                f"the run recorded {recorded[:12]})"
            )
    return Path(run.tags["hydra_output_dir"])
