"""The sweep of genre-exp's Optuna sweeper: Hydra's loop (ask a batch of trials, launch their
jobs with the trials' parameters as overrides, tell the results), plus resuming, each job told
its trial, pruned trials, a time budget and per-choice search spaces.

Imported only when a sweep starts (Hydra's plugin scan skips modules named ``_*``): it imports
Optuna.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import Trial, TrialState

log = logging.getLogger(__name__)

# The config group holding the presets that ``branches`` names.
PRESETS_GROUP = "hparams_search"


class SearchError(CompactHydraException):
    """A search the sweeper cannot run as configured; Hydra prints its message alone."""


def remaining_trials(study: optuna.Study, n_trials: int) -> int:
    """Trials still to run for a study of ``n_trials``; fails the trials a kill left RUNNING.

    Only one sweep may drive a study at a time: a trial RUNNING now is taken to be orphaned.
    """
    trials = study.get_trials(deepcopy=False)
    orphans = [t.number for t in trials if t.state == TrialState.RUNNING]
    for number in orphans:
        study.tell(number, state=TrialState.FAIL)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    log.info(
        "Optuna study %r: %d of %d trials done%s; %d to run",
        study.study_name,
        done,
        n_trials,
        f", {len(orphans)} interrupted trial(s) marked failed" if orphans else "",
        max(0, n_trials - done),
    )
    return max(0, n_trials - done)


def quoted(value: str) -> str:
    """A string as a Hydra override's value, whatever characters it holds (a path, a URL)."""
    return "'" + value.replace("'", "\\'") + "'"


class Branch:
    """The search space one value of a choice parameter adds: Optuna draws its parameters
    under names prefixed with the value, so that each family's ``model.units`` is its own
    parameter (one name may be a different range, or mean something else, in another family)."""

    def __init__(self, value: str, overrides: list[str]) -> None:
        self.value = value
        self.space, self.fixed, self.deleted = create_params_from_overrides(overrides)

    def overrides(self, trial: Trial, fixed_by_user: Mapping[str, Any]) -> list[str]:
        chosen = []
        for name, distribution in self.space.items():
            if name not in fixed_by_user:
                chosen.append(f"{name}={trial._suggest(f'{self.value}:{name}', distribution)}")
        for name, value in self.fixed.items():
            if name not in fixed_by_user:
                chosen.append(f"{name}={value}")
        return chosen + list(self.deleted)


class SweeperImpl(OptunaSweeperImpl):
    def __init__(
        self,
        *args: Any,
        pruner: optuna.pruners.BasePruner,
        timeout: float | None,
        branches: Mapping[str, Mapping[str, str]] | None,
    ) -> None:
        super().__init__(*args)
        self.pruner = pruner
        self.timeout = timeout
        self.branch_presets = {
            str(param): {str(value): str(preset) for value, preset in by_value.items()}
            for param, by_value in (branches or {}).items()
        }

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config()
        params_conf.extend(arguments)
        space, fixed_params, fixed_overrides = create_params_from_overrides(params_conf)
        for name in fixed_params:
            space.pop(name, None)
        branches = self._load_branches(space, fixed_params)
        sampler = self.sampler
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            self._grid_sampler(space, branches)
        directions = self._get_directions()
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            pruner=self.pruner,
            directions=directions,
            load_if_exists=True,
        )
        n_trials = self.n_trials
        if self.storage and self.study_name:
            n_trials = remaining_trials(study, self.n_trials)
            if n_trials < self.n_trials:
                # A seeded sampler restarts its random stream in every process, so a resumed
                # study would draw its first trials' parameters again.
                self.sampler.reseed_rng()
        else:
            log.warning(
                "hydra.sweeper.storage or study_name is null: the study lives in memory, where "
                "no job can load its trial, so no trial is pruned"
            )
        log.info(
            "Optuna study %r in %s: %s sampler, %s pruner, %s",
            study.study_name,
            self.storage,
            type(self.sampler).__name__,
            type(self.pruner).__name__,
            directions,
        )
        started = time.monotonic()
        while n_trials > 0:
            if self.timeout is not None and time.monotonic() - started >= self.timeout:
                log.info(
                    "time budget of %g s spent: no more trials start (%d not run)",
                    self.timeout,
                    n_trials,
                )
                break
            batch = min(n_trials, self.n_jobs)
            trials = [study.ask() for _ in range(batch)]
            try:
                overrides = [
                    self._overrides(trial, space, fixed_params, fixed_overrides, branches)
                    for trial in trials
                ]
            except ValueError as exc:  # Optuna refuses a parameter's new range
                raise SearchError(
                    f"Optuna study {study.study_name!r}: {exc}; a study keeps its parameters' "
                    "ranges: a new hydra.sweeper.study_name starts another"
                ) from None
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            failures = self._tell(study, trials, returns, len(directions))
            if failures / len(returns) > self.max_failure_rate:
                log.error(
                    "Failed %d times out of %d with max_failure_rate=%s.",
                    failures,
                    len(returns),
                    self.max_failure_rate,
                )
                # As Hydra's sweeper: a job that raised raises here, with its own traceback (a
                # job of genre-exp's app returns NaN instead, and the sweep goes on).
                for ret in returns:
                    _ = ret.return_value
            n_trials -= batch
        self._save_results(study, len(directions))

    def _load_branches(
        self, space: dict[str, BaseDistribution], fixed_params: Mapping[str, Any]
    ) -> dict[str, dict[str, Branch]]:
        """Each ``branches`` preset's search space, read from its YAML file as Hydra finds it."""
        repository = self.hydra_context.config_loader.repository
        branches: dict[str, dict[str, Branch]] = {}
        for param, by_value in self.branch_presets.items():
            if param not in space and param not in fixed_params:
                raise SearchError(
                    f"hydra.sweeper.branches.{param}: {param} is no parameter of the search"
                )
            branches[param] = {}
            for value, preset in by_value.items():
                where = f"hydra.sweeper.branches.{param}.{value}"
                found = repository.load_config(f"{PRESETS_GROUP}/{preset}")
                if found is None:
                    raise SearchError(f"{where}: no preset {PRESETS_GROUP}/{preset}")
                params = OmegaConf.select(found.config, "hydra.sweeper.params") or {}
                branch = Branch(value, [f"{k}={v}" for k, v in params.items()])
                clash = sorted(set(branch.space) & set(space))
                if clash:
                    raise SearchError(
                        f"{where}: {', '.join(clash)} also in hydra.sweeper.params; a "
                        "parameter is either shared or one branch's"
                    )
                branches[param][value] = branch
        return branches

    def _grid_sampler(self, space: dict[str, BaseDistribution], branches: Mapping) -> None:
        """A grid sampler (``hydra/sweeper/sampler=grid``) is made here: it needs the space."""
        if branches:
            raise SearchError("hydra.sweeper.branches: a grid cannot hold per-choice parameters")
        grid = {name: self._to_grid_sampler_choices(d) for name, d in space.items()}
        self.sampler = self.sampler(grid)
        self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))

    def _overrides(
        self,
        trial: Trial,
        space: dict[str, BaseDistribution],
        fixed_params: dict[str, Any],
        fixed_overrides: list[str],
        branches: Mapping[str, Mapping[str, Branch]],
    ) -> list[str]:
        """The job's overrides: the trial's parameters (shared, then its branches'), the fixed
        ones, and the trial's identity, by which the job loads its trial to report to."""
        (overrides,) = self._configure_trials([trial], space, fixed_params, fixed_overrides)
        overrides = list(overrides)
        for param, by_value in branches.items():
            chosen = str(trial.params.get(param, fixed_params.get(param)))
            if chosen in by_value:
                overrides += by_value[chosen].overrides(trial, fixed_params)
        if self.storage and self.study_name:
            overrides += [
                f"trial.number={trial.number}",
                f"trial.study={quoted(self.study_name)}",
                f"trial.storage={quoted(str(self.storage))}",
            ]
        return overrides

    @staticmethod
    def _tell(study: optuna.Study, trials: list[Trial], returns: Sequence, n_values: int) -> int:
        """Each trial's result told to the study; returns how many failed. A job that pruned
        its trial has told the study itself."""
        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        failures = 0
        for trial, ret in zip(trials, returns, strict=True):
            if states[trial.number].is_finished():
                log.info("trial %d: %s", trial.number, states[trial.number].name)
                continue
            try:
                returned = ret.return_value
                values = [float(returned)] if n_values == 1 else [float(v) for v in returned]
            except Exception as exc:  # the job raised, or returned no number
                log.warning("trial %d failed: %s", trial.number, exc)
                values = None
            if values is None or len(values) != n_values or not all(map(math.isfinite, values)):
                study.tell(trial, state=TrialState.FAIL)
                failures += 1
            else:
                study.tell(trial, values if n_values > 1 else values[0])
        return failures

    def _save_results(self, study: optuna.Study, n_values: int) -> None:
        done = study.get_trials(deepcopy=False)
        counts = {s.name: sum(t.state == s for t in done) for s in TrialState if s.is_finished()}
        log.info("Optuna study %r: %s", study.study_name, counts)
        if not counts["COMPLETE"]:
            log.warning("no trial of the study completed: no best parameters")
            results: dict[str, Any] = {"name": "optuna", "trials": counts}
        elif n_values == 1:
            best = study.best_trial
            results = {
                "name": "optuna",
                "best_params": best.params,
                "best_value": best.value,
                "best_trial": best.number,
                "trials": counts,
            }
            log.info("Best parameters: %s", best.params)
            log.info("Best value: %s (trial %d)", best.value, best.number)
        else:
            results = {
                "name": "optuna",
                "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials],
                "trials": counts,
            }
        # A resumed study with no trial left to run launched no job, which would have made it.
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
