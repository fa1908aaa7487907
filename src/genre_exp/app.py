"""The Hydra app: ``genre-exp [overrides]`` runs ``pipeline.train`` as one job, or as a sweep's
jobs with ``-m``.

Around the pipeline it turns a user's error into one line, SIGTERM into the same clean stop as
Ctrl-C, and, in a sweep, a failing job into a FAILED run while the sweep goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from genre_exp.config import config_dir
from genre_exp.errors import GenreExpError

log = logging.getLogger("genre_exp")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run ends KILLED."""


class StopSignals:
    """Ctrl-C and SIGTERM while a job runs. The first raises at once, so the run ends KILLED
    with what it logged so far; the request is also kept in ``event``, because Python swallows
    an exception raised while a finaliser runs, and training checks the event after every
    batch. Only the main thread can take signals; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.previous: dict[int, object] = {}

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._stop)
        return self.event

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _stop(self, signum, frame) -> None:
        self.event.set()
        if signum == signal.SIGTERM:
            raise Terminated(f"signal {signum}")
        raise KeyboardInterrupt


def current_job(stop: threading.Event):
    from genre_exp.pipeline import Job

    hydra_cfg = HydraConfig.get()
    return Job(
        output_dir=Path(hydra_cfg.runtime.output_dir),
        name=hydra_cfg.job.name,
        overrides=list(hydra_cfg.overrides.task),
        number=hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None,
        stop=stop,
    )


@hydra.main(
    config_path=str(config_dir()),
    config_name="config",
    execution_whitelist=["genre_exp.tracking.sweep.SweepCallback"],
)
def task(cfg: DictConfig) -> float:
    """One job. A failing job of a sweep is recorded (log, MLflow run FAILED) and returns NaN,
    so the sweep goes on with the others (Optuna marks the trial failed). A job of an Optuna
    search whose trial was pruned ends its run KILLED, and the sweep goes on too."""
    from genre_exp import pipeline, trial

    with StopSignals() as stop:
        job = current_job(stop)
        try:
            value = pipeline.train(cfg, job)
        except trial.Pruned as pruned:
            return trial.pruned(cfg, pruned)
        except Exception as exc:
            return _failed(cfg, job, exc)
        return trial.completed(cfg, value)


def _failed(cfg: DictConfig, job, exc: Exception) -> float:
    """One line for a user's error; in a sweep, NaN (and a FAILED run if the job had none)."""
    from genre_exp.tracking import runs

    sweeping = job.number is not None
    started = runs.recorded_in(exc) is not None
    if isinstance(exc, GenreExpError):
        log.error("%s", exc)
    elif sweeping:
        log.exception("job %s failed", job.number)
    if not sweeping:
        if not started:
            _remove_unstarted(job.output_dir, Path(cfg.paths.root_dir))
        if isinstance(exc, GenreExpError):
            raise SystemExit(1) from None
        raise exc
    if not started:
        with contextlib.suppress(Exception):  # the store itself may be what failed
            runs.record_failed_job(
                cfg.mlflow.tracking_uri,
                cfg.mlflow.experiment_name,
                f"{cfg.model.name}/{cfg.data.name}/failed/{job.number}",
                f"{type(exc).__name__}: {exc}",
                {"hydra_overrides": " ".join(job.overrides) or "(none)"},
            )
    return math.nan


def _remove_unstarted(output_dir: Path, root: Path) -> None:
    """A run that could not start leaves nothing behind: Hydra made its folder (config and
    log) before the job ran; remove it, and the folders above it it leaves empty."""
    shutil.rmtree(output_dir, ignore_errors=True)
    for folder in output_dir.parents:
        if folder == root or not folder.is_relative_to(root):
            break
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty
