"""Hydra's Optuna sweeper, made resumable, pruning and time-boxed
(``hydra/sweeper=genre_exp_optuna``; the hparams_search presets use it).

- Resumable and shared: the stock sweeper runs ``n_trials`` more trials every time it is
  started on an existing study, and a trial whose process was killed stays RUNNING in the study
  for ever. Here ``n_trials`` counts the whole study (pruned trials included, and the trials
  other sweeps run on it at the same time): after an interruption, the same command runs only
  the trials still missing, and several sweeps (machines) may drive one study on a shared
  database. While its jobs run, a sweep records a heartbeat of their trials in the study every
  ``heartbeat_interval`` seconds; a RUNNING trial with no heartbeat for ``grace_period`` seconds
  (its sweep was killed, or its machine died) is marked failed and replaced.
- Pruning: every job is told its trial (``trial.number``, ``trial.study``, ``trial.storage``
  overrides), reports validation macro-F1 to it after every epoch and stops when the study's
  pruner (``hydra.sweeper.pruner``: median, hyperband, threshold or none) judges it hopeless.
- ``timeout``: no trial starts once the sweep has run that many seconds.
- ``branches``: search spaces that apply only when a choice parameter takes a value (each model
  family's own parameters in a search across families).

Hydra imports this module at every start to find its plugins: it stays light, and the sweep
itself (which imports Optuna) lives in ``_sweep``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import Direction, OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf


class Pruner(StrEnum):
    """Which Optuna pruner judges the trials after every epoch."""

    # A trial's best value so far below the median of the earlier trials' at that epoch.
    median = "median"
    # Successive halving in several brackets.
    hyperband = "hyperband"
    # A value below ``lower`` (or above ``upper``).
    threshold = "threshold"
    # Every trial trains to its end.
    none = "none"


@dataclass
class MedianPrunerConf:
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.MedianPruner.html"""

    # No pruning until this many trials of the study have completed.
    n_startup_trials: int = 5
    # No trial is pruned before this epoch (epochs count from 0).
    n_warmup_steps: int = 0
    interval_steps: int = 1
    # Medians of fewer trials than this are no ground to prune.
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConf:
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.HyperbandPruner.html
    At epochs min_resource * reduction_factor^k, only the best 1/reduction_factor of a
    bracket's trials go on."""

    min_resource: int = 1
    # The most epochs a trial trains (training.epochs); "auto": the first finished trial's.
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class ThresholdPrunerConf:
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.ThresholdPruner.html"""

    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class PrunersConf:
    """Each pruner's settings; only the chosen one's are used, so switching pruners on the
    command line (hydra.sweeper.pruner=none) keeps a preset's settings valid."""

    median: MedianPrunerConf = field(default_factory=MedianPrunerConf)
    hyperband: HyperbandPrunerConf = field(default_factory=HyperbandPrunerConf)
    threshold: ThresholdPrunerConf = field(default_factory=ThresholdPrunerConf)


@dataclass
class GenreExpOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.genre_exp_sweeper.resumable_optuna.ResumableOptunaSweeper"
    # Every job returns validation macro-F1 of its final model.
    direction: Any = Direction.maximize
    # Beside the MLflow store; jobs load their trial from it, so it must be a database every
    # job reaches (not in memory).
    storage: Any | None = "sqlite:///${paths.root_dir}/mlruns/optuna.db"
    # One study per preset, data set and experiment: a smoke search never feeds a real one.
    study_name: str | None = (
        "${hydra:runtime.choices.hparams_search}-${data.name}-${mlflow.experiment_name}"
    )
    n_jobs: int = 1
    max_failure_rate: float = 0.5
    pruner: Pruner = Pruner.median
    pruners: PrunersConf = field(default_factory=PrunersConf)
    # Seconds after the sweep's start when no more trials start (running ones finish); null:
    # only n_trials ends the sweep.
    timeout: float | None = None
    # {choice parameter: {value: preset}}: when the parameter takes the value, the trial also
    # draws the search space (hydra.sweeper.params) of conf/hparams_search/<preset>.yaml.
    branches: dict[str, dict[str, str]] = field(default_factory=dict)
    # Seconds between two heartbeats of the trials whose jobs this sweep runs (whole seconds:
    # Optuna's storage takes no other).
    heartbeat_interval: int = 10
    # Seconds without a heartbeat after which another sweep (or this command run again) marks a
    # RUNNING trial failed; at least twice heartbeat_interval, so that a late heartbeat of a live
    # sweep never gets its trial failed.
    grace_period: int = 60


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="genre_exp_optuna",
    node=GenreExpOptunaSweeperConf,
    provider="genre_exp_sweeper",
)


def make_pruner(kind: Any, pruners: Any):
    """The Optuna pruner ``kind`` (a ``Pruner``, None for none) with its settings from
    ``pruners``. Optuna itself would take None for its median pruner."""
    import optuna

    kind = Pruner(str(kind)) if kind is not None else Pruner.none
    if kind == Pruner.none:
        return optuna.pruners.NopPruner()
    settings = pruners[kind.value]
    if OmegaConf.is_config(settings):
        settings = OmegaConf.to_container(settings, resolve=True)
    return {
        Pruner.median: optuna.pruners.MedianPruner,
        Pruner.hyperband: optuna.pruners.HyperbandPruner,
        Pruner.threshold: optuna.pruners.ThresholdPruner,
    }[kind](**settings)


class ResumableOptunaSweeper(OptunaSweeper):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        custom_search_space: str | None,
        params: DictConfig | None,
        pruner: Any,
        pruners: DictConfig,
        timeout: float | None,
        branches: DictConfig | None,
        heartbeat_interval: int,
        grace_period: int,
    ) -> None:
        from hydra.utils import instantiate

        from hydra_plugins.genre_exp_sweeper._sweep import SweeperImpl

        self.sweeper = SweeperImpl(
            instantiate(
                sampler,
                _execution_whitelist_=(
                    "hydra_plugins.hydra_optuna_sweeper.*",
                    "optuna.samplers.*",
                ),
            ),
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            custom_search_space,
            params,
            pruner=make_pruner(pruner, pruners),
            timeout=timeout,
            branches=branches,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
