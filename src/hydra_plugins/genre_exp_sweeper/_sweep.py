"""The sweep of genre-exp's Optuna sweeper: Hydra's loop (ask a batch of trials, launch their
jobs with the trials' parameters as overrides, tell the results), plus resuming, several sweeps
sharing one study (heartbeats), each job told its trial, pruned trials, a time budget and
per-choice search spaces.

Imported only when a sweep starts (Hydra's plugin scan skips modules named ``_*``): it imports
Optuna.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
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
from optuna.storages import RDBStorage
from optuna.trial import Trial, TrialState

from genre_exp.errors import first_line
from genre_exp.trial import RUN_ATTR

log = logging.getLogger(__name__)

# The config group holding the presets that ``branches`` names.
PRESETS_GROUP = "hparams_search"
# The trial states that count towards n_trials; a failed trial is replaced.
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
# Sweeps opening a new database at once race to create its tables; the losers try again.
OPEN_ATTEMPTS = 5


class SearchError(CompactHydraException):
    """A search the sweeper cannot run as configured; Hydra prints its message alone."""


@contextlib.contextmanager
def quiet_heartbeats() -> Iterator[None]:
    """Optuna warns that its heartbeats are experimental and meant for ``Study.optimize``, which
    Hydra's ask-and-tell loop does not use (the heartbeat thread here stands in for its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with")
        yield


def redacted(url: str) -> str:
    """A storage URL without its password, for the log and errors."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def open_storage(url: str, heartbeat_interval: int, grace_period: int) -> RDBStorage:
    """The study's database (any SQLAlchemy URL: sqlite:///, postgresql://), with heartbeats."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    where = f"hydra.sweeper.storage={redacted(url)}"
    with contextlib.suppress(SQLAlchemyError):
        if make_url(url).password:
            log.warning(
                "%s holds a password: every job's config and MLflow params show it; keep it in "
                "~/.pgpass or $PGPASSWORD instead",
                where,
            )
    for attempt in itertools.count(1):
        try:
            with quiet_heartbeats():
                return RDBStorage(
                    url, heartbeat_interval=heartbeat_interval, grace_period=grace_period
                )
        except (IntegrityError, ProgrammingError) as exc:
            # Another sweep created the tables (or stamped their version) first: its transaction
            # won, this one was rolled back, and the next try finds the tables there.
            if attempt == OPEN_ATTEMPTS:
                raise SearchError(
                    f"{where}: cannot set up the study's tables ({first_line(exc)})"
                ) from None
            time.sleep(attempt)
        except (ImportError, SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            raise SearchError(
                f"{where}: cannot open the study's database ({first_line(exc.__cause__ or exc)})"
            ) from None


class Heartbeat:
    """While a batch's jobs run, a heartbeat of each of its trials every ``heartbeat_interval``
    seconds, from a thread: Optuna records heartbeats only inside ``Study.optimize``."""

    def __init__(self, storage: RDBStorage, trials: Sequence[Trial]) -> None:
        self.storage = storage
        self.trials = trials
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        # Before any job starts: another sweep never sees these trials without a heartbeat.
        self._record()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _beat(self) -> None:
        try:
            while not self.stopped.wait(self.storage.heartbeat_interval):
                self._record()
        finally:
            self.storage.remove_session()

    def _record(self) -> None:
        for trial in self.trials:
            try:
                self.storage.record_heartbeat(trial._trial_id)
            except Exception as exc:  # the database out of reach: the jobs go on regardless
                log.warning(
                    "trial %d: heartbeat not recorded (%s); if none is for %d s, other sweeps "
                    "mark the trial failed",
                    trial.number,
                    first_line(exc),
                    self.storage.grace_period,
                )


def heartbeat_ages(storage: RDBStorage, study_id: int) -> dict[int, tuple[int, float | None]]:
    """{trial id: (number, seconds since its last heartbeat)} of the study's RUNNING trials, by
    the database's clock (machines' clocks may differ); None for a trial with no heartbeat.
    Optuna has no public query for this: it reads Optuna's own tables."""
    import sqlalchemy.orm
    from optuna.storages._rdb import models

    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    with sqlalchemy.orm.Session(storage.engine) as session:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        rows = (
            session.query(trial.trial_id, trial.number, beat.heartbeat)
            .outerjoin(beat, beat.trial_id == trial.trial_id)
            .filter(trial.study_id == study_id, trial.state == TrialState.RUNNING)
            .all()
        )
    return {
        trial_id: (number, None if at is None else (now - at).total_seconds())
        for trial_id, number, at in rows
    }


def numbered(numbers: Sequence[int]) -> str:
    return ("trial " if len(numbers) == 1 else "trials ") + ", ".join(map(str, numbers))


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
        heartbeat_interval: int,
        grace_period: int,
    ) -> None:
        super().__init__(*args)
        self.pruner = pruner
        self.timeout = timeout
        self.branch_presets = {
            str(param): {str(value): str(preset) for value, preset in by_value.items()}
            for param, by_value in (branches or {}).items()
        }
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        # RUNNING trials with no heartbeat: when this sweep first saw each (monotonic clock).
        self.unbeaten_since: dict[int, float] = {}

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
        storage = self._open_storage()
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            directions=directions,
            load_if_exists=True,
        )
        if storage is None or not self.study_name:
            log.warning(
                "hydra.sweeper.storage or study_name is null: the study lives in memory, where "
                "no job can load its trial, so no trial is pruned"
            )
        log.info(
            "Optuna study %r in %s: %s sampler, %s pruner, %s",
            study.study_name,
            redacted(str(self.storage)) if storage else "memory",
            type(self.sampler).__name__,
            type(self.pruner).__name__,
            directions,
        )
        started = time.monotonic()
        asked: set[int] = set()
        reseeded = waiting = False
        progress = None
        while True:
            if storage is not None:
                self._fail_stale(study, storage)
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in DONE for t in trials)
            elsewhere = [t.number for t in trials if t.state == TrialState.RUNNING]
            to_run = max(0, self.n_trials - done - len(elsewhere))
            if progress != (done, elsewhere):
                progress = (done, elsewhere)
                log.info(
                    "Optuna study %r: %d of %d trials done%s; %d to run",
                    study.study_name,
                    done,
                    self.n_trials,
                    f", {len(elsewhere)} running elsewhere ({numbered(elsewhere)})"
                    if elsewhere
                    else "",
                    to_run,
                )
            if done >= self.n_trials:
                break
            if self.timeout is not None and time.monotonic() - started >= self.timeout:
                log.info(
                    "time budget of %g s spent: no more trials start (%d not run)",
                    self.timeout,
                    to_run,
                )
                break
            if not to_run:
                # Only other sweeps' trials are left: one may fail (or its sweep die), and
                # this sweep runs its replacement.
                if not waiting:
                    log.info(
                        "waiting for the trials running elsewhere to end (a trial whose sweep "
                        "died is marked failed once it has had no heartbeat for %d s)",
                        self.grace_period,
                    )
                    waiting = True
                time.sleep(self.heartbeat_interval)
                continue
            waiting = False
            if not reseeded and any(
                t.number not in asked and t.state != TrialState.WAITING for t in trials
            ):
                # A seeded sampler restarts its random stream in every process, so a resumed
                # or shared study would draw the parameters of its first trials again.
                self.sampler.reseed_rng()
                reseeded = True
            with quiet_heartbeats():
                batch = [study.ask() for _ in range(min(to_run, self.n_jobs))]
            asked.update(t.number for t in batch)
            try:
                returns = self._launch(
                    study, storage, batch, space, fixed_params, fixed_overrides, branches
                )
            except BaseException:
                self._abandon(study, batch)
                raise
            self.job_idx += len(returns)
            failures = self._tell(study, batch, returns, len(directions))
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
        self._save_results(study, len(directions))

    def _open_storage(self) -> RDBStorage | None:
        """The study's database, None for a study in memory."""
        if not self.storage:
            return None
        for name, value in (
            ("heartbeat_interval", self.heartbeat_interval),
            ("grace_period", self.grace_period),
        ):
            if value < 1:
                raise SearchError(
                    f"hydra.sweeper.{name}={value}: a whole number of seconds, at least 1, expected"
                )
        if self.grace_period < 2 * self.heartbeat_interval:
            raise SearchError(
                f"hydra.sweeper.grace_period={self.grace_period}: at least twice "
                f"hydra.sweeper.heartbeat_interval={self.heartbeat_interval} expected, so that "
                "a late heartbeat never gets a live sweep's trial marked failed"
            )
        return open_storage(str(self.storage), self.heartbeat_interval, self.grace_period)

    def _fail_stale(self, study: optuna.Study, storage: RDBStorage) -> None:
        """Marks failed the RUNNING trials whose sweep died: no heartbeat for grace_period.

        A trial that has never had a heartbeat (one of a sweep from before heartbeats, or of
        Hydra's stock sweeper) is judged from when this sweep first saw it: its start time was
        written by another machine's clock."""
        now = time.monotonic()
        study_id = storage.get_study_id_from_name(study.study_name)
        for trial_id, (number, age) in heartbeat_ages(storage, study_id).items():
            if age is None:
                age = now - self.unbeaten_since.setdefault(trial_id, now)
                why = f"no heartbeat in the {age:.0f} s since this sweep found it RUNNING"
            else:
                why = f"no heartbeat for {age:.0f} s"
            if age <= self.grace_period:
                continue
            try:
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it ended meanwhile, or another sweep failed it first
            log.warning(
                "trial %d of study %r: %s (its worker died): marked FAILED",
                number,
                study.study_name,
                why,
            )

    def _launch(
        self,
        study: optuna.Study,
        storage: RDBStorage | None,
        batch: list[Trial],
        space: dict[str, BaseDistribution],
        fixed_params: dict[str, Any],
        fixed_overrides: list[str],
        branches: Mapping[str, Mapping[str, Branch]],
    ) -> Sequence:
        """The batch's jobs, run while a heartbeat says that their trials are alive."""
        try:
            overrides = [
                self._overrides(trial, space, fixed_params, fixed_overrides, branches)
                for trial in batch
            ]
        except ValueError as exc:  # Optuna refuses a parameter's new range
            raise SearchError(
                f"Optuna study {study.study_name!r}: {exc}; a study keeps its parameters' "
                "ranges: a new hydra.sweeper.study_name starts another"
            ) from None
        with Heartbeat(storage, batch) if storage is not None else contextlib.nullcontext():
            return self.launcher.launch(overrides, initial_job_idx=self.job_idx)

    def _abandon(self, study: optuna.Study, batch: list[Trial]) -> None:
        """The batch's trials still RUNNING when the sweep stops (an interrupt, an error) are
        failed now, so that the next sweep on the study does not wait for them to go stale."""
        try:
            states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
            for trial in batch:
                if states[trial.number] == TrialState.RUNNING:
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning("trial %d marked FAILED: its sweep stopped", trial.number)
        except Exception as exc:  # the database out of reach: the trials go stale instead
            log.warning(
                "trials of the stopped batch left RUNNING (%s): marked failed after %d s "
                "without a heartbeat",
                first_line(exc),
                self.grace_period,
            )

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

    def _tell(
        self, study: optuna.Study, trials: list[Trial], returns: Sequence, n_values: int
    ) -> int:
        """Each trial's result told to the study; returns how many failed. A job that pruned
        its trial has told the study itself."""
        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        failures = 0
        for trial, ret in zip(trials, returns, strict=True):
            if states[trial.number] == TrialState.FAIL:
                log.warning(
                    "trial %d was marked FAILED by another sweep while its job ran (no "
                    "heartbeat of it reached the study for %d s): its result is dropped",
                    trial.number,
                    self.grace_period,
                )
                continue
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
            run_id = best.user_attrs.get(RUN_ATTR)
            results = {
                "name": "optuna",
                "best_params": best.params,
                "best_value": best.value,
                "best_trial": best.number,
                "best_run_id": run_id,
                "trials": counts,
            }
            log.info("Best parameters: %s", best.params)
            log.info(
                "Best value: %s (trial %d%s)",
                best.value,
                best.number,
                f", MLflow run {run_id}" if run_id else "",
            )
        else:
            results = {
                "name": "optuna",
                "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials],
                "trials": counts,
            }
        # A resumed study with no trial left to run launched no job, which would have made it.
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        path = sweep_dir / "optimization_results.yaml"
        OmegaConf.save(OmegaConf.create({"study": study.study_name, **results}), path)
        self._record_in_parent(path)

    def _record_in_parent(self, path: Path) -> None:
        """The results in the sweep's MLflow parent run (``optuna/``): they are the whole study's,
        other sweeps' trials included, where the parent's ``best_run_id`` is its own jobs' best."""
        from genre_exp.tracking.record import log_files_to_run
        from genre_exp.tracking.runs import sweep_parent

        parent = sweep_parent()
        if parent is None:
            return
        try:
            log_files_to_run(self.config.mlflow.tracking_uri, parent, [path], "optuna")
        except Exception as exc:  # the tracking store out of reach: the file and study have them
            log.warning(
                "optimization results not logged to MLflow parent run %s (%s); see %s",
                parent,
                first_line(exc),
                path,
            )
