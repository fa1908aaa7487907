"""SLURM, for real (README, "Scaling out"): a sweep with genre-exp's launcher
(``hydra/launcher=slurm``) runs as jobs of the one-node cluster with accounting that
deploy/start-services.sh starts, logging to the team tracking server; a job cancelled with
``scancel`` and one stopped at its time limit are recorded FAILED, and the sweep goes on. Skipped
where that cluster or PostgreSQL is not running."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import run_cli, tiny_overrides

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]


def accounted(job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    """The jobs' states as ``sacct`` lists them, once it lists them all as ended: the sweep has
    its results as soon as a job has written them, and the job ends, and its record reaches
    the accounting daemon, a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        states = dict(line.split("|") for line in listed.splitlines())
        ongoing = {"PENDING", "RUNNING", "COMPLETING"}
        if set(job_ids) <= set(states) and not ongoing & set(states.values()):
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(2)


def test_a_slurm_sweep_runs_as_cluster_jobs_under_one_parent(
    slurm, tracking_server, tmp_path, kaggle_csv
):
    import mlflow

    result = run_cli(
        [
            *("-m", "hydra/launcher=slurm", f"hydra.launcher.partition={slurm}"),
            *("hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"),
            "model.dropout=0.0,0.1",
            *tiny_overrides(tmp_path, *kaggle_csv),
            *("training.epochs=1", "mlflow.log_model=false", "mlflow.experiment_name=slurm"),
        ],
        env={"MLFLOW_TRACKING_URI": tracking_server.url},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name("slurm")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r != parent]
    assert sorted(c.data.params["model.dropout"] for c in children) == ["0.0", "0.1"]
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep_jobs"] == 2
    assert parent.data.metrics["sweep_failed"] == 0

    # submitit submits the sweep as one array job and keeps a folder per task, named by its id
    # (<array>_<task>), beside the array's own (<array>, the submission script).
    folders = tmp_path.glob("outputs/multirun/**/.submitit/*_*")
    jobs = sorted(p.name for p in folders if p.is_dir())
    assert len(jobs) == 2, jobs
    assert accounted(jobs) == dict.fromkeys(jobs, "COMPLETED")
    # Each run names the SLURM job that ran it.
    assert sorted(c.data.tags["slurm_job_id"] for c in children) == jobs


def slurm_jobs(root) -> list[str]:
    """The SLURM jobs of the sweep under ``root``, once submitted (``<array>_<task>``)."""
    return sorted(p.name for p in root.glob("outputs/multirun/**/.submitit/*_*") if p.is_dir())


def wait_for(what: str, ready, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (found := ready()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s")
        time.sleep(1)
    return found


def test_a_cancelled_job_and_a_job_past_its_time_limit_fail_and_the_sweep_goes_on(
    slurm, tracking_server, tmp_path, kaggle_csv
):
    """Three jobs on the cluster's 2 CPUs: job 0 trains 2 epochs and finishes; job 1 gets a
    one-minute time limit (what hydra.launcher.timeout_min=1 gives every job of a sweep), so
    SLURM warns it with submitit's SIGUSR2 (signal_delay_s=120 before the limit) at once; job 2
    (waiting for a CPU until then) is cancelled with scancel once it has logged an epoch."""
    import mlflow

    command = [
        *(sys.executable, "-m", "genre_exp"),
        *("-m", "hydra/launcher=slurm", f"hydra.launcher.partition={slurm}"),
        *("hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"),
        *tiny_overrides(tmp_path, *kaggle_csv),
        *("training.early_stopping.enabled=false", "mlflow.log_model=false"),
        *("training.epochs=2,3000,3001", "mlflow.experiment_name=slurm-faults"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_TRACKING_URI"] = tracking_server.url
    client = mlflow.MlflowClient(tracking_server.url)
    with open(tmp_path / "sweep.err", "w+") as stderr:
        sweep = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            finished, time_limited, cancelled = wait_for(
                "3 jobs submitted", lambda: len(slurm_jobs(tmp_path)) == 3 and slurm_jobs(tmp_path)
            )
            subprocess.run(
                ["scontrol", "update", f"JobId={time_limited}", "TimeLimit=1"], check=True
            )

            def logging_epochs():
                experiment = client.get_experiment_by_name("slurm-faults")
                runs = experiment and client.search_runs(
                    [experiment.experiment_id], f"tags.slurm_job_id = '{cancelled}'"
                )
                return runs and client.get_metric_history(runs[0].info.run_id, "loss")

            wait_for(f"job {cancelled} logging epochs", logging_epochs)
            # When SLURM delivers the warning depends on its own timers, so that job's end is
            # awaited first: what is timed below is only how soon the sweep sees a cancel.
            wait_for(
                f"job {time_limited} stopped by its warning",
                lambda: accounted([time_limited], timeout=0).get(time_limited) == "COMPLETED",
            )
            subprocess.run(["scancel", cancelled], check=True)
            started = time.monotonic()
            returncode = sweep.wait(timeout=300)
            took = time.monotonic() - started
        finally:
            sweep.kill()
            subprocess.run(["scancel", *slurm_jobs(tmp_path)], check=False)
        stderr.seek(0)
        log = stderr.read()
    assert returncode == 0, log[-3000:]
    assert took < 60, f"the sweep returned {took:.0f} s after the cancel"

    experiment = client.get_experiment_by_name("slurm-faults")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]

    def epochs(run) -> str:
        words = run.data.tags["hydra_overrides"].split()
        return next(w for w in words if w.startswith("training.epochs=")).split("=")[1]

    children = {epochs(r): r for r in runs if r != parent}
    assert sorted(children) == ["2", "3000", "3001"]
    assert children["2"].info.status == "FINISHED"
    # Stopped by submitit's warning, wherever the job was: its run (or, if it had none yet,
    # the FAILED run made for it) says why.
    assert children["3000"].info.status == "FAILED"
    assert "from its time limit (SIGUSR2)" in children["3000"].data.tags["error"]
    # The cancelled job's own handler ended its run KILLED with what it had logged; the sweep
    # recorded it FAILED with SLURM's reason.
    assert children["3001"].info.status == "FAILED"
    assert (
        children["3001"].data.tags["error"].startswith(f"SLURM job {cancelled} ended CANCELLED by ")
    )
    assert client.get_metric_history(children["3001"].info.run_id, "loss")
    assert f"job 2: SLURM job {cancelled} ended CANCELLED" in log

    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep_jobs"] == 3
    assert parent.data.metrics["sweep_failed"] == 2
    assert parent.data.tags["best_run_id"] == children["2"].info.run_id

    states = accounted([finished, time_limited, cancelled])
    # Job 1 stopped itself at the warning, before SLURM's limit.
    assert states[finished] == states[time_limited] == "COMPLETED"
    assert states[cancelled].startswith("CANCELLED by ")
