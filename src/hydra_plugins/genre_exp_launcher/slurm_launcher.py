"""Hydra's submitit launcher for SLURM, made to see every job of a sweep to its end
(``hydra/launcher=slurm``; the same settings as ``submitit_slurm``).

Hydra's launcher collects the jobs' results in order, so one job that ends without a result
(cancelled with ``scancel``, stopped at its time limit, killed, its node lost) raises, and the
sweep stops waiting for the jobs after it; and it learns that a job has ended from ``sacct``
polls that submitit spaces out to ten minutes. Here the sweep asks SLURM every few seconds,
waits until a job's processes are gone, and records a job that ended without a result as
failed: its MLflow run (tagged with the SLURM job id) ends FAILED with SLURM's reason, or the
job gets a FAILED run if it had none, and it returns NaN, as a failing job of genre-exp's app
does. The sweep goes on, and its parent run counts the job in ``sweep_failed``.

In the job, submitit's time-limit warning (SIGUSR2, ``signal_delay_s`` before the limit) stops the
training while there is time to close its run, FAILED with the reason, rather than leave it to
SLURM's SIGTERM at the limit and SIGKILL after ``KillWait``.

Hydra imports this module at every start to find its plugins: it stays light (submitit and
MLflow are imported where they are used).
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from genre_exp.errors import GenreExpError, first_line

log = logging.getLogger(__name__)

# The run tag (a `tags.` setting of the job) naming the SLURM job that ran the run.
SLURM_JOB_TAG = "slurm_job_id"
# How often the sweep asks SLURM about its jobs: one sacct call for all of them.
POLL_S = 5.0


class TimeLimit(GenreExpError):
    """SLURM's warning that the job's time limit is near."""


class GenreExpSlurmLauncher(SlurmLauncher):
    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        """One job, in SLURM: its run is tagged with the SLURM job id, which the sweep looks
        for if the job ends without a result."""
        import submitit

        slurm_job = submitit.JobEnvironment().job_id
        # Quoted: Hydra reads 12_3 as the integer 123.
        tagged = [*sweep_overrides, f"+tags.{SLURM_JOB_TAG}='{slurm_job}'"]
        return super().__call__(tagged, job_dir_key, job_num, job_id, singleton_state)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called in the job by submitit's handler of SIGUSR2, which SLURM sends
        ``signal_delay_s`` before the time limit. With requeues (``max_num_timeout`` above 0)
        submitit requeues the job, which starts again in a new run. Without (the default), the
        job stops here: the exception ends its run FAILED with the reason."""
        if self.params.get("max_num_timeout"):
            return super().checkpoint(*args, **kwargs)
        import submitit

        raise TimeLimit(
            f"SLURM job {submitit.JobEnvironment().job_id} is at most "
            f"hydra.launcher.signal_delay_s={self.params.get('signal_delay_s')} s from its time "
            "limit (SIGUSR2): stopped while its run can still be closed, and not requeued "
            "(hydra.launcher.max_num_timeout=0)"
        )

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        jobs = self._submit(job_overrides, initial_job_idx)
        return self._collect(jobs, job_overrides, initial_job_idx)

    def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """The jobs as one SLURM array, submitted as Hydra's launcher submits them."""
        import submitit

        assert self.config is not None
        assert len(job_overrides) > 0
        specific_init_keys = {"max_num_timeout", "python"}
        init_params = {"folder": self.params["submitit_folder"]}
        init_params |= {
            f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in specific_init_keys
        }
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in baseparams else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in specific_init_keys | {"submitit_folder"}
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append(
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
            )
        return executor.map_array(self, *zip(*job_params, strict=True))

    def _collect(
        self, jobs: list, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        """Every job's return, in order, once each has ended."""
        returns: dict[int, JobReturn] = {}
        while True:
            jobs[0].watcher.update()
            for i, job in enumerate(jobs):
                if i not in returns and _ended(job):
                    returns[i] = self._returned(job, initial_job_idx + i, job_overrides[i])
            if len(returns) == len(jobs):
                return [returns[i] for i in range(len(jobs))]
            time.sleep(POLL_S)

    def _returned(self, job, number: int, overrides: Sequence[str]) -> JobReturn:
        """The job's own return; for a job without one, NaN, once its run is recorded FAILED."""
        try:
            returned = job.results()[0]
        except Exception as exc:  # no result: cancelled, time limit, killed, node lost
            reason = f"SLURM job {job.job_id} ended {job.state} without a result"
            raised = _raised(job)
            if raised:
                reason = f"{reason}: {raised}"
            log.warning(
                "job %d: %s (%s; its log: %s)", number, reason, type(exc).__name__, job.paths.stderr
            )
            self._record(job.job_id, number, overrides, reason, lost=True)
            failed = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            failed.return_value = math.nan
            return failed
        value = returned.return_value if returned.status is JobStatus.COMPLETED else None
        if isinstance(value, float) and math.isnan(value):
            # A failed job, whose run may still be open: its tracking server was unreachable.
            reason = f"SLURM job {job.job_id} ended without closing its run"
            self._record(job.job_id, number, overrides, reason, lost=False)
        return returned

    def _record(
        self, slurm_job: str, number: int, overrides: Sequence[str], reason: str, lost: bool
    ) -> None:
        """The job's runs that were left open (or, for a job ``lost`` without a result, ended
        KILLED by its signal handler) end FAILED with ``reason``; a lost job that had no run
        gets a FAILED one. A store that cannot be reached now leaves them to the reaping of a
        later run."""
        from genre_exp.tracking import runs

        assert self.config is not None
        mlflow_cfg = self.config.mlflow
        try:
            found = runs.fail_job_runs(
                mlflow_cfg.tracking_uri,
                {SLURM_JOB_TAG: slurm_job},
                reason,
                statuses=("RUNNING", "KILLED") if lost else ("RUNNING",),
            )
            if lost and not found:
                runs.record_failed_job(
                    mlflow_cfg.tracking_uri,
                    mlflow_cfg.experiment_name,
                    f"slurm/{slurm_job}/failed/{number}",
                    reason,
                    {"hydra_overrides": " ".join(overrides) or "(none)", SLURM_JOB_TAG: slurm_job},
                )
        except Exception as exc:  # the store itself may be what failed
            log.warning("job %d: its run could not be recorded FAILED: %s", number, first_line(exc))


def _raised(job) -> str | None:
    """The last line of what a job raised outside genre-exp's app (its result file holds the
    traceback), e.g. ``TimeLimit`` before the app started; None for a job without a result."""
    from submitit.core.utils import pickle_load

    try:
        outcome, trace = pickle_load(job.paths.result_pickle)
    except Exception:  # no result file, or not one submitit wrote
        return None
    lines = str(trace).strip().splitlines()
    return lines[-1] if outcome == "error" and lines else None


def _ended(job) -> bool:
    """Whether the job has its result, or SLURM says it ended and its processes are gone (a
    cancelled job's processes may still be closing its run)."""
    if job.paths.result_pickle.exists():
        return True
    if not job.watcher.is_done(job.job_id, mode="cache"):
        return False
    try:
        listed = subprocess.run(
            ["squeue", "-h", "-j", job.job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return True
    return not listed


@dataclass
class GenreExpSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.genre_exp_launcher.slurm_launcher.GenreExpSlurmLauncher"


ConfigStore.instance().store(
    group="hydra/launcher",
    name="slurm",
    node=GenreExpSlurmConf(),
    provider="genre_exp_launcher",
)
