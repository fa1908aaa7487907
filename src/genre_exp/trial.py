"""A job's side of an Optuna search (``hparams_search`` presets, genre-exp's Optuna sweeper).

The sweeper tells each job its trial (``trial.number``, ``trial.study``, ``trial.storage``);
the job loads that trial from the study's storage with the search's pruner
(``hydra.sweeper.pruner``), reports validation macro-F1 to it after every epoch, and stops when
the pruner judges the trial hopeless: the trial is then PRUNED, and the job's MLflow run ends
KILLED with the epoch it stopped after, while the sweep goes on. A text family (trained in one
step) reports its one value and is never pruned. The trial and the run name each other: the
run's tags ``optuna_study``/``optuna_trial``, the trial's user attribute ``mlflow_run_id``.

A job that no Optuna sweep started (``trial.number`` null) never imports Optuna.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from genre_exp.errors import ConfigError

log = logging.getLogger("genre_exp")

RUN_ATTR = "mlflow_run_id"


class Pruned(KeyboardInterrupt):
    """The search's pruner stopped this job's trial. A KeyboardInterrupt, as a stop the user
    asked for is: the job's run ends KILLED, not FAILED with an error."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch
        self.value = value


class JobTrial:
    """The running trial of the study this job is part of."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    @classmethod
    def of(cls, cfg: Any) -> JobTrial | None:
        """This job's trial, if an Optuna sweep started the job and the trial still runs."""
        settings = cfg.trial
        if settings.number is None:
            return None
        import optuna
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        from hydra_plugins.genre_exp_sweeper.resumable_optuna import make_pruner

        if not settings.study or not settings.storage:
            raise ConfigError(
                f"trial.number={settings.number}: trial.study and trial.storage are needed too "
                "(genre-exp's Optuna sweeper sets all three)"
            )
        # The search's pruner, as the sweeper's study has it: Optuna keeps no pruner in a study.
        sweeper = HydraConfig.get().sweeper if HydraConfig.initialized() else OmegaConf.create()
        pruner = make_pruner(
            OmegaConf.select(sweeper, "pruner"), OmegaConf.select(sweeper, "pruners")
        )
        try:
            study = optuna.load_study(
                study_name=settings.study, storage=settings.storage, pruner=pruner
            )
            # Optuna's storages know a trial by its id; the sweeper names it by its number.
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(
                study._study_id, settings.number
            )
        except KeyError:
            raise ConfigError(
                f"trial.study={settings.study!r}, trial.number={settings.number}: no such "
                f"trial in {settings.storage}"
            ) from None
        state = study._storage.get_trial(trial_id).state
        if state.is_finished():
            # E.g. a search's job run again with its overrides, outside the search.
            log.warning(
                "trial %d of Optuna study %r is %s: this job reports to no trial",
                settings.number,
                settings.study,
                state.name,
            )
            return None
        return cls(optuna.trial.Trial(study, trial_id))

    def reporter(self):
        """Keras callback: after every epoch, the epoch's validation macro-F1 to the trial;
        raises ``Pruned`` when the study's pruner says the trial should stop."""
        import keras

        from genre_exp.selection import EPOCH_METRIC

        trial = self.trial

        class ReportToTrial(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                value = (logs or {}).get(EPOCH_METRIC)
                if value is None:
                    return
                trial.report(float(value), epoch)
                if trial.should_prune():
                    raise Pruned(epoch, float(value))

        return ReportToTrial()


def callbacks(cfg: Any) -> list:
    """The Keras callbacks that report to this job's trial; none if it is no search's job."""
    joined = JobTrial.of(cfg)
    return [] if joined is None else [joined.reporter()]


def completed(cfg: Any, value: float) -> float:
    """A job that trained to its end returns ``value`` to the sweeper (which tells the study);
    before, a text family reports its one value, and the trial and the run are linked."""
    if cfg.trial.number is None:
        return value
    from genre_exp.models import TEXT, family_of

    joined = JobTrial.of(cfg)
    if joined is not None:
        if family_of(cfg.model).kind == TEXT:
            joined.trial.report(value, 0)
        _link(cfg, joined, {})
    return value


def pruned(cfg: Any, stop: Pruned) -> float:
    """A job whose trial the pruner stopped: the run (ended KILLED) says so, the trial is told
    PRUNED; returns NaN, a value the sweeper never reads (the trial is finished)."""
    from optuna.trial import TrialState

    from genre_exp.selection import EPOCH_METRIC
    from genre_exp.tracking.trials import PRUNED_AT_TAG, STATE_TAG

    joined = JobTrial.of(cfg)
    if joined is not None:
        trial = joined.trial
        _link(cfg, joined, {STATE_TAG: TrialState.PRUNED.name, PRUNED_AT_TAG: str(stop.epoch)})
        trial.study.tell(trial, state=TrialState.PRUNED)
        log.info(
            "trial %d pruned after epoch %d (%s %.4f)",
            trial.number,
            stop.epoch,
            EPOCH_METRIC,
            stop.value,
        )
    return math.nan


def _link(cfg: Any, joined: JobTrial, tags: dict[str, str]) -> None:
    from genre_exp.tracking.trials import STUDY_TAG, TRIAL_TAG, tag_last_run

    trial = joined.trial
    run_id = tag_last_run(
        cfg.mlflow.tracking_uri,
        {STUDY_TAG: trial.study.study_name, TRIAL_TAG: str(trial.number), **tags},
    )
    if run_id is not None:
        trial.set_user_attr(RUN_ATTR, run_id)
